//! `sources [ACCOUNT_REPOS] [MIRRORED]`: what following sources that move
//! costs (issue 12), with a real release commander and real agents on
//! loopback. (1) The cost of a check that finds nothing new, per source:
//! requests and bytes the origin served for a Kiwix book from a mirror
//! directory (nginx autoindex) and from an OPDS catalog (nginx, with
//! validators), a feed, a git repository (`git http-backend`) and a forge
//! account (the fake forge of `ark_tests::forge`). (2) The time to list an
//! account of ACCOUNT_REPOS (default 1,000) repositories, 100 a page, and
//! to bring up mirrors of MIRRORED (default 100) of them, chosen with
//! `--include`, on three agents. Prints Markdown for bench/RESULTS.md; set
//! ARK_COMMANDER_BIN and ARK_AGENT_BIN to the release binaries
//! (bench/sources.sh does).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use ark_agent::git::fixture::{git, Upstream};
use ark_tests::forge::{FakeForge, FakeRepo};
use ark_tests::git_origin::GitHttp;
use ark_tests::*;

const SOON: Duration = Duration::from_secs(300);

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let listed: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let mirrored: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let tmp = tempfile::tempdir()?;
    unchanged_checks(tmp.path()).await?;
    account_at_scale(&tmp.path().join("scale"), listed, mirrored).await?;
    Ok(())
}

/// nginx's access log after line `skip`: (requests, body bytes).
fn served(log: &str, skip: usize) -> (usize, u64) {
    log.lines().skip(skip).fold((0, 0), |(n, bytes), line| {
        let sent = line
            .split_once("\" ")
            .and_then(|(_, after)| after.split_whitespace().nth(1))
            .and_then(|b| b.parse::<u64>().ok())
            .unwrap_or(0);
        (n + 1, bytes + sent)
    })
}

/// Runs `target` now and waits for it to end `unchanged`.
async fn unchanged(cdata: &Path, target: &str) -> Result<()> {
    let id = run_now(cdata, target).await?;
    wait_for_run(cdata, id, "unchanged", SOON).await?;
    Ok(())
}

async fn unchanged_checks(dir: &Path) -> Result<()> {
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("zim"))?;
    let book = "wikibooks_be_all_nopic";
    let zim = www.join(format!("zim/{book}_2017-02.zim"));
    std::fs::copy(
        zim_fixtures()?.join("wikibooks_be_all_nopic_2017-02.zim"),
        &zim,
    )?;
    let sum = ark_core::digest::digest_file(&zim, "sha256")?;
    std::fs::write(
        zim.with_extension("zim.sha256"),
        format!("{sum}  {book}_2017-02.zim\n"),
    )?;
    let nginx = Nginx::start_with(&dir.join("nginx"), &www, "autoindex on;").await?;
    let base = format!("http://{}", nginx.addr);
    std::fs::write(
        www.join("catalog.xml"),
        format!(
            "<?xml version=\"1.0\"?><feed xmlns=\"http://www.w3.org/2005/Atom\"><entry><name>wikibooks_be_all</name>\
             <flavour>nopic</flavour><link rel=\"http://opds-spec.org/acquisition/open-access\" \
             type=\"application/x-zim\" href=\"{base}/zim/{book}_2017-02.zim.meta4\"/></entry></feed>"
        ),
    )?;
    std::fs::write(
        www.join(format!("zim/{book}_2017-02.zim.meta4")),
        format!("<metalink><file name=\"{book}_2017-02.zim\"><hash type=\"sha-256\">{sum}</hash></file></metalink>"),
    )?;
    std::fs::write(
        www.join("feed.xml"),
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title><link>http://e.org/</link>\
         <description>d</description><item><title>a</title><guid>a</guid></item></channel></rss>",
    )?;
    let repos = dir.join("repos");
    std::fs::create_dir_all(repos.join("acme"))?;
    Upstream::populated(&repos.join("acme"), "tool")?;
    let http = GitHttp::start(&repos)?;
    let forge = FakeForge::start("acme", 100).await?;
    forge.set_repos(vec![FakeRepo::new("tool", &http.url("acme/tool.git"))]);

    let (cdata, _commander, _agent) = swarm_of_one(dir, "pi").await?;
    let add = |args: Vec<String>| {
        let cdata = cdata.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, _, err) = commander_cli(&cdata, &args)?;
            ensure!(ok, "{args:?}: {err}");
            Ok::<_, anyhow::Error>(())
        }
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    add(s(&[
        "target",
        "add",
        "zim",
        "--book",
        book,
        "--from",
        &format!("{base}/zim/"),
        "--name",
        "dir",
    ]))
    .await?;
    add(s(&[
        "target",
        "add",
        "zim",
        "--book",
        book,
        "--from",
        &format!("{base}/catalog.xml"),
        "--name",
        "opds",
    ]))
    .await?;
    add(s(&[
        "target",
        "add",
        "rss",
        &format!("{base}/feed.xml"),
        "--name",
        "feed",
    ]))
    .await?;
    add(s(&[
        "target",
        "add",
        "git-account",
        &forge.account_url(),
        "--forge",
        "github",
        "--name",
        "acme",
    ]))
    .await?;
    let cd = cdata.clone();
    wait_until(SOON, "the first harvests", || {
        let cd = cd.clone();
        async move {
            let runs = runs(&cd).await?;
            let done = |t: &str| runs.iter().any(|r| r.target == t && r.state == "succeeded");
            Ok(["dir", "opds", "feed", "acme-tool"].iter().all(|t| done(t)))
        }
    })
    .await?;

    println!("| source | unchanged check: requests | bytes served |");
    println!("|---|---:|---:|");
    for (label, target) in [
        (
            "Kiwix book, mirror directory (nginx autoindex: no validators)",
            "dir",
        ),
        ("Kiwix book, OPDS catalog (nginx: ETag → 304)", "opds"),
        ("feed (conditional GET → 304)", "feed"),
    ] {
        let before = nginx.access_log().lines().count();
        unchanged(&cdata, target).await?;
        let (n, bytes) = served(&nginx.access_log(), before);
        println!("| {label} | {n} | {bytes} |");
    }
    let before = http.requests().len();
    unchanged(&cdata, "acme-tool").await?;
    println!(
        "| git repository (smart HTTP v2: capabilities + ls-refs) | {} | — |",
        http.requests().len() - before
    );
    let before = forge.seen().len();
    unchanged(&cdata, "acme").await?;
    let seen = forge.seen();
    let asked = &seen[before..];
    println!(
        "| forge account, 1 repository (owner + 1 page; its mirror's run is the row above) | {} | {} |",
        asked.len(),
        asked.iter().map(|s| s.bytes).sum::<u64>()
    );
    Ok(())
}

async fn account_at_scale(dir: &Path, listed: usize, mirrored: usize) -> Result<()> {
    let repos = dir.join("repos");
    std::fs::create_dir_all(repos.join("big"))?;
    let seed = Upstream::populated(&repos, "seed")?;
    let made = Instant::now();
    for i in 0..mirrored {
        let bare = repos.join(format!("big/real-{i:04}.git"));
        git(
            &repos,
            &[
                "clone",
                "-q",
                "--bare",
                &seed.bare.to_string_lossy(),
                &bare.to_string_lossy(),
            ],
        )?;
    }
    eprintln!(
        "bench: {mirrored} repositories made in {:?}",
        made.elapsed()
    );
    let http = GitHttp::start(&repos)?;
    let forge = FakeForge::start("big", 100).await?;
    let all: Vec<FakeRepo> = (0..listed)
        .map(|i| {
            if i < mirrored {
                FakeRepo::new(
                    &format!("real-{i:04}"),
                    &http.url(&format!("big/real-{i:04}.git")),
                )
            } else {
                FakeRepo::new(
                    &format!("other-{i:04}"),
                    &format!("http://127.0.0.1:9/big/other-{i:04}.git"),
                )
            }
        })
        .collect();
    forge.set_repos(all);
    let cdata = dir.join("commander");
    let mut procs = vec![spawn_commander(&cdata, "127.0.0.1:0").await?];
    for n in 0..3 {
        let data = dir.join(format!("agent-{n}"));
        enroll_agent(&cdata, &data, &format!("agent-{n}")).await?;
        procs.push(spawn_agent(&data)?);
    }
    wait_for_agents_online(&cdata, 3).await?;
    let started = Instant::now();
    let (ok, _, err) = commander_cli(
        &cdata,
        &[
            "target",
            "add",
            "git-account",
            &forge.account_url(),
            "--forge",
            "gitea",
            "--name",
            "big",
            "--include",
            "real-*",
        ],
    )?;
    ensure!(ok, "{err}");
    let account_run = run_of(&cdata, "big").await?;
    let listed_run = {
        let cd = cdata.clone();
        wait_until(SOON, "the account to be listed", || {
            let cd = cd.clone();
            async move { Ok(run(&cd, account_run).await?.state == "succeeded") }
        })
        .await?;
        run(&cdata, account_run).await?
    };
    let list_ms = listed_run.finished_at_ms - listed_run.created_at_ms;
    let cd = cdata.clone();
    wait_until(SOON, "the mirrors to land", || {
        let cd = cd.clone();
        async move {
            let runs = runs(&cd).await?;
            Ok(runs
                .iter()
                .filter(|r| r.kind == "git" && r.state == "succeeded")
                .count()
                >= mirrored)
        }
    })
    .await?;
    let all_ms = started.elapsed().as_millis();
    let pages = forge
        .seen()
        .iter()
        .filter(|s| s.path_and_query.contains("/repos"))
        .count();
    let agents: std::collections::BTreeSet<String> = runs(&cdata)
        .await?
        .into_iter()
        .filter(|r| r.kind == "git")
        .map(|r| r.agent)
        .collect();
    println!();
    println!("| forge account | figure |");
    println!("|---|---:|");
    println!("| list {listed} repositories ({pages} pages of 100, Gitea's API) | {list_ms} ms |");
    println!(
        "| from `target add git-account` to {mirrored} mirrors landed (`--include 'real-*'`), 3 agents ({} took part) | {:.1} s |",
        agents.len(),
        all_ms as f64 / 1000.0
    );
    drop(procs);
    Ok(())
}
