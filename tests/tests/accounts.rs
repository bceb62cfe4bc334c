//! Whole forge accounts (issue 12) through the real binaries: a fake forge
//! API with the JSON shapes and pagination of GitHub, GitLab and Gitea
//! (`ark_tests::forge`) lists real repositories served by `git
//! http-backend`; every chosen repository (and wiki) becomes a git target
//! that lands a mirror; a new repository appears on the next run, a
//! removed one is kept `gone upstream`; a rate limit is waited out, not
//! hammered; the token never appears in logs, events, the archive or
//! `--json`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use ark_agent::git::fixture::Upstream;
use ark_tests::forge::{FakeForge, FakeRepo};
use ark_tests::git_origin::GitHttp;
use ark_tests::*;

const SOON: Duration = Duration::from_secs(60);
const TOKEN: &str = "ghp_s3cret-Token-that-must-never-show";

/// `target ls --json`, by name.
fn targets(cdata: &Path) -> Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let (ok, out, err) = commander_cli(cdata, &["target", "ls", "--json"])?;
    ensure!(ok, "target ls: {err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out)?;
    Ok(rows
        .into_iter()
        .map(|t| (t["name"].as_str().unwrap_or_default().to_string(), t))
        .collect())
}

/// Waits until the newest run of every target in `names` has `state`.
async fn all_runs(cdata: &Path, names: &[&str], state: &str) -> Result<()> {
    let what = format!("{names:?} to be {state}");
    wait_until(SOON, &what, || async move {
        let runs = runs(cdata).await?;
        Ok(names.iter().all(|n| {
            runs.iter()
                .filter(|r| r.target == *n)
                .max_by_key(|r| r.id)
                .is_some_and(|r| r.state == state)
        }))
    })
    .await
}

/// Runs the account now and waits for the run to finish listing.
async fn list_now(cdata: &Path, account: &str) -> Result<ark_proto::RunInfo> {
    let id = run_now(cdata, account).await?;
    let what = format!("account run {id} to finish");
    wait_until(SOON, &what, || async move {
        Ok(matches!(
            run(cdata, id).await?.state.as_str(),
            "succeeded" | "unchanged" | "failed"
        ))
    })
    .await?;
    run(cdata, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_organisation_is_mirrored_whole_follows_changes_and_waits_out_rate_limits(
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repos = tmp.path().join("repos");
    let org = repos.join("acme");
    std::fs::create_dir_all(&org)?;
    for name in [
        "widgets",
        "widgets.wiki",
        "gadgets",
        "old-fork",
        "attic",
        "newbie",
    ] {
        Upstream::populated(&org, name)?;
    }
    let http = GitHttp::start(&repos)?;
    let url = |name: &str| http.url(&format!("acme/{name}.git"));
    let forge = FakeForge::start("acme", 2).await?;
    let listed = |names: &[&str]| -> Vec<FakeRepo> {
        names
            .iter()
            .map(|n| FakeRepo {
                fork: *n == "old-fork",
                archived: *n == "attic",
                wiki: *n == "widgets",
                ..FakeRepo::new(n, &url(n))
            })
            .collect()
    };
    forge.set_repos(listed(&["widgets", "gadgets", "old-fork", "attic"]));
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;

    let (cdata, commander, agent) = swarm_of_one(tmp.path(), "pi").await?;
    let (ok, _, err) = commander_cli(
        &cdata,
        &[
            "target",
            "add",
            "git-account",
            &forge.account_url(),
            "--name",
            "acme",
            "--forge",
            "github",
            "--token-file",
            &token_file.to_string_lossy(),
            "--no-forks",
            "--exclude",
            "att*",
            "--keep",
            "2",
            "--lfs",
        ],
    )?;
    ensure!(ok, "target add git-account: {err}");
    let mirrors = ["acme-widgets", "acme-widgets.wiki", "acme-gadgets"];
    all_runs(&cdata, &mirrors, "succeeded").await?;
    let listed_targets = targets(&cdata)?;
    ensure!(
        listed_targets.len() == 4
            && !listed_targets.contains_key("acme-old-fork")
            && !listed_targets.contains_key("acme-attic"),
        "the filters were not applied: {:?}",
        listed_targets.keys()
    );
    for name in mirrors {
        let t = &listed_targets[name];
        ensure!(
            t["account"] == "acme" && t["kind"] == "git" && t["keep"] == 2 && t["lfs"] == true,
            "{t}"
        );
    }
    let account = &listed_targets["acme"];
    ensure!(account["account_options"]["forge"] == "github", "{account}");
    // Two repositories a page: the listing followed the next links.
    let seen = forge.seen();
    ensure!(
        seen.iter().any(|s| s.path_and_query.contains("page=2")),
        "no second page asked: {seen:?}"
    );
    ensure!(
        seen.iter()
            .all(|s| s.credentials == format!("Bearer {TOKEN}")),
        "the token was not sent as GitHub's bearer: {seen:?}"
    );
    // The mirror of a listed repository is the upstream's.
    let mirror = cdata
        .join("archive")
        .join(ark_commander::kinds::git_mirror_path(&url("gadgets")));
    let cloned = ark_agent::git::fixture::fsck_and_clone(&mirror, &tmp.path().join("clone"))?;
    ensure!(cloned.join("README").exists());

    // Next run: one repository removed upstream, one new.
    forge.set_repos(listed(&["widgets", "old-fork", "attic", "newbie"]));
    let run = list_now(&cdata, "acme").await?;
    ensure!(
        run.state == "succeeded"
            && run.reason.contains("1 new")
            && run.reason.contains("1 gone upstream"),
        "{}",
        run.reason
    );
    all_runs(&cdata, &["acme-newbie"], "succeeded").await?;
    let after = targets(&cdata)?;
    let gone = after["acme-gadgets"]["gone"].as_str().unwrap_or_default();
    ensure!(gone.contains("gone upstream"), "{}", after["acme-gadgets"]);
    ensure!(
        mirror.exists(),
        "a repository gone upstream lost its mirror"
    );
    let (_, ls, _) = commander_cli(&cdata, &["target", "ls"])?;
    ensure!(ls.contains("GONE UPSTREAM"), "{ls}");

    // Rate-limited: the listing waits for the reset, then finishes.
    forge.rate_limit_once(Duration::from_secs(2));
    let before = forge.seen().len();
    let started = SystemTime::now();
    let waited = list_now(&cdata, "acme").await?;
    ensure!(waited.state == "unchanged", "{waited:?}");
    let asked: Vec<_> = forge.seen()[before..].to_vec();
    let refused: Vec<_> = asked.iter().filter(|s| s.status == 403).collect();
    ensure!(
        refused.len() == 1,
        "the forge was asked again while rate-limited: {asked:?}"
    );
    let retried = asked
        .iter()
        .find(|s| s.status == 200 && s.at > refused[0].at)
        .context("never retried")?;
    ensure!(
        retried.at.duration_since(started)? >= Duration::from_secs(1),
        "retried before the reset: {asked:?}"
    );
    let events = events(&cdata, waited.id).await?;
    ensure!(
        events.iter().any(|e| e.kind == "rate_limited"),
        "{events:?}"
    );

    // The token is nowhere but in its file.
    let mut places = vec![
        ("commander log", commander.log_text()),
        ("agent log", agent.log_text()),
        (
            "target ls --json",
            commander_cli(&cdata, &["target", "ls", "--json"])?.1,
        ),
        ("runs --json", commander_cli(&cdata, &["runs", "--json"])?.1),
    ];
    for r in runs(&cdata).await? {
        for e in ark_tests::events(&cdata, r.id).await? {
            places.push(("events", e.message));
        }
    }
    for (path, bytes) in archive_files(&cdata) {
        places.push((
            "archive",
            format!("{path} {}", String::from_utf8_lossy(&bytes)),
        ));
    }
    for (place, text) in places {
        ensure!(!text.contains(TOKEN), "the token shows in the {place}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_group_with_subgroups_and_a_gitea_org_are_mirrored() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(repos.join("grp/sub"))?;
    std::fs::create_dir_all(repos.join("home"))?;
    Upstream::populated(&repos.join("grp"), "app")?;
    Upstream::populated(&repos.join("grp/sub"), "lib")?;
    Upstream::populated(&repos.join("home"), "tool")?;
    Upstream::populated(&repos.join("home"), "old")?;
    let http = GitHttp::start(&repos)?;
    let (cdata, _commander, _agent) = swarm_of_one(tmp.path(), "pi").await?;

    let gitlab = FakeForge::start("grp", 1).await?;
    gitlab.set_repos(vec![
        FakeRepo::new("app", &http.url("grp/app.git")),
        FakeRepo::new("sub/lib", &http.url("grp/sub/lib.git")),
    ]);
    let (ok, _, err) = commander_cli(
        &cdata,
        &[
            "target",
            "add",
            "git-account",
            &gitlab.account_url(),
            "--name",
            "grp",
            "--forge",
            "gitlab",
        ],
    )?;
    ensure!(ok, "{err}");
    all_runs(&cdata, &["grp-app", "grp-sub-lib"], "succeeded").await?;
    ensure!(
        gitlab
            .seen()
            .iter()
            .any(|s| s.path_and_query.contains("include_subgroups=true")),
        "{:?}",
        gitlab.seen()
    );

    let gitea = FakeForge::start("home", 1).await?;
    gitea.set_repos(vec![
        FakeRepo::new("tool", &http.url("home/tool.git")),
        FakeRepo {
            archived: true,
            ..FakeRepo::new("old", &http.url("home/old.git"))
        },
    ]);
    let (ok, _, err) = commander_cli(
        &cdata,
        &[
            "target",
            "add",
            "git-account",
            &gitea.account_url(),
            "--name",
            "home",
            "--forge",
            "forgejo",
            "--no-archived",
        ],
    )?;
    ensure!(ok, "{err}");
    all_runs(&cdata, &["home-tool"], "succeeded").await?;
    let all = targets(&cdata)?;
    ensure!(
        !all.contains_key("home-old"),
        "--no-archived: {:?}",
        all.keys()
    );
    ensure!(gitea
        .seen()
        .iter()
        .any(|s| s.path_and_query.starts_with("/api/v1/orgs/home/repos")));

    // A forge that cannot be told is refused at add, with the fix.
    let (ok, _, err) = commander_cli(
        &cdata,
        &[
            "target",
            "add",
            "git-account",
            "http://git.home.example/acme",
        ],
    )?;
    ensure!(!ok && err.contains("--forge"), "{err}");
    Ok(())
}
