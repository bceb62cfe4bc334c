//! `kinds [--zim FILE]...`: the harvest kinds (issue #4) against the tools a
//! user would otherwise run, each pair timed in the same run on the same
//! input, medians of several runs where a run is cheap:
//!
//! - git: `ark_agent::git::mirror` vs `git clone --mirror` over smart HTTP
//!   (the tests' `GitHttp` origin: `git http-backend` on 127.0.0.1), the
//!   no-op refetch of an unchanged upstream vs `git fetch`, and the bundle
//!   the agent writes plus the commander's checks vs `git fsck --full`;
//! - zim: `ark_commander::zim_check::check` vs `zimcheck -A` on each FILE;
//! - rss: `ark_commander::feed::parse` of a generated 10,000-item RSS 2.0
//!   feed, and the whole derivation (`feed::sync`: entry files, ledger rows,
//!   media runs queued) of it landed as a version;
//! - `--feed-only`: the rss measurement alone;
//! - `--pack-only [--commits N] [--real DIR]`: git mirrors at upstream's size
//!   (issue 14), on a delta-heavy repository and a mirror of DIR ([`git_pack`]).
//!
//! Prints one `KIND <name> key=value…` line per measurement for
//! bench/run.sh (`PACK` lines for bench/pack.sh), which turns them into RESULTS.md's "Harvest kinds"
//! section. Building the inputs (the upstream repository, the ZIM) is not
//! timed. It owns no Ark logic: every timed call is the library's own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use ark_agent::git::fixture::{git, ls_remote, pack_bytes, Upstream};
use ark_agent::git::Refs;
use ark_commander::archive::{Archive, NewVersion, Source};
use ark_commander::config::CommanderConfig;
use ark_commander::scheduler::Scheduler;
use ark_commander::state::{self, Store};
use ark_tests::git_origin::GitHttp;

/// Commits on `main` of the generated upstream: the size of a small, real
/// project's history (the issue's "~2,000 commits").
const COMMITS: usize = 2_000;

/// Text files the history edits: a few hundred, like a real source tree.
const FILES: usize = 300;

/// Every this many commits one binary asset (incompressible, 128–640 KiB)
/// is added, so the pack holds some large blobs too, as real repos do.
const BLOB_EVERY: usize = 100;

/// Runs per side of each cheap measurement; the median is reported, so one
/// scheduling hiccup on a 2-core machine does not decide a ratio.
const RUNS: usize = 5;

/// Runs per side of the clone, the longest git measurement: 3 keeps the
/// whole bench under its ~3 minute budget.
const CLONE_RUNS: usize = 3;

/// Items in the generated feed (the issue's figure), well under
/// `feed::MAX_ENTRIES`.
const FEED_ITEMS: usize = 10_000;

/// Bytes of each item's description: a typical show-notes paragraph.
const DESCRIPTION_BYTES: usize = 300;

/// Files in the durability floor beside `feed::sync`: enough for a stable
/// per-file cost of write + fsync + rename without doubling the bench time.
const FLOOR_FILES: usize = 1_000;

/// Commits of the delta-heavy repository of the pack measurement:
/// "thousands of commits editing the same large files" (issue 14).
const PACK_COMMITS: usize = 3_000;

/// Runs per side of the pack measurement's checks; the median is reported.
const PACK_RUNS: usize = 3;

/// Commits added upstream before the pack measurement's thin bundle.
const NEW_COMMITS: usize = 10;

fn main() -> anyhow::Result<()> {
    let mut zims = Vec::new();
    let (mut pack_only, mut commits, mut real) = (false, PACK_COMMITS, None);
    let mut feed_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--zim" => zims.push(PathBuf::from(args.next().context("--zim needs a FILE")?)),
            "--pack-only" => pack_only = true,
            "--feed-only" => feed_only = true,
            "--commits" => commits = args.next().context("--commits needs N")?.parse()?,
            "--real" => real = Some(args.next().context("--real needs a DIR")?),
            _ => bail!(
                "usage: kinds [--zim FILE]... | kinds --feed-only | kinds --pack-only [--commits N] [--real DIR] \
                 (unknown argument {arg:?})"
            ),
        }
    }
    let tmp = tempfile::Builder::new().prefix("ark-kinds-").tempdir()?;
    if feed_only {
        return feed_kind(tmp.path());
    }
    if pack_only {
        let repos = tmp.path().join("repos");
        std::fs::create_dir_all(&repos)?;
        eprintln!("kinds: the delta-heavy repository ({commits} commits)");
        let heavy = Upstream::delta_heavy(&repos, "heavy", commits)?;
        git_pack(tmp.path(), "delta_heavy", &heavy)?;
        if let Some(dir) = real {
            eprintln!("kinds: a mirror of {dir}");
            let bare = repos.join("real.git");
            let work = repos.join("real.work");
            run(
                "git",
                &[
                    "clone",
                    "-q",
                    "--mirror",
                    "--no-local",
                    &dir,
                    path_str(&bare)?,
                ],
            )?;
            run("git", &["clone", "-q", path_str(&bare)?, path_str(&work)?])?;
            git_pack(tmp.path(), "real", &Upstream { bare, work })?;
        }
        return Ok(());
    }
    git_kind(tmp.path())?;
    for zim in &zims {
        zim_kind(zim)?;
    }
    feed_kind(tmp.path())?;
    Ok(())
}

/// Median of `samples` (seconds).
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Wall seconds of `f`, with its result.
fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let start = Instant::now();
    let out = f()?;
    Ok((start.elapsed().as_secs_f64(), out))
}

/// Runs a tool (not timed here), failing with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 temp path")
}

/// A deterministic xorshift generator: the same upstream and feed every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn line(&mut self) -> String {
        const WORDS: &[&str] = &[
            "let", "fn", "match", "mirror", "harvest", "bundle", "archive", "verify", "self",
            "return", "Ok", "Err", "refs", "pack", "index", "commit", "tree", "blob",
        ];
        let n = 4 + self.below(10);
        (0..n)
            .map(|_| WORDS[self.below(WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Writes a `git fast-import` stream for the upstream: `main` with
/// [`COMMITS`] commits editing [`FILES`] text files and adding a binary asset
/// every [`BLOB_EVERY`], a `release` branch forked near the end, and an
/// annotated tag every 200 commits.
fn fast_import_stream(out: &mut impl Write) -> anyhow::Result<()> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut files: Vec<Vec<String>> = (0..FILES)
        .map(|_| (0..20 + rng.below(100)).map(|_| rng.line()).collect())
        .collect();
    let data = |out: &mut dyn Write, bytes: &[u8]| -> std::io::Result<()> {
        writeln!(out, "data {}", bytes.len())?;
        out.write_all(bytes)?;
        writeln!(out)
    };
    let mut mark = 0usize;
    let mut commit_marks = Vec::new();
    let mut commit = |out: &mut dyn Write,
                      rng: &mut Rng,
                      files: &mut Vec<Vec<String>>,
                      branch: &str,
                      from: Option<usize>,
                      n: usize|
     -> anyhow::Result<usize> {
        let mut changes = Vec::new();
        let touched = if n == 0 { FILES } else { 1 + rng.below(4) };
        for k in 0..touched {
            let f = if n == 0 { k } else { rng.below(FILES) };
            let lines = &mut files[f];
            for _ in 0..1 + rng.below(5) {
                let at = rng.below(lines.len());
                lines[at] = rng.line();
            }
            if rng.below(3) == 0 {
                lines.push(rng.line());
            }
            mark += 1;
            writeln!(out, "blob\nmark :{mark}")?;
            data(out, (lines.join("\n") + "\n").as_bytes())?;
            changes.push(format!("M 100644 :{mark} src/m{}/f{f}.rs", f % 17));
        }
        if n > 0 && n.is_multiple_of(BLOB_EVERY) {
            let len = (128 + rng.below(512)) << 10;
            let bytes: Vec<u8> = (0..len / 8)
                .flat_map(|_| rng.next().to_le_bytes())
                .collect();
            mark += 1;
            writeln!(out, "blob\nmark :{mark}")?;
            data(out, &bytes)?;
            changes.push(format!("M 100644 :{mark} assets/a{n}.bin"));
        }
        mark += 1;
        let when = 1_700_000_000 + n as u64 * 3_600;
        writeln!(out, "commit refs/heads/{branch}\nmark :{mark}")?;
        writeln!(out, "author Ark Bench <bench@ark.invalid> {when} +0000")?;
        writeln!(out, "committer Ark Bench <bench@ark.invalid> {when} +0000")?;
        data(out, format!("{branch}: change {n}\n").as_bytes())?;
        if let Some(from) = from {
            writeln!(out, "from :{from}")?;
        }
        for c in &changes {
            writeln!(out, "{c}")?;
        }
        writeln!(out)?;
        Ok(mark)
    };
    let mut prev = None;
    for n in 0..COMMITS {
        let m = commit(out, &mut rng, &mut files, "main", prev, n)?;
        commit_marks.push(m);
        prev = Some(m);
    }
    let mut branch_files = files.clone();
    let mut from = Some(commit_marks[COMMITS * 9 / 10]);
    for n in 0..50 {
        from = Some(commit(
            out,
            &mut rng,
            &mut branch_files,
            "release",
            from,
            COMMITS + n,
        )?);
    }
    for (i, m) in commit_marks.iter().enumerate().step_by(200) {
        writeln!(out, "tag v{i}\nfrom :{m}")?;
        writeln!(out, "tagger Ark Bench <bench@ark.invalid> 1700000000 +0000")?;
        data(out, format!("release {i}\n").as_bytes())?;
    }
    Ok(())
}

/// Builds the upstream bare repository `root/up.git` and returns
/// (commits, objects, pack bytes) as `git count-objects` sees them.
fn build_upstream(root: &Path) -> anyhow::Result<(usize, u64, u64)> {
    let bare = root.join("up.git");
    std::fs::create_dir_all(&bare)?;
    git(&bare, &["init", "--bare", "-q", "-b", "main"])?;
    let stream = root.join("up.fi");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&stream)?);
    fast_import_stream(&mut out)?;
    out.flush()?;
    drop(out);
    let status = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&bare)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(std::fs::File::open(&stream)?)
        .stdout(Stdio::null())
        .status()?;
    ensure!(status.success(), "git fast-import failed");
    std::fs::remove_file(&stream)?;
    // What a served repository looks like: one packed, delta-compressed pack.
    git(&bare, &["gc", "-q", "--prune=now"])?;
    let commits = git(&bare, &["rev-list", "--all", "--count"])?
        .trim()
        .parse()?;
    let counts = git(&bare, &["count-objects", "-v"])?;
    let field = |key: &str| -> u64 {
        counts
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok((commits, field("in-pack:"), field("size-pack:") * 1024))
}

fn git_kind(root: &Path) -> anyhow::Result<()> {
    eprintln!("kinds: building the upstream ({COMMITS} commits, {FILES} files)");
    let (commits, objects, pack_bytes) = build_upstream(root)?;
    let origin = GitHttp::start(root)?;
    let url = origin.url("up.git");
    let never = AtomicBool::new(false);

    // 1. First mirror: gix vs git clone --mirror, alternating.
    eprintln!("kinds: git clone --mirror vs ark mirror ({CLONE_RUNS} runs each)");
    let (mut ark, mut cli) = (Vec::new(), Vec::new());
    let (mut ark_requests, mut cli_requests) = (0, 0);
    let ark_dir = root.join("ark.git");
    let cli_dir = root.join("cli.git");
    let mut refs = Refs::new();
    for _ in 0..CLONE_RUNS {
        let _ = std::fs::remove_dir_all(&ark_dir);
        let _ = std::fs::remove_dir_all(&cli_dir);
        let before = origin.requests().len();
        let (t, r) = timed(|| Ok(ark_agent::git::mirror(&url, &ark_dir, &never)?))?;
        ark.push(t);
        refs = r;
        ark_requests = origin.requests().len() - before;
        let before = origin.requests().len();
        let (t, _) = timed(|| {
            run(
                "git",
                &["clone", "--mirror", "-q", &url, path_str(&cli_dir)?],
            )
        })?;
        cli.push(t);
        cli_requests = origin.requests().len() - before;
    }
    ensure!(
        refs == git_refs(&cli_dir)?,
        "the ark mirror's refs differ from git clone --mirror's"
    );
    let (ark_s, cli_s) = (median(ark), median(cli));
    println!(
        "KIND git_clone commits={commits} objects={objects} pack_bytes={pack_bytes} refs={} ark_s={ark_s:.3} git_s={cli_s:.3} ratio={:.2} ark_requests={ark_requests} git_requests={cli_requests} runs={CLONE_RUNS}",
        refs.len(),
        ark_s / cli_s
    );

    // 2. Refetch of the unchanged upstream.
    eprintln!("kinds: no-op refetch ({RUNS} runs each)");
    let (mut ark, mut cli) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let before = origin.requests().len();
        let (t, again) = timed(|| Ok(ark_agent::git::mirror(&url, &ark_dir, &never)?))?;
        ensure!(
            again == refs,
            "refetch of an unchanged upstream changed the refs"
        );
        ark.push(t);
        ark_requests = origin.requests().len() - before;
        let before = origin.requests().len();
        let (t, _) = timed(|| {
            run(
                "git",
                &[
                    "-C",
                    path_str(&cli_dir)?,
                    "fetch",
                    "-q",
                    "--prune",
                    "origin",
                    "+refs/*:refs/*",
                ],
            )
        })?;
        cli.push(t);
        cli_requests = origin.requests().len() - before;
    }
    let (ark_s, cli_s) = (median(ark), median(cli));
    println!(
        "KIND git_fetch ark_s={ark_s:.3} git_s={cli_s:.3} ratio={:.2} ark_requests={ark_requests} git_requests={cli_requests} runs={RUNS}",
        ark_s / cli_s
    );
    drop(origin);

    // 3. The bundle the agent sends and the commander's checks.
    eprintln!("kinds: bundle, check_bundle, check_repo vs git fsck --full ({RUNS} runs each)");
    let bundle = root.join("up.bundle");
    let (mut write, mut check, mut repo_check, mut fsck_cli, mut fsck_landed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut summary = None;
    let mut checked = None;
    let landed = root.join("nas/up.git");
    for i in 0..RUNS {
        let (t, s) = timed(|| {
            let file = std::io::BufWriter::new(std::fs::File::create(&bundle)?);
            Ok(ark_agent::git::write_bundle(
                &ark_dir,
                &refs,
                &Refs::new(),
                file,
            )?)
        })?;
        write.push(t);
        summary = Some(s);
        let scratch = root.join(format!("scratch-{i}"));
        std::fs::create_dir_all(&scratch)?;
        let (t, c) = timed(|| {
            Ok(ark_commander::git_check::check_bundle(
                &bundle,
                &root.join("no-mirror-yet.git"),
                &scratch,
            )?)
        })?;
        check.push(t);
        if checked.is_none() {
            std::fs::create_dir_all(root.join("nas"))?;
            ark_commander::git_check::apply(&c, &landed, "run-1")?;
            checked = Some(c);
        } else {
            std::fs::remove_dir_all(&scratch)?;
        }
        let (t, report) = timed(|| Ok(ark_commander::git_check::check_repo(&landed)?))?;
        ensure!(
            report.refs == refs.len(),
            "check_repo saw {} refs",
            report.refs
        );
        repo_check.push(t);
        fsck_cli.push(
            timed(|| {
                run(
                    "git",
                    &["-C", path_str(&cli_dir)?, "fsck", "--full", "--no-progress"],
                )
            })?
            .0,
        );
        fsck_landed.push(
            timed(|| {
                run(
                    "git",
                    &["-C", path_str(&landed)?, "fsck", "--full", "--no-progress"],
                )
            })?
            .0,
        );
    }
    let summary = summary.context("no bundle written")?;
    let bundle_bytes = std::fs::metadata(&bundle)?.len();
    let (write_s, check_s, repo_s, fsck_s, fsck_landed_s) = (
        median(write),
        median(check),
        median(repo_check),
        median(fsck_cli),
        median(fsck_landed),
    );
    println!(
        "KIND git_check bundle_objects={} bundle_bytes={bundle_bytes} write_bundle_s={write_s:.3} check_bundle_s={check_s:.3} check_repo_s={repo_s:.3} fsck_s={fsck_s:.3} fsck_landed_s={fsck_landed_s:.3} ratio_check_repo={:.2} ratio_check_bundle={:.2} ratio_check_repo_same_repo={:.2} runs={RUNS}",
        summary.objects,
        repo_s / fsck_s,
        check_s / fsck_s,
        repo_s / fsck_landed_s,
    );
    Ok(())
}

/// Git mirrors at upstream's size (issue 14), on `up` served over smart
/// HTTP: the agent mirrors it (what upstream sent is the pack that arrived
/// in the agent's mirror); the first bundle (nothing known) against that
/// pack; the commander's check of it (no mirror yet) against `git fsck
/// --full` of a `git clone --mirror` of the same upstream, alternating,
/// median of [`PACK_RUNS`]; then [`NEW_COMMITS`] commits upstream, each
/// editing the largest file of `main`: the pack upstream sent for the
/// refetch against the thin bundle of what the landed mirror lacks, and its
/// check against the landed mirror. Prints one `PACK <name> key=value…`.
fn git_pack(root: &Path, name: &str, up: &Upstream) -> anyhow::Result<()> {
    let repos = up.bare.parent().context("upstream in a directory")?;
    let served = pack_bytes(&up.bare)?;
    let origin = GitHttp::start(repos)?;
    let url = origin.url(
        up.bare
            .file_name()
            .and_then(|n| n.to_str())
            .context("upstream name")?,
    );
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    let never = AtomicBool::new(false);

    // 1. The agent's mirror: what upstream sent is the pack it received.
    let mirror = dir.join("agent.git");
    let (mirror_s, refs) = timed(|| Ok(ark_agent::git::mirror(&url, &mirror, &never)?))?;
    let sent = pack_bytes(&mirror)?;
    let cli = dir.join("cli.git");
    run("git", &["clone", "-q", "--mirror", &url, path_str(&cli)?])?;
    let objects = count(&cli, &["rev-list", "--all", "--objects"])?;
    let commits = count(&cli, &["rev-list", "--all"])?;

    // 2. The first bundle and its check, against git fsck --full.
    let bundle = dir.join("first.bundle");
    let (write_s, summary) = timed(|| {
        let file = std::io::BufWriter::new(std::fs::File::create(&bundle)?);
        Ok(ark_agent::git::write_bundle(
            &mirror,
            &refs,
            &Refs::new(),
            file,
        )?)
    })?;
    let bundle_bytes = std::fs::metadata(&bundle)?.len();
    let (mut check, mut fsck) = (Vec::new(), Vec::new());
    let landed = dir.join("nas.git");
    for i in 0..PACK_RUNS {
        let fsck_once = || -> anyhow::Result<f64> {
            Ok(timed(|| {
                run(
                    "git",
                    &["-C", path_str(&cli)?, "fsck", "--full", "--no-progress"],
                )
            })?
            .0)
        };
        if i % 2 == 1 {
            fsck.push(fsck_once()?);
        }
        let scratch = dir.join(format!("scratch-{i}"));
        std::fs::create_dir_all(&scratch)?;
        let (t, checked) = timed(|| {
            Ok(ark_commander::git_check::check_bundle(
                &bundle,
                &dir.join("no-mirror-yet.git"),
                &scratch,
            )?)
        })?;
        check.push(t);
        if i == 0 {
            ark_commander::git_check::apply(&checked, &landed, "run-1")?;
        }
        std::fs::remove_dir_all(&scratch)?;
        if i % 2 == 0 {
            fsck.push(fsck_once()?);
        }
    }
    landed_whole(&landed, &refs)?;
    let (check_s, fsck_s) = (median(check), median(fsck));

    // 3. New commits upstream: the refetch against the thin bundle.
    let (path, content) = largest_file(&up.work)?;
    for n in 0..NEW_COMMITS {
        let mut lines: Vec<&str> = content.lines().collect();
        let at = (n * 7919) % lines.len().max(1);
        let edit = format!("edited by the bench, commit {n}");
        if lines.is_empty() {
            lines.push(&edit);
        } else {
            lines[at] = &edit;
        }
        up.commit(&path, &(lines.join("\n") + "\n"))?;
    }
    // `main` only: `Upstream::push` prunes what the work clone lacks (the
    // real repository's other branches).
    git(&up.work, &["push", "-q", "origin", "HEAD"])?;
    let before = pack_bytes(&mirror)?;
    let known = landed_refs(&landed)?;
    let (refetch_s, refs) = timed(|| Ok(ark_agent::git::mirror(&url, &mirror, &never)?))?;
    let fetched = pack_bytes(&mirror)? - before;
    let thin = dir.join("thin.bundle");
    let thin_summary = {
        let file = std::io::BufWriter::new(std::fs::File::create(&thin)?);
        ark_agent::git::write_bundle(&mirror, &refs, &known, file)?
    };
    let thin_bytes = std::fs::metadata(&thin)?.len();
    let scratch = dir.join("scratch-thin");
    std::fs::create_dir_all(&scratch)?;
    let (thin_check_s, checked) = timed(|| {
        Ok(ark_commander::git_check::check_bundle(
            &thin, &landed, &scratch,
        )?)
    })?;
    ark_commander::git_check::apply(&checked, &landed, "run-2")?;
    landed_whole(&landed, &refs)?;

    println!(
        "PACK {name} commits={commits} objects={objects} refs={} served_pack_bytes={served} upstream_sent_bytes={sent} mirror_s={mirror_s:.3} bundle_bytes={bundle_bytes} bundle_pack_bytes={} bundle_objects={} deltas={} ratio_bytes={:.3} write_bundle_s={write_s:.3} check_bundle_s={check_s:.3} fsck_s={fsck_s:.3} ratio_check={:.2} new_commits={NEW_COMMITS} edited={path} refetch_sent_bytes={fetched} refetch_s={refetch_s:.3} thin_bundle_bytes={thin_bytes} thin_objects={} thin_deltas={} thin_check_s={thin_check_s:.3} runs={PACK_RUNS}",
        refs.len(),
        summary.pack_bytes,
        summary.objects,
        summary.deltas,
        bundle_bytes as f64 / sent as f64,
        check_s / fsck_s,
        thin_summary.objects,
        thin_summary.thin_deltas,
    );
    Ok(())
}

/// The largest text file (no NUL byte) of `main` in the work clone, and
/// its text.
fn largest_file(work: &Path) -> anyhow::Result<(String, String)> {
    let listing = git(work, &["ls-tree", "-r", "-l", "HEAD"])?;
    let mut files: Vec<(u64, String)> = listing
        .lines()
        .filter_map(|line| {
            let (meta, path) = line.split_once('\t')?;
            let size: u64 = meta.split_whitespace().nth(3)?.parse().ok()?;
            meta.contains(" blob ").then(|| (size, path.to_string()))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .rev()
        .find_map(|(_, path)| {
            let bytes = std::fs::read(work.join(&path)).ok()?;
            let text = String::from_utf8(bytes).ok()?;
            (!text.contains('\0')).then_some((path, text))
        })
        .context("no text file on main")
}

/// The landed mirror holds `refs` and `git fsck --full --strict` passes.
fn landed_whole(landed: &Path, refs: &Refs) -> anyhow::Result<()> {
    ensure!(
        landed_refs(landed)? == *refs,
        "the refs of the landed mirror {} differ from upstream's",
        landed.display()
    );
    let dir = path_str(landed)?;
    run(
        "git",
        &["-C", dir, "fsck", "--full", "--strict", "--no-progress"],
    )?;
    Ok(())
}

/// The landed mirror's refs, the commander's `refs/ark/` aside.
fn landed_refs(mirror: &Path) -> anyhow::Result<Refs> {
    let mut refs = ls_remote(mirror)?;
    refs.retain(|name, _| !name.starts_with("refs/ark/"));
    Ok(refs)
}

fn count(repo: &Path, args: &[&str]) -> anyhow::Result<usize> {
    Ok(git(repo, args)?.lines().count())
}

/// The refs of a bare repository (`refs/…` only, as `mirror` returns them).
fn git_refs(dir: &Path) -> anyhow::Result<Refs> {
    Ok(ark_agent::git::fixture::ls_remote(dir)?)
}

fn zim_kind(path: &Path) -> anyhow::Result<()> {
    eprintln!(
        "kinds: zim_check::check vs zimcheck -A on {} ({RUNS} runs each)",
        path.display()
    );
    let (mut ark, mut cli) = (Vec::new(), Vec::new());
    let (mut entries, mut ark_pass, mut cli_pass) = (0, true, true);
    for _ in 0..RUNS {
        let (t, report) = timed(|| Ok(ark_commander::zim_check::check(path)?))?;
        if !report.ok() {
            eprintln!("kinds: Ark rejects {}: {}", path.display(), report.reason());
            ark_pass = false;
        }
        entries = report.entries;
        ark.push(t);
        // zimcheck exits non-zero on a failing file: time it either way.
        let (t, out) = timed(|| {
            Command::new("zimcheck")
                .args(["-A", path_str(path)?])
                .output()
                .context("running zimcheck")
        })?;
        cli_pass &= out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("Overall Test Status: Pass");
        cli.push(t);
    }
    let (ark_s, cli_s) = (median(ark), median(cli));
    println!(
        "KIND zim file={} bytes={} entries={entries} ark_pass={ark_pass} zimcheck_pass={cli_pass} ark_s={ark_s:.4} zimcheck_s={cli_s:.4} ratio={:.3} runs={RUNS}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
        std::fs::metadata(path)?.len(),
        ark_s / cli_s
    );
    Ok(())
}

/// An RSS 2.0 feed of [`FEED_ITEMS`] items, newest first, each with a
/// guid, title, link, pubDate, ~[`DESCRIPTION_BYTES`] description and one
/// enclosure.
fn rss_feed() -> String {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel>\
         <title>Ark bench podcast</title><link>http://127.0.0.1/</link>\
         <description>generated by bench/src/kinds.rs</description>\n",
    );
    for i in (0..FEED_ITEMS).rev() {
        let mut description = String::new();
        while description.len() < DESCRIPTION_BYTES {
            description.push_str(&rng.line());
            description.push_str(". ");
        }
        // A valid RFC 2822 date per item (the weekday is optional).
        let (year, day_of_year) = (2000 + i / 365, i % 365);
        let (month, day) = (1 + day_of_year / 31, 1 + day_of_year % 28);
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ][month.min(12) - 1];
        s.push_str(&format!(
            "<item><guid isPermaLink=\"false\">urn:ark-bench:{i}</guid><title>Episode {i}</title>\
             <link>http://127.0.0.1/ep/{i}</link><pubDate>{day:02} {month} {year} 10:00:00 +0000</pubDate>\
             <description>{description}</description>\
             <enclosure url=\"http://127.0.0.1/media/ep{i}.mp3\" length=\"{}\" type=\"audio/mpeg\"/></item>\n",
            1_000_000 + i
        ));
    }
    s.push_str("</channel></rss>\n");
    s
}

fn feed_kind(root: &Path) -> anyhow::Result<()> {
    let feed = rss_feed();
    let base = "http://127.0.0.1/feed.xml";
    eprintln!("kinds: feed::parse of {FEED_ITEMS} items ({RUNS} runs)");
    let mut parse = Vec::new();
    for _ in 0..RUNS {
        let (t, parsed) = timed(|| {
            ark_commander::feed::parse(feed.as_bytes(), base).map_err(anyhow::Error::msg)
        })?;
        ensure!(
            parsed.entries.len() == FEED_ITEMS,
            "parsed {} entries",
            parsed.entries.len()
        );
        parse.push(t);
    }
    let parse_s = median(parse);

    // Baseline: the Python a hand-rolled harvester would use, timed inside
    // the interpreter (no start-up), parse plus a walk of the items' fields.
    let feed_path = root.join("feed.xml");
    std::fs::write(&feed_path, &feed)?;
    let python = run(
        "python3",
        &[
            "-c",
            "import sys, time, xml.etree.ElementTree as ET\n\
             ts = []\n\
             for _ in range(5):\n\
             \x20   t = time.perf_counter()\n\
             \x20   items = ET.parse(sys.argv[1]).getroot().findall('./channel/item')\n\
             \x20   rows = [(i.findtext('guid'), i.findtext('title'), i.findtext('pubDate'), i.findtext('description'), i.find('enclosure').get('url')) for i in items]\n\
             \x20   ts.append(time.perf_counter() - t)\n\
             assert len(rows) == int(sys.argv[2])\n\
             print(sorted(ts)[2])",
            path_str(&feed_path)?,
            &FEED_ITEMS.to_string(),
        ],
    )
    .ok()
    .and_then(|s| s.trim().parse::<f64>().ok());

    eprintln!("kinds: feed::sync of the landed snapshot (1 run: it writes {FEED_ITEMS} files)");
    let dir = root.join("commander");
    std::fs::create_dir_all(&dir)?;
    let store = Arc::new(Store::open(&dir.join("state.sqlite"))?);
    let scheduler = Scheduler::new(store.clone(), CommanderConfig::default());
    let archive = Archive::new(dir.join("archive"), 3);
    archive.create()?;
    store.tx(|tx| {
        let target = ark_proto::AddTargetRequest {
            kind: ark_core::Kind::Rss.as_str().into(),
            url: base.into(),
            name: "podcast".into(),
            ..Default::default()
        };
        state::add_target(tx, &target, 1).map(drop)
    })?;
    let run_id = scheduler.run_now("podcast", 1)?.id;
    std::fs::write(archive.quarantined(run_id).0, &feed)?;
    let new = NewVersion {
        target: "podcast".into(),
        kind: ark_core::Kind::Rss.as_str().into(),
        run_id,
        agent: "bench".into(),
        cert_sha256: String::new(),
        manifest: b"{}".to_vec(),
        signature: Vec::new(),
        url: base.into(),
        etag: String::new(),
        last_modified: String::new(),
        size: feed.len() as u64,
        blake3: blake3::hash(feed.as_bytes()).to_hex().to_string(),
    };
    let version = archive.land(
        &store,
        &new,
        &Source::Quarantine,
        2,
        |_| Ok(()),
        |_, _, ()| Ok(()),
    )?;
    let (sync_s, report) = timed(|| Ok(ark_commander::feed::sync(&archive, &store, &version, 3)?))?;
    ensure!(
        report.new == FEED_ITEMS && report.media_queued == FEED_ITEMS,
        "sync derived {report:?}"
    );
    let (resync_s, again) =
        timed(|| Ok(ark_commander::feed::sync(&archive, &store, &version, 4)?))?;
    ensure!(
        again.new == 0,
        "a second sync of the same snapshot found {} new",
        again.new
    );
    // The floor under `sync`: the same number of ~1 KiB entry-sized files
    // written with `write_atomic` (temp, fsync, rename) and nothing else,
    // measured on FLOOR_FILES files and scaled per file.
    let floor_dir = dir.join("floor");
    std::fs::create_dir_all(&floor_dir)?;
    let body = vec![b'x'; 1024];
    let (floor_s, ()) = timed(|| {
        for i in 0..FLOOR_FILES {
            ark_core::write_atomic(&floor_dir.join(format!("{i}.json")), &body, 0o644)?;
        }
        Ok(())
    })?;
    let floor_per_s = FLOOR_FILES as f64 / floor_s;
    println!(
        "KIND feed items={FEED_ITEMS} bytes={} parse_s={parse_s:.3} parse_per_s={:.0} python_s={} python_per_s={} ratio_parse_python={} sync_s={sync_s:.3} sync_per_s={:.0} media_queued={} resync_s={resync_s:.3} floor_files={FLOOR_FILES} floor_per_s={floor_per_s:.0} runs={RUNS}",
        feed.len(),
        FEED_ITEMS as f64 / parse_s,
        python.map_or("-".into(), |p| format!("{p:.3}")),
        python.map_or("-".into(), |p| format!("{:.0}", FEED_ITEMS as f64 / p)),
        python.map_or("-".into(), |p| format!("{:.2}", parse_s / p)),
        FEED_ITEMS as f64 / sync_s,
        report.media_queued,
    );
    Ok(())
}
