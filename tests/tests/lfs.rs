//! Git LFS objects of mirrored repositories (issue 12, `--lfs`), through
//! the real binaries. The upstream is a real repository whose large files
//! real git-lfs turned into pointers and stored (pushed by path, so git-lfs
//! wrote its objects into the bare repository); `git http-backend` serves
//! it, with the LFS batch API beside it (`ark_demo::lfs_origin`, whose
//! downloads need the header its batch answer hands out). The mirror lands
//! with every object under `lfs/objects/`, where a clone with real git-lfs
//! finds them; a new object is the only one fetched next run; an object the
//! server changed is refused by its SHA-256 oid and lands nowhere.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ark_agent::git::fixture::{git, Upstream};
use ark_tests::git_origin::GitHttp;
use ark_tests::*;

const SOON: Duration = Duration::from_secs(60);

/// Writes `size` pseudo-random bytes to `work/path`, commits it (git-lfs
/// turns it into a pointer) and pushes; the bytes.
fn commit_large(up: &Upstream, path: &str, size: usize, seed: u64) -> Result<Vec<u8>> {
    let mut state = seed | 1;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let file = up.work.join(path);
    std::fs::create_dir_all(file.parent().context("no parent")?)?;
    std::fs::write(&file, &bytes)?;
    git(&up.work, &["add", "-A"])?;
    git(&up.work, &["commit", "-q", "-m", &format!("add {path}")])?;
    up.push()?;
    Ok(bytes)
}

/// The SHA-256 oid git-lfs gave the file at `path` on `main` (its pointer).
fn oid_of(up: &Upstream, path: &str) -> Result<String> {
    let pointer = git(&up.bare, &["cat-file", "-p", &format!("main:{path}")])?;
    let oid = pointer
        .lines()
        .find_map(|l| l.strip_prefix("oid sha256:"))
        .with_context(|| format!("{path} is not an LFS pointer upstream: {pointer}"))?;
    Ok(oid.to_string())
}

fn store_path(root: &Path, oid: &str) -> PathBuf {
    root.join(format!("lfs/objects/{}/{}/{oid}", &oid[..2], &oid[2..4]))
}

/// The `lfs` runs, oldest first.
async fn lfs_runs(cdata: &Path) -> Result<Vec<ark_proto::RunInfo>> {
    let mut runs: Vec<_> = runs(cdata)
        .await?
        .into_iter()
        .filter(|r| r.kind == "lfs")
        .collect();
    runs.sort_by_key(|r| r.id);
    Ok(runs)
}

/// Waits until there are `n` lfs runs and none is queued or leased.
async fn lfs_runs_done(cdata: &Path, n: usize) -> Result<Vec<ark_proto::RunInfo>> {
    let what = format!("{n} lfs runs to finish");
    wait_until(SOON, &what, || async move {
        let runs = lfs_runs(cdata).await?;
        Ok(runs.len() == n
            && runs
                .iter()
                .all(|r| !matches!(r.state.as_str(), "queued" | "leased")))
    })
    .await?;
    lfs_runs(cdata).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_with_lfs_lands_every_object_beside_it_and_refuses_a_changed_one() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(&repos)?;
    let up = Upstream::populated(&repos, "up")?;
    git(&up.work, &["lfs", "install", "--local"])?;
    git(&up.work, &["lfs", "track", "*.bin"])?;
    let big = commit_large(&up, "big.bin", 300_000, 1)?;
    let nested = commit_large(&up, "assets/nested.bin", 70_000, 2)?;
    let (big_oid, nested_oid) = (oid_of(&up, "big.bin")?, oid_of(&up, "assets/nested.bin")?);
    ensure!(
        store_path(&up.bare, &big_oid).exists(),
        "git-lfs did not store the object in the bare upstream"
    );
    let http = GitHttp::start(&repos)?;
    let url = http.url("up.git");

    let (cdata, _commander, _agent) = swarm_of_one(tmp.path(), "pi").await?;

    // --lfs is for repositories only.
    let (ok, _, err) = commander_cli(&cdata, &["target", "add", "file", &url, "--lfs"])?;
    ensure!(!ok && err.contains("--lfs: only a git"), "{err}");
    let (ok, _, err) = commander_cli(
        &cdata,
        &["target", "add", "git", &url, "--name", "up", "--lfs"],
    )?;
    ensure!(ok, "target add: {err}");
    let (ok, out, err) = commander_cli(&cdata, &["target", "ls", "--json"])?;
    let listed: serde_json::Value = serde_json::from_str(&out).with_context(|| err.clone())?;
    ensure!(ok && listed[0]["lfs"] == true, "{out}{err}");

    let first = run_of(&cdata, "up").await?;
    wait_for_run(&cdata, first, "succeeded", SOON).await?;
    let event = event_of(&cdata, first, "lfs_pointers").await?;
    ensure!(
        event
            .message
            .contains("2 Git LFS pointers, 2 objects queued"),
        "{}",
        event.message
    );
    let done = lfs_runs_done(&cdata, 2).await?;
    ensure!(
        done.iter().all(|r| r.state == "succeeded"),
        "lfs runs: {done:?}"
    );
    let mirror = cdata
        .join("archive")
        .join(ark_commander::kinds::git_mirror_path(&url));
    ensure!(std::fs::read(store_path(&mirror, &big_oid))? == big);
    ensure!(std::fs::read(store_path(&mirror, &nested_oid))? == nested);
    let asked = http.requests();
    ensure!(
        asked
            .iter()
            .any(|r| r.starts_with("POST /up.git/info/lfs/objects/batch"))
            && asked
                .iter()
                .any(|r| r == &format!("GET /up.git/info/lfs/objects/{big_oid}")),
        "the agent did not go through the batch API: {asked:?}"
    );

    // Real git-lfs, cloning the landed mirror by path, finds every object
    // where Ark put them: the checkout holds the large files, not pointers.
    let clone = tmp.path().join("clone");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--no-checkout",
            &mirror.to_string_lossy(),
            &clone.to_string_lossy(),
        ],
    )?;
    git(&clone, &["lfs", "install", "--local"])?;
    git(&clone, &["checkout", "-q", "main"])?;
    git(&clone, &["lfs", "pull"])?;
    ensure!(
        std::fs::read(clone.join("big.bin"))? == big,
        "the clone's big.bin is not the large file"
    );
    ensure!(std::fs::read(clone.join("assets/nested.bin"))? == nested);
    let (ok, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(ok, "archive verify: {out}{err}");

    // A new large file: the next run fetches that object only.
    let third = commit_large(&up, "third.bin", 50_000, 3)?;
    let third_oid = oid_of(&up, "third.bin")?;
    let second = run_now(&cdata, "up").await?;
    wait_for_run(&cdata, second, "succeeded", SOON).await?;
    let event = event_of(&cdata, second, "lfs_pointers").await?;
    ensure!(
        event
            .message
            .contains("up: 1 commits read, 3 Git LFS pointers, 1 objects queued"),
        "the second scan should read only the new commit: {}",
        event.message
    );
    let done = lfs_runs_done(&cdata, 3).await?;
    ensure!(
        done[2].state == "succeeded" && done[2].url.contains(&third_oid),
        "{done:?}"
    );
    ensure!(std::fs::read(store_path(&mirror, &third_oid))? == third);

    // The server changes an object's bytes (same size): refused by its oid,
    // nothing lands at its place.
    let fourth_oid = {
        commit_large(&up, "fourth.bin", 40_000, 4)?;
        oid_of(&up, "fourth.bin")?
    };
    let stored = store_path(&up.bare, &fourth_oid);
    let mut forged = std::fs::read(&stored)?;
    forged[20_000] ^= 0x55;
    std::fs::remove_file(&stored)?;
    std::fs::write(&stored, &forged)?;
    let fourth = run_now(&cdata, "up").await?;
    wait_for_run(&cdata, fourth, "succeeded", SOON).await?;
    let forged_run = lfs_runs_done(&cdata, 4).await?.remove(3);
    ensure!(forged_run.state == "failed", "{forged_run:?}");
    ensure!(
        forged_run.reason.contains("SHA256 of the download is")
            && forged_run.reason.contains(&fourth_oid),
        "the reason should name the digest: {}",
        forged_run.reason
    );
    ensure!(
        !store_path(&mirror, &fourth_oid).exists(),
        "a changed LFS object landed"
    );
    ensure!(quarantined(&cdata).is_empty(), "{:?}", quarantined(&cdata));
    Ok(())
}
