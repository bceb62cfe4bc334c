//! The invariant checker, run once the swarm has settled: it reads the
//! commander's books (state.sqlite, read-only, as an operator's sqlite3
//! would), the archive through the real CLI, and the agents' data dirs,
//! and lists every invariant that does not hold. It also gathers the
//! counts the soak prints.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Result;
use ark_tests::*;
use rusqlite::{Connection, OpenFlags};

use crate::origins::Origins;

/// States a run may end in.
const FINAL: [&str; 3] = ["succeeded", "unchanged", "failed"];

/// One row of `runs`.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: i64,
    pub target: String,
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    /// Leases granted for it: more than one when it moved (its agent
    /// killed or cut off, its lease expired, a lease handed back).
    pub leases: i64,
    pub reason: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// One row of `events`.
#[derive(Debug, Clone)]
pub struct Event {
    pub run_id: Option<i64>,
    pub kind: String,
    pub message: String,
}

/// The commander's books as they are now.
pub struct Books {
    pub runs: Vec<Run>,
    pub events: Vec<Event>,
}

fn open(cdata: &Path) -> Result<Connection> {
    Ok(Connection::open_with_flags(
        cdata.join("state.sqlite"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?)
}

/// Runs not in a final state.
pub fn active_runs(cdata: &Path) -> Result<i64> {
    let db = open(cdata)?;
    let active = format!(
        "SELECT count(*) FROM runs WHERE state IN {}",
        ark_commander::state::run_state::ACTIVE_SQL
    );
    Ok(db.query_row(&active, [], |r| r.get(0))?)
}

/// The agents holding a lease on a big file's run now.
pub fn holding_big(cdata: &Path) -> Result<Vec<String>> {
    let db = open(cdata)?;
    let names = db
        .prepare(
            "SELECT DISTINCT last_agent FROM runs
              WHERE state = 'leased' AND target LIKE 'big%' AND last_agent IS NOT NULL",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

/// What the agents' logs say they did about cut transfers, by what.
pub fn resumes(logs: &str) -> BTreeMap<&'static str, usize> {
    let said = [
        (
            "download resumed (range request)",
            "body cut: resuming with a range request",
        ),
        (
            "download resumed after a restart",
            "resuming after re-verifying the bytes already on disk",
        ),
        (
            "range of another version: from 0",
            "bytes of another version: starting again from byte 0",
        ),
        (
            "origin could not resume: from 0",
            "origin cannot resume: starting again from byte 0",
        ),
        ("upload resumed", "resuming the upload at byte"),
    ];
    said.into_iter()
        .map(|(what, line)| (what, logs.matches(line).count()))
        .collect()
}

pub fn books(cdata: &Path) -> Result<Books> {
    let db = open(cdata)?;
    let runs = db
        .prepare(
            "SELECT id, target, kind, state, attempts,
                    (SELECT count(*) FROM leases l WHERE l.run_id = runs.id),
                    reason, created_at, finished_at FROM runs",
        )?
        .query_map([], |r| {
            Ok(Run {
                id: r.get(0)?,
                target: r.get(1)?,
                kind: r.get(2)?,
                state: r.get(3)?,
                attempts: r.get(4)?,
                leases: r.get(5)?,
                reason: r.get(6)?,
                created_at: r.get(7)?,
                finished_at: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let events = db
        .prepare("SELECT run_id, kind, message FROM events")?
        .query_map([], |r| {
            Ok(Event {
                run_id: r.get(0)?,
                kind: r.get(1)?,
                message: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Books { runs, events })
}

/// Whether an event is a refusal: something the swarm declined or that
/// failed, which must say why.
pub fn is_refusal(kind: &str) -> bool {
    [
        "refused",
        "failed",
        "cut",
        "no_space",
        "handed_back",
        "fenced",
        "expired",
        "interrupted",
    ]
    .iter()
    .any(|word| kind.contains(word))
}

/// Every invariant that does not hold, in words.
pub fn violations(
    cdata: &Path,
    agents: &[&Path],
    origins: &Origins,
    books: &Books,
) -> Result<Vec<String>> {
    let mut wrong = Vec::new();

    // Every run reached a final state; every failure says why.
    for run in &books.runs {
        if !FINAL.contains(&run.state.as_str()) {
            wrong.push(format!(
                "run {} ({}) is still {}",
                run.id, run.target, run.state
            ));
        } else if run.state == "failed" && run.reason.trim().is_empty() {
            wrong.push(format!(
                "run {} ({}) failed without a reason",
                run.id, run.target
            ));
        }
    }
    // Every refusal has a reason.
    for event in &books.events {
        if event.message.trim().is_empty() {
            wrong.push(format!(
                "a {} event (run {:?}) without a message",
                event.kind, event.run_id
            ));
        }
    }

    // Every landed version's bytes hash to its ledger root, and are bytes
    // the origin served at its URL.
    let landed = archive_ls(cdata)?;
    for version in &landed {
        let (id, kind) = (&version["id"], version["kind"].as_str().unwrap_or_default());
        let path = Path::new(version["absolute_path"].as_str().unwrap_or_default());
        let root = version["blake3"].as_str().unwrap_or_default();
        if path.is_file() {
            let bytes = std::fs::read(path)?;
            let hashed = blake3::hash(&bytes).to_hex().to_string();
            if hashed != root {
                wrong.push(format!(
                    "version {id} at {}: its bytes hash to {hashed}, the ledger says {root}",
                    path.display()
                ));
            }
            let url = version["url"].as_str().unwrap_or_default();
            if kind != "git" && !origins.served(url, root) {
                wrong.push(format!(
                    "version {id} ({kind}) at {}: {root} was never served at {url}",
                    path.display()
                ));
            }
        } else if kind != "git" {
            wrong.push(format!(
                "version {id} ({kind}): no file at {}",
                path.display()
            ));
        }
    }
    let (clean, out, err) = commander_cli(cdata, &["archive", "verify"])?;
    if !clean {
        wrong.push(format!("archive verify is not clean:\n{out}{err}"));
    }
    let (clean, out, err) = commander_cli(cdata, &["ingest"])?;
    if !clean {
        wrong.push(format!("ingest is not clean:\n{out}{err}"));
    }

    // No version landed twice: one version per run, and no target holds
    // the same bytes twice (the origins never serve a version again).
    let db = open(cdata)?;
    let twice: Vec<(i64, i64)> = db
        .prepare("SELECT run_id, count(*) FROM versions GROUP BY run_id HAVING count(*) > 1")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (run, n) in twice {
        wrong.push(format!("run {run} landed {n} versions"));
    }
    let same: Vec<(String, String, i64)> = db
        .prepare(
            "SELECT target, blake3, count(*) FROM versions WHERE kind != 'git'
             GROUP BY target, blake3 HAVING count(*) > 1",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (target, root, n) in same {
        wrong.push(format!("{target}: {root} landed {n} times"));
    }

    // No staging or quarantine file is orphaned.
    for agent in agents {
        for dir in ["staging", "leases"] {
            let kept = files_in(&agent.join(dir), |_| true);
            if !kept.is_empty() {
                let names: Vec<_> = kept.iter().map(|(name, _)| name).collect();
                wrong.push(format!("{} keeps {dir} files: {names:?}", agent.display()));
            }
        }
    }
    let held = quarantined(cdata);
    if !held.is_empty() {
        wrong.push(format!("the quarantine holds {held:?}"));
    }
    Ok(wrong)
}

/// The counts printed at the end of a soak.
pub fn report(books: &Books, landed_versions: usize) -> String {
    let mut out = String::new();
    let mut by_state: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for run in &books.runs {
        *by_state.entry((&run.kind, &run.state)).or_default() += 1;
    }
    out.push_str(&format!(
        "runs: {} ({} versions in the archive)\n",
        books.runs.len(),
        landed_versions
    ));
    for ((kind, state), n) in &by_state {
        out.push_str(&format!("  {kind:<6} {state:<10} {n:>5}\n"));
    }
    let retries: i64 = books.runs.iter().map(|r| (r.attempts - 1).max(0)).sum();
    let moved = |r: &&Run| r.attempts > 1 || r.leases > 1;
    let releases: i64 = books.runs.iter().map(|r| (r.leases - 1).max(0)).sum();
    let hit = books.runs.iter().filter(moved).count();
    out.push_str(&format!(
        "retries: {retries} attempts after the first, {releases} leases after the first ({hit} runs)\n"
    ));
    let mut refusals: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for event in books.events.iter().filter(|e| is_refusal(&e.kind)) {
        refusals.entry(&event.kind).or_insert((0, &event.message)).0 += 1;
    }
    let total: usize = refusals.values().map(|(n, _)| n).sum();
    out.push_str(&format!(
        "refusals: {total} (each with its reason; one shown)\n"
    ));
    for (kind, (n, example)) in &refusals {
        let example: String = example.chars().take(110).collect();
        out.push_str(&format!("  {kind:<20} {n:>5}  {example}\n"));
    }
    // Time lost: how much longer the runs that a fault hit (another
    // attempt or another lease) took than a run that none hit (the median
    // of those).
    let took = |r: &Run| r.finished_at.map(|f| f - r.created_at);
    let mut clean: Vec<i64> = books
        .runs
        .iter()
        .filter(|r| !moved(r))
        .filter_map(took)
        .collect();
    clean.sort();
    let median = clean.get(clean.len() / 2).copied().unwrap_or(0);
    let lost: i64 = books
        .runs
        .iter()
        .filter(moved)
        .filter_map(took)
        .map(|t| (t - median).max(0))
        .sum();
    out.push_str(&format!(
        "time lost to faults: {:.1} s over the {hit} runs they hit (a clean run's median: {:.1} s)\n",
        lost as f64 / 1000.0,
        median as f64 / 1000.0
    ));
    let reasons: HashMap<&str, usize> =
        books
            .runs
            .iter()
            .filter(|r| r.state == "failed")
            .fold(HashMap::new(), |mut m, r| {
                *m.entry(r.reason.split(':').next().unwrap_or_default())
                    .or_default() += 1;
                m
            });
    if !reasons.is_empty() {
        out.push_str("failed runs, by the start of their reason:\n");
        let mut reasons: Vec<_> = reasons.into_iter().collect();
        reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
        for (reason, n) in reasons {
            out.push_str(&format!("  {n:>4}  {reason}\n"));
        }
    }
    out
}
