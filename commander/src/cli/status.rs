//! `ark-commander status`: the one-screen overview (agents, runs, the
//! archive), from the running commander.

use std::path::Path;

use ark_proto::StatusRequest;
use serde_json::json;

use super::output::{ago, human_bytes, print_json, rpc, ListArgs};

pub async fn run(data: &Path, url: Option<&str>, args: ListArgs) -> anyhow::Result<()> {
    let mut admin = crate::admin::connect(data, url)?;
    let s = admin
        .status(StatusRequest {})
        .await
        .map_err(rpc("asking for status"))?
        .into_inner();
    if args.json {
        return print_json(&json!({
            "swarm_paused": s.swarm_paused, "agents_online": s.agents_online, "agents_lost": s.agents_lost,
            "runs_queued": s.runs_queued, "runs_leased": s.runs_leased, "runs_succeeded": s.runs_succeeded,
            "runs_failed": s.runs_failed, "runs_unchanged": s.runs_unchanged, "targets": s.targets, "version": s.commander_version, "listen": s.listen,
            "archive_versions": s.archive_versions, "archive_bytes": s.archive_bytes,
            "last_landed_at_ms": (s.last_landed_at_ms > 0).then_some(s.last_landed_at_ms),
            "stale": s.stale,
            "yielding": s.yielding, "pause_rule_errors": s.pause_rule_errors,
        }));
    }
    println!(
        "commander {} at {}{}",
        s.commander_version,
        s.listen,
        if s.swarm_paused { "  [PAUSED]" } else { "" }
    );
    println!(
        "agents    {} online, {} lost",
        s.agents_online, s.agents_lost
    );
    println!(
        "runs      {} queued, {} leased, {} succeeded, {} unchanged, {} failed",
        s.runs_queued, s.runs_leased, s.runs_succeeded, s.runs_unchanged, s.runs_failed
    );
    println!("targets   {} ({} stale)", s.targets, s.stale.len());
    println!(
        "archive   {} versions, {}; last landing {}",
        s.archive_versions,
        human_bytes(s.archive_bytes),
        ago(s.last_landed_at_ms)
    );
    for stale in &s.stale {
        println!("STALE     {stale}");
    }
    for rule in &s.yielding {
        println!("YIELDING  to {rule}");
    }
    for rule in &s.pause_rule_errors {
        println!("RULE      {rule}");
    }
    Ok(())
}
