//! `GET /api/state`: one snapshot of the swarm for the dashboard, read in
//! one go from the state database through the same functions the admin
//! service uses (`state::list_agents`, `state::list_runs`,
//! `archive::landed`, `state::swarm_paused`). The shape is what the page
//! renders; it is not a stable API (the admin gRPC service is).

use std::collections::BTreeMap;

use rusqlite::Connection;
use serde::Serialize;

use crate::{archive, state, Result};

/// Runs the dashboard lists: the latest ones.
pub const RUNS_SHOWN: u32 = 50;

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub now_ms: i64,
    pub swarm_paused: bool,
    pub agents: Vec<Agent>,
    pub runs: Vec<Run>,
    pub archive: Vec<KindSummary>,
    /// Targets past their maximum age or failing, with why.
    pub stale: Vec<Stale>,
    /// The pause rules the swarm yields to now, and every rule's standing.
    pub yielding: Vec<String>,
    pub pause_rules: Vec<crate::household::RuleState>,
}

#[derive(Debug, Serialize)]
pub struct Stale {
    pub target: String,
    pub kind: String,
    pub reason: String,
    /// When its newest version was last confirmed current (0: never).
    pub confirmed_at_ms: i64,
}

#[derive(Debug, Serialize)]
pub struct Agent {
    pub name: String,
    /// online | lost | enrolled (never seen).
    pub state: String,
    pub paused: bool,
    pub arch: String,
    pub os: String,
    pub cores: u32,
    pub cpu_percent: Option<f32>,
    pub load_average_1m: Option<f32>,
    pub temperature_celsius: Option<f32>,
    pub free_disk_bytes: Option<u64>,
    /// The agent announces its staging disk low (see Telemetry.low_disk).
    pub low_disk: bool,
    pub last_seen_ms: i64,
    pub jobs: Vec<Job>,
    /// Harvests another agent confirmed, and why it is suspect ("" when not).
    pub confirmed: u64,
    pub suspect: String,
}

/// A run an agent holds a lease on, with its progress.
#[derive(Debug, Serialize)]
pub struct Job {
    pub run_id: i64,
    pub target: String,
    pub kind: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub bytes_per_second: u64,
}

#[derive(Debug, Serialize)]
pub struct Run {
    pub id: i64,
    pub target: String,
    pub kind: String,
    pub state: String,
    pub agent: String,
    pub size_bytes: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub reason: String,
    /// Its latest placement: who was chosen and why not the others.
    pub placement: String,
    pub created_at_ms: i64,
    pub finished_at_ms: i64,
}

#[derive(Debug, Serialize)]
pub struct KindSummary {
    pub kind: String,
    pub versions: u64,
    pub bytes: u64,
    pub targets: Vec<TargetSummary>,
}

#[derive(Debug, Serialize)]
pub struct TargetSummary {
    pub target: String,
    pub versions: u64,
    pub bytes: u64,
}

/// Reads the snapshot; `lost_after_ms` as for the admin service.
///
/// Long by design: the dashboard's JSON, built section by section.
pub fn snapshot(
    conn: &Connection,
    now: i64,
    (lost_after_ms, max_age_ms): (i64, u64),
) -> Result<Snapshot> {
    let mut agents = Vec::new();
    for info in state::list_agents(conn, now, lost_after_ms)? {
        let caps = info.capabilities.unwrap_or_default();
        let telemetry = info.telemetry;
        let mut jobs = Vec::new();
        for id in &info.running {
            let run = state::run(conn, *id)?;
            jobs.push(Job {
                run_id: run.id,
                target: run.target,
                kind: run.kind,
                bytes_done: run.bytes_done,
                bytes_total: run.bytes_total,
                bytes_per_second: run.bytes_per_second,
            });
        }
        agents.push(Agent {
            name: info.name,
            state: info.state,
            paused: info.paused,
            arch: caps.arch,
            os: caps.os,
            cores: caps.cores,
            cpu_percent: telemetry.as_ref().map(|t| t.cpu_percent),
            load_average_1m: telemetry.as_ref().map(|t| t.load_average_1m),
            temperature_celsius: telemetry.as_ref().and_then(|t| t.temperature_celsius),
            free_disk_bytes: telemetry
                .as_ref()
                .map(|t| t.staging_free_bytes)
                .or((caps.staging_free_bytes > 0).then_some(caps.staging_free_bytes)),
            low_disk: telemetry.as_ref().is_some_and(|t| t.low_disk),
            last_seen_ms: info.last_seen_ms,
            jobs,
            confirmed: info.trust.as_ref().map_or(0, |t| t.confirmed),
            suspect: info.trust.map(|t| t.suspect).unwrap_or_default(),
        });
    }
    let runs = state::list_runs(conn, RUNS_SHOWN)?
        .into_iter()
        .map(|r| {
            Ok(Run {
                placement: state::placement_of(conn, r.id)?,
                id: r.id,
                target: r.target,
                kind: r.kind,
                state: r.state,
                agent: r.agent,
                size_bytes: r.size_bytes,
                bytes_done: r.bytes_done,
                bytes_total: r.bytes_total,
                reason: r.reason,
                created_at_ms: r.created_at_ms,
                finished_at_ms: r.finished_at_ms,
            })
        })
        .collect::<Result<_>>()?;
    let mut by_kind: BTreeMap<String, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    for v in archive::landed(conn, None)? {
        let entry = by_kind
            .entry(v.kind)
            .or_default()
            .entry(v.target)
            .or_default();
        entry.0 += 1;
        entry.1 += v.size;
    }
    let archive = by_kind
        .into_iter()
        .map(|(kind, targets)| KindSummary {
            kind,
            versions: targets.values().map(|t| t.0).sum(),
            bytes: targets.values().map(|t| t.1).sum(),
            targets: targets
                .into_iter()
                .map(|(target, (versions, bytes))| TargetSummary {
                    target,
                    versions,
                    bytes,
                })
                .collect(),
        })
        .collect();
    let stale = state::list_targets(conn, now, max_age_ms)?
        .into_iter()
        .filter(|t| !t.stale.is_empty())
        .map(|t| Stale {
            target: t.name,
            kind: t.kind,
            reason: t.stale,
            confirmed_at_ms: t.confirmed_at_ms,
        })
        .collect();
    let yielded = crate::household::current(conn)?;
    Ok(Snapshot {
        now_ms: now,
        swarm_paused: state::swarm_paused(conn)?,
        agents,
        runs,
        archive,
        stale,
        yielding: yielded
            .holding()
            .iter()
            .map(|r| format!("{}: {}", r.name, r.reading))
            .collect(),
        pause_rules: yielded.rules,
    })
}
