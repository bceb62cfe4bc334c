//! `ark-demo --once`, the README's first command, through the real
//! binary: it harvests a file, a ZIM made by zimwriterfs, a podcast feed with
//! its enclosures and a Git repository over smart HTTP, and leaves an
//! archive that `archive verify` finds clean, with a mirror `git clone`
//! works from.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use ark_agent::git::fixture::fsck_and_clone;
use ark_tests::*;

#[test]
fn demo_once_leaves_a_verified_archive_of_every_kind() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("ark-demo");
    let out = Command::new(bin("ark-demo")?)
        .args(["--once", "--agents", "2", "--dir"])
        .arg(&dir)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "demo failed: {stdout}{stderr}");
    ensure!(
        !stdout.contains("skipped"),
        "this machine has zim-tools and git: nothing may be skipped: {stdout}"
    );
    ensure!(
        stdout.contains("harvested, verified and landed in"),
        "{stdout}"
    );
    for kind in [
        "file welcome",
        "zim handbook",
        "rss ark-radio",
        "git notes",
        "media ark-radio",
    ] {
        ensure!(stdout.contains(kind), "summary lacks {kind}: {stdout}");
    }

    let archive = dir.join("archive");
    let files: Vec<String> = ark_commander::archive::walk_files(&archive)
        .iter()
        .map(|p| p.strip_prefix(&archive).unwrap_or(p).display().to_string())
        .collect();
    let count = |prefix: &str, suffix: &str| {
        files
            .iter()
            .filter(|f| f.starts_with(prefix) && f.ends_with(suffix))
            .count()
    };
    ensure!(count("zim/handbook/", ".zim") == 1, "{files:?}");
    ensure!(count("zim/library.xml", "") == 1, "{files:?}");
    ensure!(count("rss/ark-radio/entries/", ".json") == 2, "{files:?}");
    ensure!(count("rss/ark-radio/media/", ".mp3") == 2, "{files:?}");
    let mirror = std::fs::read_dir(archive.join("git"))?
        .flatten()
        .next()
        .context("no git host dir")?
        .path()
        .join("notes.git");
    let clone = fsck_and_clone(&mirror, &tmp.path().join("notes")).context("the landed mirror")?;
    ensure!(clone.join("README").exists(), "the clone has no README");

    let (clean, report, err) = commander_cli(&dir.join("commander"), &["archive", "verify"])?;
    ensure!(clean, "archive verify: {report}{err}");
    ensure!(report.contains("0 bad, 0 stray files"), "{report}");
    Ok(())
}
