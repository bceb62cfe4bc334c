//! Staged bytes kept after a lease ran out while the commander was
//! unreachable. A partition is not a failure of the job: the bytes are
//! sound (their resume state is durable), and the commander, once back,
//! usually leases the run to this agent again — it prefers the agent that
//! keeps a run's bytes — so the fetch resumes where they end. The agent
//! names the runs it keeps in every heartbeat; the commander answers which
//! it will not give back (the run ended, or went to another agent: this
//! agent is fenced), and those are removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tracing::info;

use super::JobHandle;

/// The staged files (`<run>-<target>.part`) in `staging` whose run this
/// agent holds no lease for, by run.
pub fn kept(staging: &Path, jobs: &HashMap<i64, JobHandle>) -> HashMap<i64, PathBuf> {
    std::fs::read_dir(staging)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let run: i64 = name
                .strip_suffix(".part")?
                .split('-')
                .next()?
                .parse()
                .ok()?;
            (!jobs.contains_key(&run)).then(|| (run, entry.path()))
        })
        .collect()
}

/// Removes the kept bytes of `runs` (the commander will not give them back).
pub async fn drop_kept(staging: &Path, jobs: &HashMap<i64, JobHandle>, runs: &[i64]) {
    if runs.is_empty() {
        return;
    }
    let kept = kept(staging, jobs);
    for run in runs {
        if let Some(path) = kept.get(run) {
            info!(run, path = %path.display(), "the run ended or went to another agent: dropping its kept bytes");
            crate::fetch::remove_staged(path).await;
        }
    }
}
