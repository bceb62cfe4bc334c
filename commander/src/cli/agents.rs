//! `ark-commander agents`: every enrolled agent with its telemetry.

use std::path::Path;

use ark_proto::ListAgentsRequest;

use super::output::{agent_json, ago, print_json, rpc, ListArgs};

pub async fn run(data: &Path, url: Option<&str>, args: ListArgs) -> anyhow::Result<()> {
    let mut admin = crate::admin::connect(data, url)?;
    let agents = admin
        .list_agents(ListAgentsRequest {})
        .await
        .map_err(rpc("listing agents"))?
        .into_inner()
        .agents;
    if args.json {
        return print_json(&agents.iter().map(agent_json).collect());
    }
    println!(
        "{:<16} {:<9} {:<7} {:<8} {:>5} {:>6} {:>7} {:>10} {:<8} SEEN",
        "NAME", "STATE", "PAUSED", "ARCH", "CPU%", "TEMP", "MEM%", "FREE GiB", "RUNNING"
    );
    for a in agents {
        let caps = a.capabilities.clone().unwrap_or_default();
        let t = a.telemetry.unwrap_or_default();
        let mem = if t.memory_total_bytes > 0 {
            format!(
                "{:.0}",
                100.0 * t.memory_used_bytes as f64 / t.memory_total_bytes as f64
            )
        } else {
            "-".into()
        };
        let temp = t
            .temperature_celsius
            .map(|c| format!("{c:.0}°C"))
            .unwrap_or_else(|| "-".into());
        let running: Vec<String> = a.running.iter().map(|r| r.to_string()).collect();
        println!(
            "{:<16} {:<9} {:<7} {:<8} {:>5.0} {:>6} {:>7} {:>10.1} {:<8} {}",
            a.name,
            a.state,
            a.paused,
            caps.arch,
            t.cpu_percent,
            temp,
            mem,
            t.staging_free_bytes as f64 / (1u64 << 30) as f64,
            running.join(","),
            ago(a.last_seen_ms)
        );
    }
    Ok(())
}
