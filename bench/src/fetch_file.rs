//! `fetch-file URL DEST`: the agent's fetch path on its own — streaming
//! HTTP into DEST through the ingest pipeline (the BLAKE3 tree hasher and
//! its outboard, the writer and the syncer on their own threads), durable
//! checkpoints, default limits, data and outboard fsynced at the end — then
//! prints the root, the wall time and the process's peak RSS, for
//! comparison with `curl -o` and `curl -o` + `sync FILE` in bench/ingest.sh.

use std::time::Instant;

use anyhow::{bail, Context};
use ark_agent::fetch::{fetch, Fetched, Limits, Progress, Sinks, Validators};
use ark_agent::jobs::Throttle;
use ark_agent::telemetry::ByteCounter;

/// Peak resident set (VmHWM) of this process, KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(dest)) = (args.next(), args.next()) else {
        bail!("usage: fetch-file URL DEST");
    };
    ark_agent::link::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let fetched = runtime.block_on(async {
        let http = ark_agent::fetch::http_client()?;
        let (throttle, progress, counter) = (
            Throttle::new(0),
            Progress::default(),
            ByteCounter::default(),
        );
        let sinks = Sinks {
            throttle: &throttle,
            run_throttle: None,
            progress: &progress,
            counter: &counter,
            self_yield: None,
        };
        let dest = std::path::PathBuf::from(&dest);
        fetch(
            &http,
            &url,
            &dest,
            &Validators::default(),
            // nginx listens on loopback: allowed explicitly, as every test does.
            &Limits {
                guard: ark_agent::destination::Guard::allowing(&["127.0.0.0/8"]),
                ..Limits::default()
            },
            sinks,
        )
        .await
        .with_context(|| format!("fetching {url}"))
    })?;
    let Fetched::Body { root, size, .. } = fetched else {
        bail!("the origin answered 304 to an unconditional request");
    };
    println!(
        "{} {size} {:.3} {}",
        root.to_hex(),
        started.elapsed().as_secs_f64(),
        peak_rss_kib()
    );
    Ok(())
}
