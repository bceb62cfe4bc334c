//! Shared output helpers: `--json` for listings, times and sizes for people,
//! and turning an RPC failure into an error that names the fix.

use ark_proto::{AgentInfo, RunInfo, TargetInfo};
use serde_json::{json, Value};

/// `--json` for a listing.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Wraps a failed admin call with what to do about it.
pub fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> anyhow::Error {
    move |status| anyhow::Error::new(ark_link::LinkError::rpc(call, status))
}

pub use ark_core::ago;

/// "1.5 MiB" style size, for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn target_json(t: &TargetInfo) -> Value {
    json!({"name": t.name, "kind": t.kind, "url": t.url, "every_ms": t.every_ms,
           "created_at_ms": t.created_at_ms, "next_due_ms": t.next_due_ms, "last_state": t.last_state,
           "keep": t.keep, "bandwidth_cap": t.bandwidth_cap, "max_size": t.max_size,
           "window": t.window, "quorum": t.quorum, "spot_check": t.spot_check,
           "book": t.book, "release": t.release, "upstream_newest": t.upstream_newest,
           "checked_at_ms": t.checked_at_ms, "confirmed_at_ms": t.confirmed_at_ms,
           "max_age_ms": t.max_age_ms, "stale": t.stale, "media": t.media,
           "keep_media": t.keep_media, "category": t.category, "account": t.account,
           "gone": t.gone, "lfs": t.lfs,
           "account_options": t.account_options.as_ref().map(|o| json!({
               "forge": o.forge, "token_file": o.token_file, "include": o.include,
               "exclude": o.exclude, "no_forks": o.no_forks, "no_archived": o.no_archived,
               "no_wikis": o.no_wikis}))})
}

pub fn run_json(r: &RunInfo) -> Value {
    json!({"id": r.id, "target": r.target, "kind": r.kind, "url": r.url, "state": r.state,
           "attempts": r.attempts, "agent": r.agent, "generation": r.generation,
           "created_at_ms": r.created_at_ms, "finished_at_ms": r.finished_at_ms,
           "lease_expires_at_ms": r.lease_expires_at_ms, "bytes_done": r.bytes_done,
           "size_bytes": r.size_bytes, "bytes_total": r.bytes_total,
           "bytes_per_second": r.bytes_per_second, "blake3": r.blake3, "reason": r.reason})
}

pub fn agent_json(a: &AgentInfo) -> Value {
    let caps = a.capabilities.clone().unwrap_or_default();
    let t = a.telemetry.unwrap_or_default();
    json!({"name": a.name, "state": a.state, "paused": a.paused, "running": a.running,
           "enrolled_at_ms": a.enrolled_at_ms, "last_seen_ms": a.last_seen_ms,
           "arch": caps.arch, "cores": caps.cores, "memory_bytes": caps.memory_bytes,
           "kinds": caps.kinds, "max_jobs": caps.max_jobs, "bandwidth_cap": caps.bandwidth_cap,
           "commander_bandwidth_cap": a.bandwidth_cap, "window": a.window,
           "version": caps.agent_version,
           "cpu_percent": t.cpu_percent, "memory_used_bytes": t.memory_used_bytes,
           "temperature_celsius": t.temperature_celsius, "staging_free_bytes": t.staging_free_bytes,
           "bytes_per_second": t.bytes_per_second, "load_average_1m": t.load_average_1m,
           "uplink": crate::state::uplink(&caps),
           "self_yield": {"on": a.self_yield,
               "backing_off": t.self_yield.is_some_and(|y| y.backing_off),
               "rate_limit": t.self_yield.map(|y| y.rate_limit).unwrap_or(0),
               "queuing_delay_ms": t.self_yield.map(|y| y.queuing_delay_ms).unwrap_or(0.0),
               "base_delay_ms": t.self_yield.map(|y| y.base_delay_ms).unwrap_or(0.0),
               "uplink_budget": t.self_yield.map(|y| y.uplink_budget).unwrap_or(0)},
           "trust": a.trust.as_ref().map(|t| json!({"confirmed": t.confirmed,
               "disputes_lost": t.disputes_lost, "spot_checks_failed": t.spot_checks_failed,
               "suspect": t.suspect, "revoked_at_ms": t.revoked_at_ms}))})
}

pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_like_a_person_would_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
        assert_eq!(human_bytes(3 << 40), "3.0 TiB");
    }
}
