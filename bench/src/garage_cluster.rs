//! `garage-cluster DIR`: the tests' three-node Garage cluster on loopback
//! (replication factor 3, bucket `ark`; see `tests/src/garage.rs`), for the
//! benchmark scripts: once it is healthy, `DIR/cluster.env` holds its S3
//! endpoint, key, secret, region and bucket as shell assignments, and
//! `DIR/credentials` an AWS-style credentials file. Runs until SIGTERM or
//! SIGINT, then stops every node.

use anyhow::bail;
use ark_tests::garage::Garage;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Some(dir) = std::env::args().nth(1).map(std::path::PathBuf::from) else {
        bail!("usage: garage-cluster DIR");
    };
    std::fs::create_dir_all(&dir)?;
    let garage = Garage::start(&dir.join("nodes")).await?;
    garage.credentials_file(&dir.join("credentials"))?;
    let env = format!(
        "ENDPOINT={}\nACCESS_KEY_ID={}\nSECRET_ACCESS_KEY={}\nREGION={}\nBUCKET={}\n",
        garage.endpoint(),
        garage.access_key_id,
        garage.secret_access_key,
        garage.region,
        garage.bucket
    );
    ark_core::write_atomic(&dir.join("cluster.env"), env.as_bytes(), 0o600)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(garage);
    Ok(())
}
