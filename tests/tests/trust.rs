//! Zero trust (issue 11) against the real binaries: a lying agent (a debug
//! agent with `ARK_FAULT_FORGE_BODY`, which replaces every body with
//! well-formed forged bytes and signs them properly) is outvoted by a
//! quorum and marked suspect; an origin that changes between two honest
//! fetches is retried, not disputed; a revoked agent is cut off.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ark_agent::git::fixture::{git, ls_remote, Upstream};
use ark_tests::git_origin::GitHttp;
use ark_tests::*;

const FORGE: &str = "ARK_FAULT_FORGE_BODY";

fn quorum_target(name: &str, kind: &str, url: &str, quorum: &str) -> ark_proto::AddTargetRequest {
    ark_proto::AddTargetRequest {
        kind: kind.into(),
        url: url.into(),
        name: name.into(),
        quorum: quorum.into(),
        ..Default::default()
    }
}

async fn agent_named(cdata: &Path, name: &str) -> Result<ark_proto::AgentInfo> {
    agents(cdata)
        .await?
        .into_iter()
        .find(|a| a.name == name)
        .with_context(|| format!("no agent {name}"))
}

/// The runs of `target`'s quorum group (the group's first run and the rest).
async fn group_runs(cdata: &Path, target: &str) -> Result<Vec<ark_proto::RunInfo>> {
    Ok(runs(cdata)
        .await?
        .into_iter()
        .filter(|r| r.target == target && r.quorum_group != 0)
        .collect())
}

/// Waits until a run of `target`'s quorum group is in `state`.
async fn wait_for_group_state(
    cdata: &Path,
    target: &str,
    state: &str,
    timeout: Duration,
) -> Result<()> {
    let what = format!("a run of {target}'s quorum group to be {state}");
    wait_until(timeout, &what, || async move {
        Ok(group_runs(cdata, target)
            .await?
            .iter()
            .any(|r| r.state == state))
    })
    .await
}

/// A swarm where a liar and an honest agent harvest a quorum-2 target and
/// a second honest agent is held back for the tie-break.
struct Outvoted {
    cdata: std::path::PathBuf,
    procs: Vec<Proc>,
}

/// What a liar is outvoted on: the target's kind and URL, the forged bytes
/// it signs instead of what it fetched, and what names each side's vote in
/// the dispute's reason.
struct Forgery<'a> {
    kind: &'a str,
    url: String,
    forged: Vec<u8>,
    /// Text the dispute must name for (honest, forged).
    named: (String, String),
    /// The root the honest version lands with, where the test knows it
    /// (a git bundle's bytes are the agent's own making).
    honest_root: Option<String>,
}

impl Forgery<'_> {
    /// A body served as is: each vote is named by its root.
    fn of_body<'a>(kind: &'a str, url: String, honest: &[u8], forged: &[u8]) -> Forgery<'a> {
        let head = |b: &[u8]| blake3::hash(b).to_hex().as_str()[..16].to_string();
        Forgery {
            kind,
            url,
            forged: forged.to_vec(),
            named: (head(honest), head(forged)),
            honest_root: Some(blake3::hash(honest).to_hex().to_string()),
        }
    }
}

/// Quorum 2, one liar among three agents: the liar and one honest agent
/// disagree, the run is disputed with both votes named, the tie-break agent
/// sides with the honest one, the honest version lands, the forged one
/// never does, and the liar is outvoted and suspect.
async fn outvote_a_liar(tmp: &Path, forgery: Forgery<'_>) -> Result<Outvoted> {
    let cdata = tmp.join("commander");
    let mut procs = vec![spawn_commander(&cdata, "127.0.0.1:0").await?];
    let forged_path = tmp.join("forged");
    std::fs::write(&forged_path, &forgery.forged)?;
    for name in ["liar", "honest-1", "honest-2"] {
        enroll_agent(&cdata, &tmp.join(name), name).await?;
    }
    let forged_env = forged_path.to_string_lossy().into_owned();
    procs.push(spawn_agent_with(
        &tmp.join("liar"),
        &[(FORGE, &forged_env)],
    )?);
    procs.push(spawn_agent(&tmp.join("honest-1"))?);
    add_target_with(&cdata, quorum_target("t", forgery.kind, &forgery.url, "2")).await?;
    // Two agents, two members: each takes one and they disagree.
    wait_for_group_state(&cdata, "t", "disputed", Duration::from_secs(40)).await?;
    let group = group_runs(&cdata, "t").await?;
    let disputed = group
        .iter()
        .find(|r| r.state == "disputed")
        .context("disputed")?;
    for named in [&forgery.named.0, &forgery.named.1] {
        ensure!(
            disputed.reason.contains(named.as_str()),
            "the dispute does not name every vote ({named}): {}",
            disputed.reason
        );
    }
    ensure!(
        archive_ls(&cdata)?.is_empty(),
        "something landed while the agents disagreed"
    );
    // The tie-break goes to the third agent.
    procs.push(spawn_agent(&tmp.join("honest-2"))?);
    wait_for_group_state(&cdata, "t", "succeeded", Duration::from_secs(40)).await?;
    let landed = archive_ls(&cdata)?;
    ensure!(landed.len() == 1, "expected one landed version: {landed:?}");
    if let Some(root) = &forgery.honest_root {
        ensure!(
            landed[0]["blake3"] == root.as_str(),
            "what landed is not the origin's bytes: {landed:?}"
        );
    }
    ensure!(
        landed[0]["blake3"] != blake3::hash(&forgery.forged).to_hex().as_str(),
        "the forged bytes landed: {landed:?}"
    );
    let group = group_runs(&cdata, "t").await?;
    let states: Vec<(&str, &str)> = group
        .iter()
        .map(|r| (r.agent.as_str(), r.state.as_str()))
        .collect();
    ensure!(group.len() == 3, "two members and a tie-break: {states:?}");
    ensure!(
        states.contains(&("liar", "refuted")),
        "the liar was not outvoted: {states:?}"
    );
    let trust = agent_named(&cdata, "liar").await?.trust.unwrap_or_default();
    ensure!(
        trust.disputes_lost == 1 && trust.suspect.contains("outvoted"),
        "the liar is not suspect: {trust:?}"
    );
    for name in ["honest-1", "honest-2"] {
        let t = agent_named(&cdata, name).await?.trust.unwrap_or_default();
        ensure!(t.confirmed == 1 && t.suspect.is_empty(), "{name}: {t:?}");
    }
    Ok(Outvoted { cdata, procs })
}

/// [`outvote_a_liar`] for `file` served by a test origin with
/// `content_type` (the origin is returned: it must outlive the swarm).
async fn outvote_on_origin(
    tmp: &Path,
    kind: &str,
    file: &str,
    (honest, forged): (&[u8], &[u8]),
    content_type: &str,
) -> Result<(Outvoted, Origin)> {
    let origin = Origin::start().await?;
    origin.put_typed(file, honest.to_vec(), content_type);
    let forgery = Forgery::of_body(kind, origin.url(file), honest, forged);
    Ok((outvote_a_liar(tmp, forgery).await?, origin))
}

/// A file with other bytes: outvoted; who vouched is on record; a suspect
/// gets no quorum-1 work until the operator clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_two_outvotes_a_lying_agent_and_lands_the_honest_bytes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let honest: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut forged = honest.clone();
    forged[123_456] ^= 0x20;
    let (swarm, origin) = outvote_on_origin(
        tmp.path(),
        "file",
        "disk.img",
        (&honest, &forged),
        "application/octet-stream",
    )
    .await?;
    let cdata = swarm.cdata.clone();
    // Who vouched for the landed version is on record.
    let (ok, shown, stderr) = commander_cli(&cdata, &["archive", "show", "1", "--json"])?;
    ensure!(ok, "archive show failed: {stderr}");
    let shown: serde_json::Value = serde_json::from_str(&shown)?;
    let mut vouchers: Vec<String> = shown["vouchers"]
        .as_array()
        .context("vouchers")?
        .iter()
        .map(|v| v["agent"].as_str().unwrap_or_default().to_string())
        .collect();
    vouchers.sort();
    ensure!(
        vouchers == ["honest-1", "honest-2"],
        "vouchers: {vouchers:?}"
    );

    // A suspect gets no quorum-1 work: with only the liar left (the
    // honest agents stopped), the run waits.
    let mut procs = swarm.procs;
    procs.truncate(2);
    origin.put("other.img", b"quorum one".to_vec());
    add_target_with(
        &cdata,
        quorum_target("other", "file", &origin.url("other.img"), "1"),
    )
    .await?;
    tokio::time::sleep(TEST_HEARTBEAT * 6).await;
    let other = run(&cdata, run_of(&cdata, "other").await?).await?;
    ensure!(
        other.state == "queued",
        "a suspect agent was given quorum-1 work: {other:?}"
    );
    // Until the operator clears it.
    let (ok, _, stderr) = commander_cli(&cdata, &["agent", "trust", "liar", "--clear"])?;
    ensure!(ok, "agent trust --clear failed: {stderr}");
    ensure!(
        agent_named(&cdata, "liar")
            .await?
            .trust
            .unwrap_or_default()
            .suspect
            .is_empty(),
        "still suspect after --clear"
    );
    Ok(())
}

/// A feed with one injected entry: outvoted, the honest feed lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_two_outvotes_a_feed_with_an_injected_entry() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let honest = rss(&item("real"));
    let forged = rss(&format!("{}{}", item("real"), item("injected")));
    let (swarm, _origin) = outvote_on_origin(
        tmp.path(),
        "rss",
        "news.xml",
        (&honest, &forged),
        "application/rss+xml",
    )
    .await?;
    // The outvoted upload's quarantine is reclaimed by the next sweep.
    let cd = swarm.cdata.clone();
    wait_until(Duration::from_secs(10), "the quarantine to empty", || {
        let cd = cd.clone();
        async move { Ok(quarantined(&cd).is_empty()) }
    })
    .await?;
    let entries = files_in_tree(&swarm.cdata.join("archive"));
    ensure!(
        !entries
            .iter()
            .any(|(_, b)| String::from_utf8_lossy(b).contains("injected")),
        "the injected entry landed"
    );
    Ok(())
}

/// A forged but valid ZIM (built with zimwriterfs) against a real Kiwix
/// ZIM: outvoted, the real one lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_two_outvotes_a_forged_zim() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let honest = std::fs::read(zim_fixtures()?.join("small.zim"))?;
    let forged = ark_demo::build_zim(tmp.path()).map_err(anyhow::Error::msg)?;
    outvote_on_origin(
        tmp.path(),
        "zim",
        "small.zim",
        (&honest, &forged),
        "application/octet-stream",
    )
    .await?;
    Ok(())
}

/// A git bundle with one extra commit on `main`, made by `git bundle`
/// from the real upstream's history: outvoted on its ref → object map, the
/// honest mirror lands and the forged commit is nowhere in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_two_outvotes_a_git_bundle_with_an_extra_commit() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (up, forged, http) = forged_git_bundle(tmp.path())?;
    let url = http.url("up.git");
    let forged_tip = git(&up.work, &["rev-parse", "main"])?.trim().to_string();
    let forgery = Forgery {
        kind: "git",
        url: url.clone(),
        forged,
        named: ("honest-1: refs ".into(), "liar: refs ".into()),
        honest_root: None,
    };
    let swarm = outvote_a_liar(tmp.path(), forgery).await?;
    let mirror = swarm
        .cdata
        .join("archive")
        .join(ark_commander::kinds::git_mirror_path(&url));
    let landed: std::collections::BTreeMap<String, String> = ls_remote(&mirror)?
        .into_iter()
        .filter(|(name, _)| !name.starts_with("refs/ark/"))
        .collect();
    ensure!(
        landed == up.refs()?,
        "the mirror's refs are not upstream's: {landed:?}"
    );
    let has_forged = std::process::Command::new("git")
        .args(["cat-file", "-e", &forged_tip])
        .current_dir(&mirror)
        .status()?;
    ensure!(
        !has_forged.success(),
        "the forged commit {forged_tip} is in the landed mirror"
    );
    Ok(())
}

/// A real upstream served over smart HTTP, and a bundle of its refs with
/// one extra commit on `main` that upstream never had (the forgery).
fn forged_git_bundle(root: &Path) -> Result<(Upstream, Vec<u8>, GitHttp)> {
    let repos = root.join("repos");
    std::fs::create_dir_all(&repos)?;
    let up = Upstream::populated(&repos, "up")?;
    let http = GitHttp::start(&repos)?;
    up.commit("src/main.txt", "a forged change\n")?;
    let bundle = root.join("forged.bundle");
    git(
        &up.work,
        &[
            "bundle",
            "create",
            "-q",
            &bundle.to_string_lossy(),
            "--branches",
            "--tags",
            "refs/notes/commits",
        ],
    )?;
    Ok((up, std::fs::read(&bundle)?, http))
}

/// An RSS 2.0 feed with `items`.
fn rss(items: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>News</title>\
         <link>http://example.org/</link><description>d</description>{items}</channel></rss>"
    )
    .into_bytes()
}

/// One RSS item named `t`.
fn item(t: &str) -> String {
    format!("<item><title>{t}</title><guid>{t}</guid><link>http://example.org/{t}</link></item>")
}

/// Every file under `dir`, recursively (path, bytes).
fn files_in_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_in_tree(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

/// Two honest agents fetch a feed that changes between their fetches:
/// their roots differ but so do the origin's validators, so the group is
/// retried (not disputed, nobody suspect) and the new version lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_changes_between_two_fetches_is_retried_not_disputed() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    let feed = |title: &str| rss(&item(title));
    origin.put_typed("news.xml", feed("first"), "application/rss+xml");
    for name in ["a", "b"] {
        enroll_agent(&cdata, &tmp.path().join(name), name).await?;
    }
    let _a = spawn_agent(&tmp.path().join("a"))?;
    add_target_with(
        &cdata,
        quorum_target("news", "rss", &origin.url("news.xml"), "2"),
    )
    .await?;
    wait_for_group_state(&cdata, "news", "awaiting_quorum", Duration::from_secs(30)).await?;
    // The feed changes before the second agent fetches it.
    origin.put_typed("news.xml", feed("second"), "application/rss+xml");
    let _b = spawn_agent(&tmp.path().join("b"))?;
    wait_for_group_state(&cdata, "news", "succeeded", Duration::from_secs(60)).await?;
    let group = group_runs(&cdata, "news").await?;
    let first = group.iter().map(|r| r.id).min().context("group")?;
    let kinds: Vec<String> = events(&cdata, first)
        .await?
        .into_iter()
        .map(|e| e.kind)
        .collect();
    ensure!(
        kinds.iter().any(|k| k == "quorum_retry"),
        "not retried: {kinds:?}"
    );
    ensure!(
        !kinds.iter().any(|k| k == "disputed"),
        "an origin change was taken for a dispute: {kinds:?}"
    );
    for name in ["a", "b"] {
        let t = agent_named(&cdata, name).await?.trust.unwrap_or_default();
        ensure!(
            t.suspect.is_empty() && t.disputes_lost == 0,
            "{name}: {t:?}"
        );
    }
    let landed = archive_files(&cdata);
    ensure!(
        landed.iter().any(|(_, bytes)| bytes == &feed("second")),
        "the new feed did not land: {:?}",
        landed.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    Ok(())
}

/// `agent revoke`: the agent's next call is refused, its lease goes to
/// another agent at once, what it was fetching never lands; re-enrolled
/// under the same name with a new token, the old certificate stays refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_is_cut_off_and_its_work_moves_on() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    origin.put("big.img", body.clone());
    origin.throttle(200_000);
    enroll_agent(&cdata, &tmp.path().join("stolen"), "stolen").await?;
    let _stolen = spawn_agent(&tmp.path().join("stolen"))?;
    add_file_target(&cdata, "big", &origin.url("big.img")).await?;
    let id = run_of(&cdata, "big").await?;
    let cd = cdata.clone();
    wait_until(
        Duration::from_secs(20),
        "the stolen device to be fetching",
        || {
            let cd = cd.clone();
            async move { Ok(run(&cd, id).await?.bytes_done > 0) }
        },
    )
    .await?;
    let (ok, _, stderr) = commander_cli(&cdata, &["agent", "revoke", "stolen"])?;
    ensure!(ok, "agent revoke failed: {stderr}");
    let revoked = run(&cdata, id).await?;
    ensure!(
        revoked.state == "queued" && revoked.reason.contains("revoked"),
        "the lease did not end at once: {revoked:?}"
    );
    ensure!(agent_named(&cdata, "stolen").await?.state == "revoked");
    // Another agent takes it and lands it; nothing of the stolen device's.
    origin.throttle(0);
    enroll_agent(&cdata, &tmp.path().join("spare"), "spare").await?;
    let _spare = spawn_agent(&tmp.path().join("spare"))?;
    let done = wait_for_run(&cdata, id, "succeeded", Duration::from_secs(40)).await?;
    ensure!(done.agent == "spare", "landed by {}", done.agent);
    let landed = archive_ls(&cdata)?;
    ensure!(
        landed.len() == 1 && landed[0]["agent"] == "spare",
        "landed: {landed:?}"
    );
    // Re-enrolled elsewhere under the same name: the old device (still
    // running with its old certificate) stays refused.
    enroll_agent(&cdata, &tmp.path().join("stolen-new"), "stolen").await?;
    drop(_spare);
    origin.put("next.img", b"next".to_vec());
    add_file_target(&cdata, "next", &origin.url("next.img")).await?;
    tokio::time::sleep(TEST_HEARTBEAT * 6).await;
    let next = run(&cdata, run_of(&cdata, "next").await?).await?;
    ensure!(
        next.state == "queued",
        "the old certificate was served after revocation: {next:?}"
    );
    let _renewed = spawn_agent(&tmp.path().join("stolen-new"))?;
    let next = wait_for_run(&cdata, next.id, "succeeded", Duration::from_secs(30)).await?;
    ensure!(next.agent == "stolen", "{next:?}");
    Ok(())
}

/// A quorum's waiting state is durable: the commander is killed (-9)
/// between the first and the second confirmation and restarted; the first
/// vote is still counted and the version lands once the second agent
/// confirms (without uploading the bytes a second time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_state_survives_kill_9_of_the_commander_between_confirmations() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut commander = spawn_commander(&cdata, &listen).await?;
    let origin = Origin::start().await?;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    origin.put("doc.pdf", body.clone());
    for name in ["first", "second"] {
        enroll_agent(&cdata, &tmp.path().join(name), name).await?;
    }
    let _first = spawn_agent(&tmp.path().join("first"))?;
    add_target_with(
        &cdata,
        quorum_target("doc", "file", &origin.url("doc.pdf"), "2"),
    )
    .await?;
    wait_for_group_state(&cdata, "doc", "awaiting_quorum", Duration::from_secs(30)).await?;
    ensure!(
        archive_files(&cdata).is_empty(),
        "landed on one confirmation"
    );
    commander.kill9();
    let _commander = spawn_commander(&cdata, &listen).await?;
    let waiting = group_runs(&cdata, "doc").await?;
    ensure!(
        waiting
            .iter()
            .any(|r| r.state == "awaiting_quorum" && r.agent == "first"),
        "the first confirmation was lost in the restart: {waiting:?}"
    );
    let _second = spawn_agent(&tmp.path().join("second"))?;
    wait_for_group_state(&cdata, "doc", "succeeded", Duration::from_secs(40)).await?;
    let files = archive_files(&cdata);
    ensure!(
        files.len() == 1 && files[0].1 == body,
        "landed: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    let states: Vec<String> = group_runs(&cdata, "doc")
        .await?
        .iter()
        .map(|r| format!("{}:{}", r.agent, r.state))
        .collect();
    ensure!(
        states.contains(&"first:succeeded".to_string())
            && states.contains(&"second:confirmed".to_string()),
        "the second agent should confirm without uploading: {states:?}"
    );
    Ok(())
}

/// Quorum 1 with `--spot-check 8` against nginx: a lying agent's forged
/// body (valid, signed, hashed properly) is refused by the commander's own
/// range requests to the origin, nothing lands and the agent is marked; an
/// honest agent's harvest lands. An origin without Range support (Python's
/// `http.server`) makes the check impossible: recorded, not a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_checks_catch_a_lying_agent_against_nginx_and_say_when_they_cannot() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www)?;
    let honest: Vec<u8> = (0..1_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(www.join("disk.img"), &honest)?;
    let nginx = Nginx::start(&tmp.path().join("nginx"), &www).await?;
    let url = format!("http://{}/disk.img", nginx.addr);
    // One flipped bit somewhere: 8 groups of 62 see it only by luck, so
    // the forgery differs everywhere (a different but well-formed body).
    let forged: Vec<u8> = honest.iter().map(|b| b.wrapping_add(1)).collect();
    let forged_path = tmp.path().join("forged.img");
    std::fs::write(&forged_path, &forged)?;
    enroll_agent(&cdata, &tmp.path().join("liar"), "liar").await?;
    let forged_env = forged_path.to_string_lossy().into_owned();
    let liar = spawn_agent_with(&tmp.path().join("liar"), &[(FORGE, &forged_env)])?;
    add_target_with(
        &cdata,
        ark_proto::AddTargetRequest {
            spot_check: 8,
            ..quorum_target("disk", "file", &url, "1")
        },
    )
    .await?;
    let id = run_of(&cdata, "disk").await?;
    let failed = wait_for_run(&cdata, id, "failed", Duration::from_secs(40)).await?;
    ensure!(
        failed.reason.contains("spot check failed"),
        "refused for another reason: {}",
        failed.reason
    );
    ensure!(archive_files(&cdata).is_empty(), "a forged body landed");
    let trust = agent_named(&cdata, "liar").await?.trust.unwrap_or_default();
    ensure!(
        trust.spot_checks_failed == 1 && !trust.suspect.is_empty(),
        "the liar is not marked: {trust:?}"
    );
    drop(liar);

    // An honest agent, the same origin: the check passes and it lands.
    enroll_agent(&cdata, &tmp.path().join("honest"), "honest").await?;
    let _honest = spawn_agent(&tmp.path().join("honest"))?;
    let again = run_now(&cdata, "disk").await?;
    wait_for_run(&cdata, again, "succeeded", Duration::from_secs(40)).await?;
    event_of(&cdata, again, "spot_check").await?;
    let access = nginx.access_log();
    let ranged = access.lines().filter(|l| l.contains(" 206 ")).count();
    ensure!(
        ranged >= 8,
        "the commander sent no range requests: {access}"
    );

    // Python's http.server ignores Range: impossible, recorded, landed.
    let port = free_port()?;
    let mut python = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&www)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Other bytes than disk.img's (the same ones would be linked, not
    // uploaded).
    std::fs::write(www.join("plain.img"), &honest[..500_000])?;
    let plain = format!("http://127.0.0.1:{port}/plain.img");
    wait_until(Duration::from_secs(10), "http.server", || {
        let plain = plain.clone();
        async move { Ok(reqwest::get(&plain).await.is_ok()) }
    })
    .await?;
    add_target_with(
        &cdata,
        ark_proto::AddTargetRequest {
            spot_check: 8,
            ..quorum_target("plain", "file", &plain, "1")
        },
    )
    .await?;
    let plain_run = run_of(&cdata, "plain").await?;
    let landed = wait_for_run(&cdata, plain_run, "succeeded", Duration::from_secs(40)).await;
    let _ = python.kill();
    landed?;
    let impossible = event_of(&cdata, plain_run, "spot_check_impossible").await?;
    ensure!(
        impossible.message.contains("impossible"),
        "{}",
        impossible.message
    );
    Ok(())
}

/// The other forgeries under `--quorum 1 --spot-check 8`: a forged but
/// valid ZIM and a feed with an injected entry, both served by nginx, and a
/// git bundle with an extra commit (its origin `git http-backend`: nginx
/// speaks no smart HTTP): each is refused by the commander's own look at
/// the origin, nothing lands, and the liar's record counts every failure.
/// The operator clears the mark between them so the suspect gets quorum-1
/// work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_checks_refuse_a_forged_zim_feed_and_git_bundle() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::copy(zim_fixtures()?.join("small.zim"), www.join("small.zim"))?;
    std::fs::write(www.join("news.xml"), rss(&item("real")))?;
    let nginx = Nginx::start(&tmp.path().join("nginx"), &www).await?;
    let (up, forged_bundle, http) = forged_git_bundle(tmp.path())?;
    let forgeries = [
        (
            "zim",
            format!("http://{}/small.zim", nginx.addr),
            ark_demo::build_zim(tmp.path()).map_err(anyhow::Error::msg)?,
        ),
        (
            "rss",
            format!("http://{}/news.xml", nginx.addr),
            rss(&format!("{}{}", item("real"), item("injected"))),
        ),
        ("git", http.url("up.git"), forged_bundle),
    ];
    enroll_agent(&cdata, &tmp.path().join("liar"), "liar").await?;
    let forged_path = tmp.path().join("forged");
    let forged_env = forged_path.to_string_lossy().into_owned();
    let _liar = spawn_agent_with(&tmp.path().join("liar"), &[(FORGE, &forged_env)])?;
    for (n, (kind, url, forged)) in forgeries.into_iter().enumerate() {
        // The hook reads its file afresh for every job.
        std::fs::write(&forged_path, &forged)?;
        let name = format!("forged-{kind}");
        add_target_with(
            &cdata,
            ark_proto::AddTargetRequest {
                spot_check: 8,
                ..quorum_target(&name, kind, &url, "1")
            },
        )
        .await?;
        let id = run_of(&cdata, &name).await?;
        let failed = wait_for_run(&cdata, id, "failed", Duration::from_secs(60)).await?;
        ensure!(
            failed.reason.contains("spot check failed"),
            "{kind}: refused for another reason: {}",
            failed.reason
        );
        ensure!(archive_files(&cdata).is_empty(), "{kind}: a forgery landed");
        let trust = agent_named(&cdata, "liar").await?.trust.unwrap_or_default();
        ensure!(
            trust.spot_checks_failed == n as u64 + 1 && !trust.suspect.is_empty(),
            "{kind}: the liar is not marked: {trust:?}"
        );
        let (ok, _, stderr) = commander_cli(&cdata, &["agent", "trust", "liar", "--clear"])?;
        ensure!(ok, "agent trust --clear failed: {stderr}");
    }
    ensure!(
        nginx.access_log().lines().any(|l| l.contains(" 206 ")),
        "the commander sent nginx no range requests"
    );
    drop(up);
    Ok(())
}

/// Distinct device classes first: with two Pis and a laptop online, each
/// quorum-2 harvest is confirmed by a Pi and the laptop, never by the two
/// Pis (one flawed model of device cannot confirm itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_prefers_agents_of_distinct_device_classes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    let mut procs = Vec::new();
    for (name, class) in [("pi-1", "pi"), ("pi-2", "pi"), ("laptop", "laptop")] {
        let data = tmp.path().join(name);
        enroll_agent(&cdata, &data, name).await?;
        std::fs::write(
            data.join(ark_agent::config::CONFIG_FILE),
            format!("device-class = \"{class}\"\n"),
        )?;
        procs.push(spawn_agent(&data)?);
    }
    wait_for_agents_online(&cdata, 3).await?;
    for n in 0..3 {
        let (name, file) = (format!("t{n}"), format!("f{n}.bin"));
        origin.put(&file, format!("harvest {n}").repeat(1000).into_bytes());
        add_target_with(
            &cdata,
            quorum_target(&name, "file", &origin.url(&file), "2"),
        )
        .await?;
        wait_for_group_state(&cdata, &name, "succeeded", Duration::from_secs(40)).await?;
        let voters: Vec<String> = group_runs(&cdata, &name)
            .await?
            .into_iter()
            .filter(|r| r.state == "succeeded" || r.state == "confirmed")
            .map(|r| r.agent)
            .collect();
        ensure!(
            voters.len() == 2 && voters.iter().any(|a| a == "laptop"),
            "{name}: confirmed by one class only: {voters:?}"
        );
    }
    Ok(())
}
