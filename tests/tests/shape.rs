//! The shape of the kinds (issue 10), tested: the `echo` test kind lives
//! only in `agent/src/harvest/echo.rs` and `commander/src/kinds/echo.rs`
//! plus one line in each side's `match` (and its name in `ark_core::Kind`),
//! and the existing pipeline harvests it end to end: leased, fetched with
//! its streaming check, delivered, checked again and landed — and refused
//! with its own reason when the body is not one.

use std::time::Duration;

use anyhow::{ensure, Result};
use ark_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_added_in_its_two_modules_is_harvested_end_to_end() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (cdata, _commander, _agent) = swarm_of_one(tmp.path(), "pi").await?;
    let origin = Origin::start().await?;
    let body = b"ECHO: the shape holds\n".repeat(2000);
    origin.put("note.echo", body.clone());
    origin.put("bad.echo", b"NOPE: not an echo body".to_vec());
    add_target(&cdata, "echo", "note", &origin.url("note.echo"), 0).await?;
    add_target(&cdata, "echo", "bad", &origin.url("bad.echo"), 0).await?;
    let good = run_of(&cdata, "note").await?;
    let landed = wait_for_run(&cdata, good, "succeeded", Duration::from_secs(30)).await?;
    ensure!(landed.kind == "echo", "{landed:?}");
    let files = archive_files(&cdata);
    let (path, bytes) = files
        .iter()
        .find(|(p, _)| p.ends_with("note.echo"))
        .ok_or_else(|| anyhow::anyhow!("nothing landed: {files:?}"))?;
    ensure!(path.starts_with("echo/note/"), "landed at {path}");
    ensure!(bytes == &body, "the landed bytes differ");
    let bad = run_of(&cdata, "bad").await?;
    let refused = wait_for_run(&cdata, bad, "failed", Duration::from_secs(30)).await?;
    ensure!(
        refused.reason.contains("echo body starts with"),
        "{}",
        refused.reason
    );
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "{out}{err}");
    Ok(())
}
