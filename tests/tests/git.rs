//! The git kind through the real binaries, against real servers (`git
//! http-backend` over smart HTTP, `git daemon`): the first run lands a
//! clonable mirror that `git fsck --full` finds clean; an unchanged upstream
//! costs a ref advertisement and ends `unchanged`; a force-push and a
//! deleted branch are recorded and the old tips kept; an empty repository
//! and a corrupt pack from a hostile origin are handled with a reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ark_agent::git::fixture::{self, git, ls_remote, Upstream};
use ark_agent::git::Refs;
use ark_tests::git_origin::{GitDaemon, GitHttp};
use ark_tests::*;

const SOON: Duration = Duration::from_secs(60);

/// The landed mirror of the repository served at `url`.
fn mirror_of(cdata: &Path, url: &str) -> PathBuf {
    cdata
        .join("archive")
        .join(ark_commander::kinds::git_mirror_path(url))
}

/// The mirror's refs from upstream (the commander's own `refs/ark/` aside).
fn upstream_refs_of(mirror: &Path) -> Result<Refs> {
    Ok(ls_remote(mirror)?
        .into_iter()
        .filter(|(name, _)| !name.starts_with("refs/ark/"))
        .collect())
}

/// `git fsck --full` on the mirror, and a clone from it that checks out.
fn fsck_and_clone(mirror: &Path, scratch: &Path) -> Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let clone = fixture::fsck_and_clone(mirror, &scratch.join(format!("clone-{nanos}")))?;
    ensure!(
        clone.join("README").exists(),
        "the clone has no checked-out README"
    );
    Ok(())
}

/// Queues a run of `target` and waits for it to reach `state`; its id.
async fn run_to(cdata: &Path, target: &str, state: &str) -> Result<i64> {
    let id = run_now(cdata, target).await?;
    wait_for_run(cdata, id, state, SOON).await?;
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_over_smart_http_lands_follows_force_pushes_and_deletions() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(&repos)?;
    let up = Upstream::populated(&repos, "up")?;
    git(&up.work, &["checkout", "-q", "-b", "topic"])?;
    up.commit("topic.txt", "topic\n")?;
    git(&up.work, &["checkout", "-q", "main"])?;
    up.push()?;
    let http = GitHttp::start(&repos)?;
    let url = http.url("up.git");

    let (cdata, _commander, _agent) = swarm_of_one(tmp.path(), "pi").await?;
    add_target(&cdata, "git", "up", &url, 0).await?;
    let first = run_of(&cdata, "up").await?;
    wait_for_run(&cdata, first, "succeeded", SOON).await?;

    let mirror = mirror_of(&cdata, &url);
    ensure!(
        mirror.ends_with(format!("git/127.0.0.1_{}/up.git", http.addr.port())),
        "{}",
        mirror.display()
    );
    ensure!(
        upstream_refs_of(&mirror)? == up.refs()?,
        "the mirror's refs differ from upstream's"
    );
    fsck_and_clone(&mirror, tmp.path())?;
    let (ok, stdout, stderr) = commander_cli(&cdata, &["check", "git", &mirror.to_string_lossy()])?;
    ensure!(ok && stdout.starts_with("ok "), "{stdout}{stderr}");

    // Unchanged upstream: the ref listing only (protocol v2: the capability
    // advertisement and one ls-refs), no fetch, and the run is `unchanged`.
    let before = http.requests().len();
    run_to(&cdata, "up", "unchanged").await?;
    let asked = http.requests()[before..].to_vec();
    ensure!(
        !asked.is_empty() && asked.len() <= 2,
        "an unchanged upstream should cost the ref listing only: {asked:?}"
    );

    // A new commit on main and a rewritten `feature` (a force-push).
    let old_feature = up.refs()?["refs/heads/feature"].clone();
    up.commit("more.txt", "more\n")?;
    up.rewrite("feature")?;
    up.push()?;
    let forced = run_to(&cdata, "up", "succeeded").await?;
    let event = event_of(&cdata, forced, "git_force_push").await?;
    ensure!(
        event.message.contains("1 forced (refs/heads/feature)"),
        "{}",
        event.message
    );
    ensure!(upstream_refs_of(&mirror)? == up.refs()?);
    let kept = ls_remote(&mirror)?
        .into_iter()
        .find(|(name, _)| {
            name.starts_with("refs/ark/previous/") && name.ends_with("/heads/feature")
        })
        .context("the old feature tip is not kept")?;
    ensure!(kept.1 == old_feature, "kept {kept:?}, was {old_feature}");
    fsck_and_clone(&mirror, tmp.path())?;

    // A branch deleted upstream is deleted in the mirror, its tip kept.
    up.delete_branch("topic")?;
    up.push()?;
    let deleted = run_to(&cdata, "up", "succeeded").await?;
    let refs = upstream_refs_of(&mirror)?;
    ensure!(!refs.contains_key("refs/heads/topic") && refs == up.refs()?);
    let said = events(&cdata, deleted).await?;
    ensure!(
        said.iter()
            .any(|e| e.message.contains("1 deleted (refs/heads/topic)")),
        "{said:?}"
    );
    fsck_and_clone(&mirror, tmp.path())?;

    let (clean, stdout, stderr) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "archive verify: {stdout}{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_repository_over_git_daemon_then_its_first_commits() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(&repos)?;
    let up = Upstream::empty(&repos, "blank")?;
    let daemon = GitDaemon::start(&repos)?;
    let url = daemon.url("blank.git");
    ensure!(url.starts_with("git://127.0.0.1:"), "{url}");

    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let adata = tmp.path().join("laptop");
    enroll_agent(&cdata, &adata, "laptop").await?;
    let _agent = spawn_agent(&adata)?;
    add_target(&cdata, "git", "blank", &url, 0).await?;
    let first = run_of(&cdata, "blank").await?;
    // Nothing upstream and nothing in the archive: unchanged, nothing lands.
    wait_for_run(&cdata, first, "unchanged", SOON).await?;
    ensure!(archive_files(&cdata).is_empty());

    up.commit("README", "first\n")?;
    up.push()?;
    run_to(&cdata, "blank", "succeeded").await?;
    let mirror = mirror_of(&cdata, &url);
    ensure!(upstream_refs_of(&mirror)? == up.refs()?);
    fsck_and_clone(&mirror, tmp.path())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_pack_from_a_hostile_origin_fails_the_run_and_lands_nothing() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(&repos)?;
    Upstream::populated(&repos, "up")?;
    let hostile = GitHttp::start_corrupting(&repos, 200)?;

    let cdata = tmp.path().join("commander");
    let _commander =
        spawn_commander_with(&cdata, "127.0.0.1:0", &["--max-attempts", "1"], &[]).await?;
    let adata = tmp.path().join("pi");
    enroll_agent(&cdata, &adata, "pi").await?;
    let _agent = spawn_agent(&adata)?;
    add_target(&cdata, "git", "up", &hostile.url("up.git"), 0).await?;
    let id = run_of(&cdata, "up").await?;
    let failed = wait_for_run(&cdata, id, "failed", SOON).await?;
    ensure!(
        failed.reason.contains(&hostile.url("up.git")) && failed.reason.contains("pack"),
        "the reason should name the repository and what failed: {:?}",
        failed.reason
    );
    ensure!(
        archive_files(&cdata).is_empty(),
        "{:?}",
        archive_files(&cdata)
    );
    Ok(())
}

/// `count` lightweight tags on `main` in the repository `repo`, made in
/// one `git update-ref --stdin` and packed (as a host with many refs has
/// them).
fn many_tags(repo: &Path, count: usize) -> Result<()> {
    use std::io::Write;
    let main = git(repo, &["rev-parse", "refs/heads/main"])?;
    let mut child = std::process::Command::new("git")
        .args(["update-ref", "--stdin"])
        .current_dir(repo)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("git's stdin")?;
    for i in 0..count {
        writeln!(stdin, "create refs/tags/many/t{i:06} {}", main.trim())?;
    }
    drop(stdin);
    ensure!(child.wait()?.success(), "git update-ref --stdin failed");
    git(repo, &["pack-refs", "--all"])?;
    Ok(())
}

/// The `lease_bytes` of every lease the agent's log says it received.
fn lease_sizes(log: &str) -> Vec<usize> {
    log.lines()
        .filter(|line| line.contains("lease received"))
        .filter_map(|line| {
            let at = line.find("lease_bytes")? + "lease_bytes".len();
            let digits: String = line[at..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// Issue 14: a repository with 20,000 refs does not make every lease 20,000
/// refs long. The lease names the commander's ref set by digest; an
/// unchanged upstream ends `unchanged` on the digest alone; a change sends
/// a bundle of only what is new, against the agent's own mirror's refs when
/// their digest matches, else against the refs it asks the commander for
/// (`KnownRefs`, as an agent without this mirror must).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_refs_go_by_digest_in_the_lease_and_whole_only_on_demand() -> Result<()> {
    const REFS: usize = 20_000;
    /// Incompressible, so a bundle that resends it is plainly larger than
    /// one that does not (whose header alone lists every ref, ~1.3 MB).
    const NOISE: usize = 4 << 20;
    let tmp = tempfile::tempdir()?;
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(&repos)?;
    let up = Upstream::populated(&repos, "up")?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..NOISE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(up.work.join("noise.bin"), &noise)?;
    up.commit("README", "with noise\n")?;
    // In the work clone, whose pushes prune what it lacks.
    many_tags(&up.work, REFS)?;
    up.push()?;
    let started = std::time::Instant::now();
    let http = GitHttp::start(&repos)?;
    let url = http.url("up.git");

    let (cdata, _commander, agent) = swarm_of_one(tmp.path(), "pi").await?;
    let adata = tmp.path().join("pi");
    add_target(&cdata, "git", "up", &url, 0).await?;
    let first = run_of(&cdata, "up").await?;
    wait_for_run(&cdata, first, "succeeded", SOON).await?;
    let mirror = mirror_of(&cdata, &url);
    ensure!(upstream_refs_of(&mirror)? == up.refs()?);
    ensure!(up.refs()?.len() > REFS);
    eprintln!("first run landed at {:?}", started.elapsed());

    // Unchanged: the digest is all the agent needs.
    run_to(&cdata, "up", "unchanged").await?;
    eprintln!("unchanged at {:?}", started.elapsed());

    // A new commit: the agent's own mirror held the commander's refs.
    up.commit("more.txt", "more\n")?;
    up.push()?;
    let own = run_to(&cdata, "up", "succeeded").await?;
    let own = run(&cdata, own).await?;
    ensure!(upstream_refs_of(&mirror)? == up.refs()?);
    ensure!(
        !agent.log_text().contains("known refs asked for"),
        "the agent asked for refs its own mirror held"
    );

    // Without its mirror (as another agent would be), it asks for the refs
    // and still sends only what is new.
    std::fs::remove_dir_all(adata.join(ark_agent::git::MIRRORS_DIR))?;
    up.commit("more.txt", "more still\n")?;
    up.push()?;
    let asked = run_to(&cdata, "up", "succeeded").await?;
    let asked = run(&cdata, asked).await?;
    ensure!(upstream_refs_of(&mirror)? == up.refs()?);
    let log = agent.log_text();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("bundle written") || l.contains("known refs"))
        .collect();
    ensure!(
        log.matches("known refs asked for").count() == 1,
        "the agent should have asked for the refs once: {said:#?}"
    );
    for bundle in [&own, &asked] {
        ensure!(
            bundle.size_bytes < NOISE as u64,
            "run {}: a bundle of {} bytes resent what the commander had",
            bundle.id,
            bundle.size_bytes
        );
    }
    fsck_and_clone(&mirror, tmp.path())?;

    let sizes = lease_sizes(&log);
    ensure!(sizes.len() >= 4, "leases logged: {sizes:?}");
    let largest = sizes.iter().max().copied().unwrap_or_default();
    ensure!(
        largest < 2048,
        "a lease of {largest} bytes for a mirror of {REFS} refs: {sizes:?}"
    );
    eprintln!(
        "leases {sizes:?} bytes; bundles {} and {} bytes for one new commit",
        own.size_bytes, asked.size_bytes
    );
    Ok(())
}
