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

/// An agent's dedupe registry on a disk that fills: a write that does not
/// fit fails with an error naming the registry and the full disk, leaves
/// the registry as it was, and once space is freed writes go on.
#[test]
fn a_full_registry_disk_fails_cleanly_and_recovers() -> Result<()> {
    use ark_agent::registry::{Harvest, Registry};
    let tmp = tempfile::tempdir()?;
    let Some(disk) = SmallDisk::mount(&tmp.path().join("pi"), "2m") else {
        return Ok(());
    };
    let registry = Registry::open(&disk.at)?;
    let harvest = |run_id: i64| Harvest {
        blake3: blake3::hash(&run_id.to_le_bytes()).to_hex().to_string(),
        size: 1000,
        target: format!("target-{run_id}"),
        url: format!("http://origin/{}", "x".repeat(2000)),
        etag: String::new(),
        last_modified: String::new(),
        run_id,
        at_ms: run_id,
        landed_path: None,
    };
    registry.record(&harvest(0))?;
    let filler = disk.fill("filler", 0)?;
    let mut recorded = 1;
    let error = loop {
        match registry.record(&harvest(recorded)) {
            Ok(_) => recorded += 1,
            Err(e) => break e.to_string(),
        }
        ensure!(recorded < 10_000, "the registry never filled");
    };
    ensure!(
        error.contains("dedupe registry")
            && error.contains(&disk.at.join("registry.sqlite").display().to_string())
            && error.contains("the disk is full"),
        "{error}"
    );
    ensure!(
        registry.list()?.len() as i64 == recorded,
        "a failed write left a row"
    );

    // An agent starting on the full disk with no registry yet: SQLite
    // cannot create one, the session opens it once there is room.
    let fresh = disk.at.join("fresh");
    std::fs::create_dir_all(&fresh)?;
    let later = Registry::open_when_room(&fresh)?;
    let early = later.record(&harvest(0)).map(drop);
    ensure!(
        early
            .as_ref()
            .is_err_and(|e| e.to_string().contains("the disk is full")),
        "{early:?}"
    );

    std::fs::remove_file(filler)?;
    registry.record(&harvest(recorded))?;
    registry.landed(0, &harvest(0).blake3, "file/target-0/x")?;
    ensure!(registry.list()?.len() as i64 == recorded + 1);
    drop(registry);
    ensure!(integrity(&disk.at.join("registry.sqlite"))? == "ok");
    later.record(&harvest(0))?;
    ensure!(later.list()?.len() == 1);
    drop(later);
    ensure!(integrity(&fresh.join("registry.sqlite"))? == "ok");
    eprintln!("{recorded} harvests recorded before the disk was full");
    Ok(())
}

/// An agent whose data dir is a small disk is handed a harvest bigger than
/// it (its size not yet known): it refuses before writing a byte, naming
/// its staging dir and the bytes needed and free, keeps nothing, and the
/// run lands on an agent with room with no attempt counted. Then its disk
/// runs low: it says so in its telemetry (`agents`), takes no run of
/// unknown size, and takes one again once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_data_dir_is_too_small_refuses_before_writing_and_says_when_low(
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let (small, roomy) = (tmp.path().join("small"), tmp.path().join("roomy"));
    let Some(disk) = SmallDisk::mount(&small, "24m") else {
        return Ok(());
    };
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    enroll_agent(&cdata, &small, "small").await?;
    enroll_agent(&cdata, &roomy, "roomy").await?;
    let _small = spawn_agent(&small)?;
    wait_for_agents_online(&cdata, 1).await?;
    let origin = Origin::start().await?;
    let body = ark_demo::sample_bytes(40 << 20, 4);
    origin.put("big.iso", body.clone());
    add_file_target(&cdata, "big", &origin.url("big.iso")).await?;
    let id = run_of(&cdata, "big").await?;
    let back = wait_for_event(&cdata, id, "handed_back").await?;
    let staging = small.join("staging");
    ensure!(
        back.agent == "small"
            && back.message.contains(&format!(
                "the staging disk ({}) cannot hold it",
                staging.display()
            ))
            && back.message.contains("bytes free <")
            && back
                .message
                .contains(&format!("{} bytes needed", (40 << 20) + (40 << 20) / 512)),
        "{back:?}"
    );
    let kept = files_in(&staging, |_| true);
    ensure!(kept.is_empty(), "the refused run left {} files", kept.len());
    let waiting = run(&cdata, id).await?;
    ensure!(waiting.attempts == 0, "{waiting:?}");
    let mut roomy_agent = spawn_agent(&roomy)?;
    let done = wait_for_run(&cdata, id, "succeeded", SOON).await?;
    ensure!(done.agent == "roomy" && done.attempts == 0, "{done:?}");
    ensure!(archive_files(&cdata).iter().any(|(_, b)| *b == body));
    roomy_agent.kill9();

    // Its disk runs low: announced, and no run of unknown size for it.
    let filler = disk.fill("filler", 4 << 20)?;
    wait_until(SOON, "small to announce low disk", || async {
        let (ok, out, err) = commander_cli(&cdata, &["agents", "--json"])?;
        ensure!(ok, "agents: {err}");
        let agents: serde_json::Value = serde_json::from_str(&out)?;
        Ok(ok
            && agents
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["name"] == "small" && a["low_disk"] == true))
    })
    .await?;
    let (_, table, _) = commander_cli(&cdata, &["agents"])?;
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with("small") && l.contains("LOW")),
        "{table}"
    );
    origin.put("small.bin", ark_demo::sample_bytes(30_000, 5));
    add_file_target(&cdata, "later", &origin.url("small.bin")).await?;
    let later = run_of(&cdata, "later").await?;
    wait_until(SOON, "the run to wait for room", || async {
        let r = run(&cdata, later).await?;
        ensure!(r.state != "succeeded", "a low agent took it: {r:?}");
        Ok(r.reason.contains("small: low disk"))
    })
    .await?;
    std::fs::remove_file(filler)?;
    let done = wait_for_run(&cdata, later, "succeeded", SOON).await?;
    ensure!(done.agent == "small", "{done:?}");
    Ok(())
}
