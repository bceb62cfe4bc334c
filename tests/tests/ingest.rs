//! The NAS side's operation, with the real binaries: `ark-commander ingest`
//! repairs an archive a crashed commander left half-landed and changes
//! nothing on a second pass; it names a damaged version and fails; its
//! systemd units pass `systemd-analyze verify`; both binaries print shell
//! completions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use ark_demo::sample_bytes;
use ark_tests::*;

const SOON: Duration = Duration::from_secs(40);

/// Every file and directory under `root` (`.ark` included), with its size
/// and mtime: what a second pass must leave exactly as it was.
fn listing(root: &Path) -> Result<BTreeMap<PathBuf, (u64, SystemTime)>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path, (meta.len(), meta.modified()?));
        }
    }
    Ok(out)
}

/// Every row of every ledger table, as text.
fn ledger_rows(data: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let conn = rusqlite::Connection::open_with_flags(
        data.join("state.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = BTreeMap::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY rowid"))?;
        let columns = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..columns)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map(|cells| cells.join("|"))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.insert(table, rows);
    }
    Ok(out)
}

/// One value of the ledger.
fn ledger_value(data: &Path, sql: &str) -> Result<String> {
    let conn = rusqlite::Connection::open_with_flags(
        data.join("state.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    Ok(conn.query_row(sql, [], |r| {
        r.get::<_, rusqlite::types::Value>(0).map(|v| match v {
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        })
    })?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_finishes_a_landing_a_killed_commander_left_and_a_second_pass_changes_nothing(
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut commander = spawn_commander_with(
        &cdata,
        &listen,
        &[],
        &[("ARK_FAULT_CRASH_AT", "after-rename")],
    )
    .await?;
    let origin = Origin::start().await?;
    let bytes = sample_bytes(1_500_007, 5);
    origin.put("iso.bin", bytes.clone());
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let mut agent = spawn_agent(&adata)?;
    add_file_target(&cdata, "iso", &origin.url("iso.bin")).await?;
    wait_for_abort(&mut commander, "after-rename", SOON).await?;
    agent.kill9();
    // Half-landed: the file is in place, the ledger still says `landing`.
    ensure!(archive_ls(&cdata)?.is_empty(), "a version counts as landed");
    let (clean, out, _) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(!clean && out.contains("STRAY"), "{out}");

    // The NAS's nightly pass, with the commander stopped.
    let (ok, out, err) = commander_cli(&cdata, &["ingest"])?;
    ensure!(ok, "ingest failed:\n{out}{err}");
    ensure!(
        out.contains("repaired  1 (1 finished, 0 rolled back)"),
        "{out}"
    );
    let versions = archive_ls(&cdata)?;
    ensure!(
        versions.len() == 1 && versions[0]["blake3"] == blake3::hash(&bytes).to_hex().as_str(),
        "{versions:?}"
    );
    let landed = archive_files(&cdata);
    ensure!(
        landed.len() == 1 && landed[0].1 == bytes && landed[0].0 == versions[0]["path"],
        "{:?}",
        landed.iter().map(|(p, b)| (p, b.len())).collect::<Vec<_>>()
    );
    let run_state = ledger_value(
        &cdata,
        &format!("SELECT state FROM runs WHERE id = {}", versions[0]["run"]),
    )?;
    ensure!(run_state == "succeeded", "the run is {run_state}");
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "{out}{err}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cdata.join("archive/index.json"))?)?;
    let listed = &index["versions"][0];
    ensure!(
        index["versions"].as_array().map(Vec::len) == Some(1)
            && listed["path"] == versions[0]["path"]
            && listed["blake3"] == versions[0]["blake3"]
            && listed["size"] == bytes.len()
            && listed["kind"] == "file"
            && listed["target"] == "iso"
            && listed["landed_at_ms"].as_i64() > Some(0),
        "{index}"
    );

    // A second pass changes nothing: not a file, not an mtime, not a row.
    let archive = cdata.join("archive");
    let (files, rows) = (listing(&archive)?, ledger_rows(&cdata)?);
    let (ok, out, err) = commander_cli(&cdata, &["ingest", "--json"])?;
    ensure!(ok, "second ingest failed:\n{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).context("--json output")?;
    ensure!(
        report["finished"] == 0
            && report["rolled_back"] == 0
            && report["pruned"].as_array().is_some_and(Vec::is_empty)
            && report["library_written"] == false
            && report["index_written"] == false
            && report["commander_running"] == false
            && report["versions"] == 1
            && report["verify"]["bad"]
                .as_array()
                .is_some_and(Vec::is_empty),
        "{report}"
    );
    let (ok, out, err) = commander_cli(&cdata, &["ingest"])?;
    ensure!(ok, "third ingest failed:\n{out}{err}");
    ensure!(
        out.contains("repaired  0 ")
            && out.contains("pruned    0")
            && out.contains("written   nothing"),
        "{out}"
    );
    ensure!(
        listing(&archive)? == files,
        "a second pass changed the archive"
    );
    ensure!(
        ledger_rows(&cdata)? == rows,
        "a second pass changed the ledger"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_names_a_damaged_version_and_exits_non_zero() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let mut commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    let bytes = sample_bytes(300_001, 9);
    origin.put("doc.bin", bytes.clone());
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let _agent = spawn_agent(&adata)?;
    add_file_target(&cdata, "doc", &origin.url("doc.bin")).await?;
    wait_for_run(&cdata, run_of(&cdata, "doc").await?, "succeeded", SOON).await?;
    let version = archive_ls(&cdata)?
        .into_iter()
        .next()
        .context("nothing landed")?;
    let (id, path) = (
        version["id"].clone(),
        version["path"].as_str().unwrap_or("").to_string(),
    );
    let file = cdata.join("archive").join(&path);
    let mut rotten = std::fs::read(&file)?;
    rotten[123_456] ^= 0x10;
    std::fs::write(&file, &rotten)?;

    // With the commander serving: recovery is left to it, the rot is found.
    let (ok, out, err) = commander_cli(&cdata, &["ingest", "--json"])?;
    ensure!(!ok, "ingest passed a damaged archive:\n{out}");
    let report: serde_json::Value = serde_json::from_str(&out).context("--json output")?;
    let bad = &report["verify"]["bad"];
    ensure!(
        report["commander_running"] == true
            && bad.as_array().map(Vec::len) == Some(1)
            && bad[0]["version"]["path"] == path.as_str()
            && bad[0]["version"]["id"] == id
            && bad[0]["problem"]
                .as_str()
                .is_some_and(|p| p.contains("BLAKE3 on disk")),
        "{report}"
    );
    ensure!(err.contains("1 bad versions"), "{err}");

    // With it stopped, the same; a failed pass does not move the watermark,
    // so the rot is reported again until someone fixes it.
    commander.kill9();
    let (ok, out, err) = commander_cli(&cdata, &["ingest"])?;
    ensure!(!ok, "ingest passed a damaged archive:\n{out}");
    ensure!(
        out.contains(&format!("BAD   {path} (version {id} of doc)")),
        "{out}"
    );
    ensure!(err.contains("run-now"), "the error names no fix: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_applies_a_lowered_retention_once() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let mut commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let _agent = spawn_agent(&adata)?;
    origin.put("daily.bin", sample_bytes(40_000, 1));
    add_file_target(&cdata, "daily", &origin.url("daily.bin")).await?;
    wait_for_run(&cdata, run_of(&cdata, "daily").await?, "succeeded", SOON).await?;
    origin.put("daily.bin", sample_bytes(40_001, 2));
    let id = run_now(&cdata, "daily").await?;
    wait_for_run(&cdata, id, "succeeded", SOON).await?;
    commander.kill9();
    ensure!(archive_ls(&cdata)?.len() == 2);

    // The NAS keeps fewer versions from now on: the next pass prunes.
    let config = cdata.join("commander.toml");
    let text = std::fs::read_to_string(&config)? + "keep = 1\n";
    std::fs::write(&config, text)?;
    let (ok, out, err) = commander_cli(&cdata, &["ingest", "--json"])?;
    ensure!(ok, "ingest failed:\n{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(
        report["pruned"] == serde_json::json!([{"target": "daily", "versions": 1}])
            && report["versions"] == 1,
        "{report}"
    );
    let landed = archive_files(&cdata);
    ensure!(
        landed.len() == 1 && landed[0].1.len() == 40_001,
        "{:?}",
        landed.iter().map(|(p, b)| (p, b.len())).collect::<Vec<_>>()
    );
    let (files, rows) = (listing(&cdata.join("archive"))?, ledger_rows(&cdata)?);
    let (ok, out, err) = commander_cli(&cdata, &["ingest"])?;
    ensure!(ok && out.contains("pruned    0"), "{out}{err}");
    ensure!(listing(&cdata.join("archive"))? == files && ledger_rows(&cdata)? == rows);
    Ok(())
}

/// The units under `scripts/systemd`, copied with ExecStart pointing at the
/// built binary (verify wants an executable there), pass
/// `systemd-analyze verify`.
#[test]
fn the_systemd_units_pass_systemd_analyze_verify() -> Result<()> {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(analyze) = analyze else {
        println!("skipped: systemd-analyze is not installed");
        return Ok(());
    };
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/systemd");
    let commander = bin("ark-commander")?;
    let tmp = tempfile::tempdir()?;
    let mut names = Vec::new();
    for name in [
        "ark-commander.service",
        "ark-ingest.service",
        "ark-ingest.timer",
    ] {
        let text = std::fs::read_to_string(units.join(name))?;
        if name.ends_with(".service") {
            ensure!(
                text.contains("ExecStart=/usr/local/bin/ark-commander ")
                    && text.contains("NoNewPrivileges=yes")
                    && text.contains("ProtectSystem=strict")
                    && text.contains("PrivateTmp=yes"),
                "{name} is not hardened or not installed where the README says"
            );
        }
        let text = text.replace("/usr/local/bin/ark-commander", &commander.to_string_lossy());
        std::fs::write(tmp.path().join(name), text)?;
        names.push(tmp.path().join(name));
    }
    let out = Command::new(analyze).arg("verify").args(&names).output()?;
    ensure!(
        out.status.success(),
        "systemd-analyze verify failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let timer = std::fs::read_to_string(units.join("ark-ingest.timer"))?;
    ensure!(
        timer.contains("Persistent=true") && timer.contains("RandomizedDelaySec="),
        "{timer}"
    );
    Ok(())
}

#[test]
fn both_binaries_print_shell_completions() -> Result<()> {
    for (binary, words) in [
        ("ark-commander", &["ingest", "target", "archive"][..]),
        ("ark-agent", &["enroll", "run"][..]),
    ] {
        for shell in ["bash", "zsh", "fish"] {
            let out = Command::new(bin(binary)?)
                .args(["completions", shell])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            ensure!(
                out.status.success() && !text.is_empty(),
                "{binary} completions {shell}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if shell == "bash" {
                for word in words {
                    ensure!(
                        text.contains(word),
                        "{binary}'s bash completions lack {word}"
                    );
                }
            }
        }
    }
    Ok(())
}
