//! The verified upload and the landing protocol, with the real binaries:
//! a flipped byte in transit is cut at its group, the same bytes under two
//! targets are stored once, retention prunes only after a new version is
//! durable, and a commander killed at each step of landing recovers to an
//! archive that agrees with its ledger.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ark_demo::sample_bytes;
use ark_tests::*;

const SOON: Duration = Duration::from_secs(40);
const GROUP: u64 = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_flipped_in_transit_is_cut_at_its_group_and_nothing_lands() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander =
        spawn_commander_with(&cdata, "127.0.0.1:0", &["--max-attempts", "1"], &[]).await?;
    let origin = Origin::start().await?;
    let bytes = sample_bytes(300_000, 4);
    origin.put("doc.bin", bytes.clone());
    let adata = tmp.path().join("flaky");
    enroll_agent(&cdata, &adata, "flaky").await?;
    let flip_at: u64 = 100_000;
    let _agent = spawn_agent_with(&adata, &[("ARK_FAULT_FLIP_UPLOAD_BYTE", "100000")])?;
    add_file_target(&cdata, "doc", &origin.url("doc.bin")).await?;
    let id = run_of(&cdata, "doc").await?;
    let failed = wait_for_run(&cdata, id, "failed", SOON).await?;

    let group_start = flip_at / GROUP * GROUP;
    let cuts: Vec<_> = events(&cdata, id)
        .await?
        .into_iter()
        .filter(|e| e.kind == "upload_cut")
        .collect();
    ensure!(!cuts.is_empty(), "no cut recorded");
    for cut in &cuts {
        ensure!(
            cut.message
                .contains(&format!("cut at byte {group_start} of 300000"))
                && cut
                    .message
                    .contains(&format!("chunk group {}", flip_at / GROUP)),
            "cut recorded at the wrong place: {}",
            cut.message
        );
    }
    ensure!(
        failed.reason.contains("cut at byte") && failed.reason.contains("still verifies here"),
        "run reason does not say what happened: {}",
        failed.reason
    );
    ensure!(
        archive_files(&cdata).is_empty(),
        "something landed: {:?}",
        archive_files(&cdata)
    );
    ensure!(archive_ls(&cdata)?.is_empty(), "the ledger lists a version");
    // Only the verified prefix was kept for a resume.
    let data = cdata.join(format!("archive/.ark/quarantine/run-{id}.data"));
    let kept = std::fs::read(&data).with_context(|| format!("{}", data.display()))?;
    ensure!(
        kept.len() as u64 == group_start && kept[..] == bytes[..group_start as usize],
        "quarantine holds {} bytes, expected the {group_start} verified ones (first difference at {:?})",
        kept.len(),
        kept.iter().zip(&bytes).position(|(a, b)| a != b)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bytes_under_two_targets_are_stored_once_and_verify_finds_rot_in_both(
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    let bytes = sample_bytes(1_234_567, 7);
    origin.put("a/wiki.zim", bytes.clone());
    origin.put("b/mirror-of-wiki.zim", bytes.clone());
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let _agent = spawn_agent(&adata)?;
    add_file_target(&cdata, "first", &origin.url("a/wiki.zim")).await?;
    let first = run_of(&cdata, "first").await?;
    wait_for_run(&cdata, first, "succeeded", SOON).await?;
    let uploads_before = origin.log().len();
    add_file_target(&cdata, "second", &origin.url("b/mirror-of-wiki.zim")).await?;
    let second = run_of(&cdata, "second").await?;
    wait_for_run(&cdata, second, "succeeded", SOON).await?;
    let fetches = origin.log()[uploads_before..]
        .iter()
        .filter(|l| l.path.ends_with(".zim"))
        .count();
    ensure!(fetches == 1, "second target fetched {fetches} times");

    let versions = archive_ls(&cdata)?;
    ensure!(versions.len() == 2, "{versions:?}");
    let by_target = |t: &str| {
        versions
            .iter()
            .find(|v| v["target"] == t)
            .cloned()
            .with_context(|| format!("no version of {t}"))
    };
    let (a, b) = (by_target("first")?, by_target("second")?);
    ensure!(b["source"] == "link" && b["linked_from"] == a["id"], "{b}");
    let path = |v: &serde_json::Value| cdata.join("archive").join(v["path"].as_str().unwrap_or(""));
    let (ma, mb) = (std::fs::metadata(path(&a))?, std::fs::metadata(path(&b))?);
    ensure!(
        ma.ino() == mb.ino() && ma.nlink() == 2,
        "the bytes are stored twice (inodes {} and {})",
        ma.ino(),
        mb.ino()
    );
    ensure!(std::fs::read(path(&b))? == bytes);
    ensure!(path(&b).ends_with("mirror-of-wiki.zim"));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(format!(
        "{}.manifest.json",
        path(&b).display()
    ))?)?;
    ensure!(
        manifest["blake3"] == blake3::hash(&bytes).to_hex().as_str()
            && manifest["agent"] == "agent"
            && manifest["agent_signature_hex"]
                .as_str()
                .is_some_and(|s| s.len() > 100),
        "{manifest}"
    );
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "{out}{err}");

    // A byte rots on the NAS: verify names both versions sharing the bytes.
    let mut rotten = std::fs::read(path(&a))?;
    rotten[999_999] ^= 0x04;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path(&a))
        .and_then(|mut f| std::io::Write::write_all(&mut f, &rotten))?;
    std::fs::write(cdata.join("archive/file/stray.txt"), b"who put this here")?;
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(!clean, "verify passed a rotten archive: {out}");
    let bad: Vec<&str> = out.lines().filter(|l| l.starts_with("BAD")).collect();
    ensure!(
        bad.len() == 2 && bad.iter().all(|l| l.contains("BLAKE3 on disk")),
        "{out}"
    );
    ensure!(out.contains("STRAY file/stray.txt"), "{out}");
    ensure!(err.contains("run-now"), "the error names no fix: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_versions_and_prunes_the_rest() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let _agent = spawn_agent(&adata)?;
    let version = |i: u8| sample_bytes(70_000 + usize::from(i), i);
    origin.put("daily.bin", version(0));
    add_file_target_keeping(&cdata, "daily", &origin.url("daily.bin"), 2).await?;
    let id = run_of(&cdata, "daily").await?;
    wait_for_run(&cdata, id, "succeeded", SOON).await?;
    for i in 1..=3 {
        origin.put("daily.bin", version(i));
        let id = run_now(&cdata, "daily").await?;
        wait_for_run(&cdata, id, "succeeded", SOON).await?;
    }
    let landed = archive_files(&cdata);
    let mut sizes: Vec<usize> = landed.iter().map(|(_, b)| b.len()).collect();
    sizes.sort();
    ensure!(sizes == vec![70_002, 70_003], "kept {sizes:?}");
    let versions = archive_ls(&cdata)?;
    ensure!(versions.len() == 2, "{versions:?}");
    // Pruned versions leave no directory behind.
    let dirs = std::fs::read_dir(cdata.join("archive/file/daily"))?.count();
    ensure!(dirs == 2, "{dirs} version dirs for 2 kept versions");
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "{out}{err}");
    Ok(())
}

/// Kills the commander (abort, as `kill -9` would) at `step` of landing,
/// restarts it, and checks that the run completes and that the archive and
/// the ledger agree.
async fn crash_at(step: &str) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut commander =
        spawn_commander_with(&cdata, &listen, &[], &[("ARK_FAULT_CRASH_AT", step)]).await?;
    let origin = Origin::start().await?;
    let bytes = sample_bytes(2_000_003, 3);
    origin.put("iso.bin", bytes.clone());
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let _agent = spawn_agent(&adata)?;
    add_file_target(&cdata, "iso", &origin.url("iso.bin")).await?;
    wait_for_abort(&mut commander, step, SOON).await?;
    let _commander = spawn_commander(&cdata, &listen).await?;
    let id = run_of(&cdata, "iso").await?;
    let done = wait_for_run(&cdata, id, "succeeded", SOON).await?;
    ensure!(done.blake3 == blake3::hash(&bytes).to_hex().as_str());
    wait_until(SOON, "the agent to drop its staging copy", || {
        let empty = staged_files(&adata).is_empty();
        async move { Ok(empty) }
    })
    .await?;
    let landed = archive_files(&cdata);
    ensure!(
        landed.len() == 1 && landed[0].1 == bytes,
        "after a crash at {step}: {:?}",
        landed.iter().map(|(p, b)| (p, b.len())).collect::<Vec<_>>()
    );
    let versions = archive_ls(&cdata)?;
    ensure!(
        versions.len() == 1 && landed[0].0 == versions[0]["path"].as_str().unwrap_or(""),
        "ledger and archive disagree after a crash at {step}: {versions:?}"
    );
    ensure!(
        quarantined(&cdata).is_empty(),
        "quarantine not cleaned after a crash at {step}: {:?}",
        quarantined(&cdata)
    );
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "after a crash at {step}: {out}{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commander_killed_before_the_rename_rolls_back_and_lands_on_retry() -> Result<()> {
    crash_at("before-rename").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commander_killed_after_the_rename_finishes_the_landing_on_restart() -> Result<()> {
    crash_at("after-rename").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commander_killed_after_the_ledger_keeps_the_landed_version() -> Result<()> {
    crash_at("after-ledger").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_the_origin_publishes_are_checked_and_their_absence_recorded() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander =
        spawn_commander_with(&cdata, "127.0.0.1:0", &["--max-attempts", "1"], &[]).await?;
    let origin = Origin::start().await?;
    let good = sample_bytes(300_001, 1);
    let sha256 = |b: &[u8]| {
        ring::digest::digest(&ring::digest::SHA256, b)
            .as_ref()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    origin.put("iso/good.bin", good.clone());
    origin.put(
        "iso/good.bin.sha256",
        format!("{}  good.bin\n", sha256(&good)).into_bytes(),
    );
    let meta = sample_bytes(200_003, 2);
    origin.put("iso/meta.bin", meta.clone());
    origin.put(
        "iso/meta.bin.meta4",
        format!(
            "<?xml version=\"1.0\"?><metalink xmlns=\"urn:ietf:params:xml:ns:metalink\"><file name=\"meta.bin\">\
             <size>{}</size><hash type=\"sha-256\">{}</hash></file></metalink>",
            meta.len(),
            sha256(&meta)
        )
        .into_bytes(),
    );
    origin.put("iso/bad.bin", sample_bytes(100_000, 3));
    origin.put(
        "iso/bad.bin.md5",
        format!("{}  bad.bin\n", "0".repeat(32)).into_bytes(),
    );
    origin.put("iso/plain.bin", sample_bytes(50_000, 4));
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let _agent = spawn_agent(&adata)?;
    for name in ["good", "meta", "bad", "plain"] {
        add_file_target(&cdata, name, &origin.url(&format!("iso/{name}.bin"))).await?;
    }
    for name in ["good", "meta", "plain"] {
        wait_for_run(&cdata, run_of(&cdata, name).await?, "succeeded", SOON).await?;
    }
    let bad = wait_for_run(&cdata, run_of(&cdata, "bad").await?, "failed", SOON).await?;
    ensure!(
        bad.reason.contains("MD5") && bad.reason.contains("bad.bin.md5"),
        "{}",
        bad.reason
    );
    let manifest = |target: &str| -> Result<serde_json::Value> {
        let v = archive_ls(&cdata)?
            .into_iter()
            .find(|v| v["target"] == target)
            .with_context(|| format!("{target} did not land"))?;
        let path = format!(
            "{}.manifest.json",
            v["absolute_path"].as_str().unwrap_or("")
        );
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    };
    let m = manifest("good")?;
    ensure!(
        m["agent_manifest"]["digests"]["sha256"] == sha256(&good).as_str()
            && m["agent_manifest"]["digest_source"]
                .as_str()
                .is_some_and(|s| s.ends_with("good.bin.sha256")),
        "{m}"
    );
    let m = manifest("meta")?;
    ensure!(
        m["agent_manifest"]["digests"]["sha256"] == sha256(&meta).as_str(),
        "{m}"
    );
    let m = manifest("plain")?;
    ensure!(
        m["agent_manifest"]["digest_source"] == "none published"
            && m["agent_manifest"]["digests"]
                .as_object()
                .is_some_and(|d| d.is_empty()),
        "{m}"
    );
    ensure!(archive_files(&cdata).len() == 3);
    Ok(())
}
