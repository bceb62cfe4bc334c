//! `ark-commander ingest [--full] [--json]`: one pass of the NAS's upkeep
//! (see [`crate::ingest`]), for a systemd timer or cron. Opens the data dir
//! directly, like `archive`. Exit 0 when the archive matches its ledger,
//! 1 (with the report) when anything is wrong or the pass failed.

use std::path::Path;
use std::sync::Arc;

use super::archive::{ensure_clean, open, print_problems, VerifyProgress};
use super::output::{human_bytes, print_json};
use crate::ingest::{ingest, IngestOptions, IngestReport};
use crate::scheduler::Scheduler;

#[derive(Debug, clap::Args)]
pub struct IngestCmd {
    /// Re-hash every landed version, not only those landed since the last
    /// clean pass (older ones are otherwise checked for presence and size).
    #[arg(long)]
    full: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl IngestCmd {
    pub fn run(self, data: &Path) -> anyhow::Result<()> {
        let (store, archive, config) = open(data)?;
        let options = IngestOptions {
            full: self.full,
            commander_running: crate::server::running(data),
        };
        let scheduler = Scheduler::new(Arc::new(store), config).with_archive(archive.root());
        let json = self.json;
        let progress = VerifyProgress::new(&scheduler.store, json)?;
        let report = ingest(
            &scheduler,
            &archive,
            options,
            ark_core::unix_ms(),
            |checked| progress.checked(checked, !json && checked.problem.is_some()),
        )?;
        progress.finish();
        if json {
            print_json(&serde_json::to_value(&report)?)?;
        } else {
            print_report(&report, &archive);
        }
        ensure_clean(&report.verify)?;
        if !report.stale.is_empty() {
            anyhow::bail!(
                "{} stale target(s): {}; run them (`ark-commander run-now NAME`) or look at why they fail (`ark-commander runs`)",
                report.stale.len(),
                report.stale.join("; ")
            );
        }
        Ok(())
    }
}

fn print_report(r: &IngestReport, archive: &crate::archive::Archive) {
    print_problems(&r.verify);
    println!(
        "ingest of {} ({}{})",
        archive.location(),
        match r.verified_since_ms {
            Some(ms) => format!(
                "re-hashing versions landed after {}",
                crate::archive::stamp(ms)
            ),
            None => "re-hashing every version".to_string(),
        },
        if r.commander_running {
            "; a commander is serving, recovery left to it"
        } else {
            ""
        }
    );
    println!(
        "repaired  {} ({} finished, {} rolled back)",
        r.repaired(),
        r.finished,
        r.rolled_back
    );
    let v = &r.verify;
    println!(
        "verified  {} re-hashed ok ({}), {} present with the right size, {} bad, {} stray, \
         {} missing entries, {} bad mirrors",
        v.ok,
        human_bytes(v.bytes),
        v.sized,
        v.bad.len(),
        v.stray.len(),
        v.missing.len(),
        v.bad_mirrors.len()
    );
    let per_target: Vec<String> = r
        .pruned
        .iter()
        .map(|p| format!("{} of {}", p.versions, p.target))
        .collect();
    println!(
        "pruned    {}{}",
        r.pruned_versions(),
        if per_target.is_empty() {
            String::new()
        } else {
            format!(" ({})", per_target.join(", "))
        }
    );
    if !r.prune_held.is_empty() {
        println!(
            "held      retention not applied to {} (a version is bad; older ones may be the good copies)",
            r.prune_held.join(", ")
        );
    }
    let written: Vec<&str> = [
        (r.library_written, "zim/library.xml"),
        (r.index_written, crate::archive::INDEX_FILE),
    ]
    .into_iter()
    .filter_map(|(w, name)| w.then_some(name))
    .collect();
    println!(
        "written   {}",
        if written.is_empty() {
            "nothing".to_string()
        } else {
            written.join(", ")
        }
    );
    println!(
        "archive   {} versions, {}",
        r.versions,
        human_bytes(r.bytes)
    );
}
