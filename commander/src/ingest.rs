//! NAS ingestion: the landing side's upkeep, run on a schedule (a systemd
//! timer or cron) with the commander stopped or running.
//!
//! One pass, in order:
//! 1. recovery ([`crate::server::recover`]): half-landed versions finished
//!    or rolled back, interrupted prunes carried out, unclaimed quarantine
//!    files dropped, feed entries re-derived, git mirrors caught up. Only
//!    when no commander is serving: a running one recovered at its start,
//!    and a `landing` row it holds now is a landing in flight, not debris;
//! 2. verification ([`Archive::verify_since`]): versions landed since the
//!    last clean pass (the `ingest_last_ms` setting) re-hashed, older ones
//!    checked for presence and size; `full` re-hashes everything;
//! 3. retention ([`Archive::prune`]) for every target, except a target with
//!    a bad version: its older versions may be the only good copies;
//! 4. the files derived from the ledger, `zim/library.xml` and
//!    [`crate::archive::INDEX_FILE`], rewritten when their content changes.
//!
//! Idempotent: every step writes only what differs, and the watermark moves
//! only when a newer version was verified clean, so a second pass over an
//! unchanged archive writes nothing, to the archive or to the ledger.
//!
//! It owns none of those steps' logic, only their order and the report.

use serde::Serialize;

use crate::archive::{self, Archive};
use crate::scheduler::Scheduler;
use crate::state;
use crate::verify::VerifyReport;
use crate::Result;

/// Setting (in the `settings` table) holding the newest landing time
/// covered by the last clean pass: versions landed after it are re-hashed
/// by the next one.
pub const LAST_INGEST_SETTING: &str = "ingest_last_ms";

/// How a pass runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestOptions {
    /// Re-hash every landed version, not only those landed since the last
    /// clean pass.
    pub full: bool,
    /// A commander is serving from the same data dir: recovery is its job.
    pub commander_running: bool,
}

/// Retention applied to one target.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pruned {
    pub target: String,
    pub versions: usize,
}

/// What one pass did and found.
#[derive(Debug, Serialize)]
pub struct IngestReport {
    pub full: bool,
    /// Recovery was skipped because a commander is serving.
    pub commander_running: bool,
    /// Versions landed after this were re-hashed (None: all of them).
    pub verified_since_ms: Option<i64>,
    /// Half-landed versions finished (file in place, hash checked).
    pub finished: usize,
    /// Half-landed versions rolled back (the upload stays to resume).
    pub rolled_back: usize,
    pub verify: VerifyReport,
    /// Targets whose old versions retention removed.
    pub pruned: Vec<Pruned>,
    /// Targets not pruned because one of their versions is bad.
    pub prune_held: Vec<String>,
    /// `zim/library.xml` changed.
    pub library_written: bool,
    /// The archive index changed.
    pub index_written: bool,
    /// Landed versions and their bytes after the pass.
    pub versions: u64,
    pub bytes: u64,
    /// Targets past their maximum age or failing ("NAME: why"): the pass
    /// fails while there are any, so a scheduled job says so loudly.
    pub stale: Vec<String>,
}

impl IngestReport {
    /// Versions finished or rolled back.
    pub fn repaired(&self) -> usize {
        self.finished + self.rolled_back
    }

    /// Versions retention removed.
    pub fn pruned_versions(&self) -> usize {
        self.pruned.iter().map(|p| p.versions).sum()
    }

    /// Nothing is wrong with the archive: no bad version, stray file,
    /// missing entry or bad mirror.
    pub fn clean(&self) -> bool {
        self.verify.clean()
    }
}

/// Runs one pass over `archive` with `scheduler`'s store (see the module
/// notes). `each` sees every version as verification checks it.
pub fn ingest(
    scheduler: &Scheduler,
    archive: &Archive,
    options: IngestOptions,
    now: i64,
    each: impl FnMut(&crate::verify::Checked),
) -> Result<IngestReport> {
    let store = &scheduler.store;
    let (finished, rolled_back) = if options.commander_running {
        (0, 0)
    } else {
        crate::server::recover(scheduler, archive)?
    };

    let last: Option<i64> = store
        .read(|c| state::setting(c, LAST_INGEST_SETTING))?
        .and_then(|v| v.parse().ok());
    let since = if options.full { None } else { last };
    let verify = archive.verify_since(store, since, each)?;

    let bad_targets: std::collections::BTreeSet<String> = verify
        .bad
        .iter()
        .map(|c| c.version.target.clone())
        .collect();
    let targets: std::collections::BTreeSet<String> = store
        .read(|c| archive::landed(c, None))?
        .into_iter()
        .map(|v| v.target)
        .collect();
    let mut pruned = Vec::new();
    let mut prune_held = Vec::new();
    for target in targets {
        if bad_targets.contains(&target) {
            prune_held.push(target);
            continue;
        }
        let versions = archive.prune(store, &target, now)?;
        if versions > 0 {
            pruned.push(Pruned { target, versions });
        }
    }

    let library_written = archive.write_zim_library(store)?;
    let index_written = archive.write_index(store)?;
    let (versions, bytes, newest) = store.read(archive::totals)?;
    let max_age = scheduler.config.max_age.as_millis() as u64;
    let stale = store
        .read(|c| state::list_targets(c, now, max_age))?
        .into_iter()
        .filter(|t| !t.stale.is_empty())
        .map(|t| format!("{}: {}", t.name, t.stale))
        .collect();

    // The watermark moves only past a clean pass, so a problem keeps being
    // reported until someone fixes it.
    if verify.clean() {
        if let Some(newest) = newest.filter(|&n| last.is_none_or(|last| n > last)) {
            store.tx(|tx| state::set_setting(tx, LAST_INGEST_SETTING, &newest.to_string()))?;
        }
    }
    Ok(IngestReport {
        full: options.full,
        commander_running: options.commander_running,
        verified_since_ms: since,
        finished,
        rolled_back,
        verify,
        pruned,
        prune_held,
        library_written,
        index_written,
        versions,
        bytes,
        stale,
    })
}
