//! Full disks (issue 15) beyond the archive's own (see hostile.rs for
//! that): the commander's state database on a disk that fills, an agent's
//! dedupe registry on one, and an agent whose data dir is too small for a
//! harvest. Each runs on a real tmpfs (root only; skipped with the reason
//! printed elsewhere), filled by a file the test then deletes.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use ark_tests::*;

const SOON: Duration = Duration::from_secs(40);

/// `PRAGMA integrity_check` of a database file, through sqlite3's own
/// reading of it.
fn integrity(db: &Path) -> Result<String> {
    let conn = rusqlite::Connection::open(db)?;
    Ok(conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
}

/// The commander's state database (the ledger) on a disk that fills while
/// runs are on their way: what cannot be written is refused with an error
/// that names the database and says the disk is full, no run fails for it,
/// nothing is half-landed, the database stays intact, and once space is
/// freed every run lands by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ledger_disk_refuses_cleanly_and_every_run_lands_once_freed() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let Some(disk) = SmallDisk::mount(&cdata, "16m") else {
        return Ok(());
    };
    let archive = tmp.path().join("archive");
    write_commander_config_with(&cdata, &format!("archive = \"{}\"\n", archive.display()))?;
    let _commander = start_commander(&cdata, "127.0.0.1:0", &[], &[]).await?;
    let adata = tmp.path().join("pi");
    enroll_agent(&cdata, &adata, "pi").await?;
    let _agent = spawn_agent(&adata)?;
    let origin = Origin::start().await?;
    origin.put("first.bin", ark_demo::sample_bytes(40_000, 1));
    add_file_target(&cdata, "first", &origin.url("first.bin")).await?;
    wait_for_run(&cdata, run_of(&cdata, "first").await?, "succeeded", SOON).await?;

    // Three runs on their way (3 s each at the cap) when the disk fills.
    let mut ids = Vec::new();
    for n in 0..3u8 {
        let name = format!("t{n}");
        origin.put(&format!("{name}.bin"), ark_demo::sample_bytes(300_000, n));
        let capped = ark_proto::AddTargetRequest {
            bandwidth_cap: 100_000,
            ..file_target(&name, &origin.url(&format!("{name}.bin")))
        };
        add_target_with(&cdata, capped).await?;
        ids.push(run_of(&cdata, &name).await?);
    }
    wait_until(SOON, "a run to be on its way", || async {
        Ok(run(&cdata, ids[0]).await?.bytes_done > 0)
    })
    .await?;
    let filler = disk.fill("filler", 0)?;
    origin.put("late.bin", ark_demo::sample_bytes(20_000, 9));
    let refusal = admin(&cdata)?
        .add_target(file_target("late", &origin.url("late.bin")))
        .await
        .err();
    let refusal = refusal.ok_or_else(|| anyhow::anyhow!("a full ledger took a target"))?;
    ensure!(
        refusal.code() == tonic::Code::ResourceExhausted
            && refusal.message().contains("state database")
            && refusal.message().contains("state.sqlite")
            && refusal.message().contains("the disk is full"),
        "{refusal:?}"
    );

    // Full while the harvests finish and ask to land: nothing fails.
    let full_until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < full_until {
        for id in &ids {
            let r = run(&cdata, *id).await?;
            ensure!(r.state != "failed", "a full ledger failed a run: {r:?}");
            ensure!(r.state != "succeeded", "landed on a full ledger?: {r:?}");
        }
        tokio::time::sleep(TEST_HEARTBEAT).await;
    }
    std::fs::remove_file(&filler)?;
    for id in &ids {
        wait_for_run(&cdata, *id, "succeeded", SOON).await?;
    }
    add_file_target(&cdata, "late", &origin.url("late.bin")).await?;
    wait_for_run(&cdata, run_of(&cdata, "late").await?, "succeeded", SOON).await?;
    // Each landed once, and the archive and the ledger agree.
    let landed = archive_ls(&cdata)?;
    ensure!(landed.len() == 5, "{} versions for 5 targets", landed.len());
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "{out}{err}");
    ensure!(
        integrity(&cdata.join("state.sqlite"))? == "ok",
        "the database"
    );
    let held = files_in(&archive.join(".ark/quarantine"), |_| true);
    ensure!(held.is_empty(), "quarantine leaked {} files", held.len());
    Ok(())
}
