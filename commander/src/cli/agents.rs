//! `ark-commander agents`: every enrolled agent with its telemetry; `agent
//! set NAME --bandwidth … --window … --yield on|off`: the operator's cap,
//! hours and self-yield for one.

use std::path::Path;

use ark_proto::{ClearTrustRequest, ListAgentsRequest, RevokeAgentRequest, SetAgentRequest};

use super::output::{agent_json, ago, print_json, rpc, ListArgs};
use super::target::parse_rate;

#[derive(Debug, clap::Subcommand)]
pub enum AgentCmd {
    /// Set an agent's download cap and the hours it takes new work.
    Set {
        name: String,
        /// Cap on the agent's total download rate, e.g. 5MB/s (0 clears);
        /// the agent applies the lower of this and its own `bandwidth-cap`.
        #[arg(long, value_parser = parse_rate)]
        bandwidth: Option<u64>,
        /// Hours it takes new work, local time, e.g. 01:00-06:00 or
        /// 22:00-06:00 (`always` clears). Running jobs finish either way.
        #[arg(long)]
        window: Option<String>,
        /// Whether it takes new work while on battery: allow or deny
        /// (`default` goes back to the commander's `on-battery`).
        #[arg(long, value_name = "allow|deny|default")]
        on_battery: Option<String>,
        /// °C at which it stops taking new work (0: the commander's
        /// `max-temp`).
        #[arg(long, value_name = "CELSIUS")]
        max_temp: Option<f32>,
        /// Self-yield: whether it backs off by itself when its transfers
        /// queue the uplink (on by default; `off` disables it).
        #[arg(long = "yield", value_name = "on|off", value_parser = parse_on_off)]
        self_yield: Option<bool>,
        #[arg(long)]
        json: bool,
    },
    /// Cut an agent off: its certificate is refused from its next call, its
    /// leases go to other agents at once, and nothing it sent that has not
    /// landed ever will. Enrolling it again needs a new token.
    Revoke { name: String },
    /// Revoke an agent and forget it (its history stays in the event log).
    Rm { name: String },
    /// An agent's trust record; `--clear` lifts its `suspect` mark.
    Trust {
        name: String,
        #[arg(long)]
        clear: bool,
        #[arg(long)]
        json: bool,
    },
}

impl AgentCmd {
    pub async fn run(self, data: &Path, url: Option<&str>) -> anyhow::Result<()> {
        let (name, bandwidth, window, on_battery, max_temp, self_yield, json) = match self {
            AgentCmd::Set {
                name,
                bandwidth,
                window,
                on_battery,
                max_temp,
                self_yield,
                json,
            } => (
                name, bandwidth, window, on_battery, max_temp, self_yield, json,
            ),
            AgentCmd::Revoke { name } => return revoke(data, url, name, false).await,
            AgentCmd::Rm { name } => return revoke(data, url, name, true).await,
            AgentCmd::Trust { name, clear, json } => {
                return trust(data, url, name, clear, json).await
            }
        };
        if bandwidth.is_none()
            && window.is_none()
            && on_battery.is_none()
            && max_temp.is_none()
            && self_yield.is_none()
        {
            anyhow::bail!(
                "nothing to set: give --bandwidth, --window, --on-battery, --max-temp or --yield"
            );
        }
        let mut admin = crate::admin::connect(data, url)?;
        let agent = admin
            .set_agent(SetAgentRequest {
                name,
                bandwidth_cap: bandwidth,
                window,
                on_battery: on_battery.map(|p| if p == "default" { String::new() } else { p }),
                max_temp,
                self_yield,
            })
            .await
            .map_err(rpc("setting the agent"))?
            .into_inner();
        if json {
            return print_json(&agent_json(&agent));
        }
        println!(
            "{}: bandwidth {} window {} on battery {} max temp {} yield {}",
            agent.name,
            cap_text(agent.bandwidth_cap),
            window_text(&agent.window),
            if agent.on_battery.is_empty() {
                "default"
            } else {
                &agent.on_battery
            },
            if agent.max_temp > 0.0 {
                format!("{:.0} °C", agent.max_temp)
            } else {
                "default".into()
            },
            yield_text(&agent)
        );
        Ok(())
    }
}

async fn revoke(data: &Path, url: Option<&str>, name: String, remove: bool) -> anyhow::Result<()> {
    let mut admin = crate::admin::connect(data, url)?;
    admin
        .revoke_agent(RevokeAgentRequest {
            name: name.clone(),
            remove,
        })
        .await
        .map_err(rpc("revoking the agent"))?;
    let what = if remove {
        "revoked and removed"
    } else {
        "revoked"
    };
    println!(
        "{name}: {what}; its certificate is refused from its next call, its work went back to the queue          (enrol it again with a new token from `ark-commander enroll {name}`)"
    );
    Ok(())
}

async fn trust(
    data: &Path,
    url: Option<&str>,
    name: String,
    clear: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut admin = crate::admin::connect(data, url)?;
    let agent = if clear {
        admin
            .clear_trust(ClearTrustRequest { name: name.clone() })
            .await
            .map_err(rpc("clearing the agent's trust"))?
            .into_inner()
    } else {
        admin
            .list_agents(ListAgentsRequest {})
            .await
            .map_err(rpc("listing agents"))?
            .into_inner()
            .agents
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| {
                anyhow::anyhow!("no agent named {name:?} (see `ark-commander agents`)")
            })?
    };
    if json {
        return print_json(&agent_json(&agent));
    }
    let t = agent.trust.unwrap_or_default();
    println!(
        "{}: {} confirmed, {} disputes lost, {} spot checks failed; {}",
        agent.name,
        t.confirmed,
        t.disputes_lost,
        t.spot_checks_failed,
        if t.suspect.is_empty() {
            "trusted".to_string()
        } else {
            format!("SUSPECT: {}", t.suspect)
        }
    );
    Ok(())
}

fn cap_text(cap: u64) -> String {
    match cap {
        0 => "-".into(),
        n => format!("{:.1}MB/s", n as f64 / 1e6),
    }
}

/// `--yield on|off`.
fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?}: say on or off")),
    }
}

/// Self-yield as `agents` shows it: off, on, or what it does now
/// ("12ms 3.1MB/s": the queue it measures and the rate it holds to).
fn yield_text(a: &ark_proto::AgentInfo) -> String {
    if !a.self_yield {
        return "off".into();
    }
    match a.telemetry.and_then(|t| t.self_yield) {
        Some(y) if y.rate_limit > 0 => {
            format!("{:.0}ms {}", y.queuing_delay_ms, cap_text(y.rate_limit))
        }
        _ => "on".into(),
    }
}

fn window_text(window: &str) -> &str {
    if window.is_empty() {
        "always"
    } else {
        window
    }
}

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
        "{:<16} {:<9} {:<7} {:<8} {:>5} {:>6} {:>7} {:>10} {:<8} {:>9} {:<11} {:<10} {:<15} SEEN",
        "NAME",
        "STATE",
        "PAUSED",
        "ARCH",
        "CPU%",
        "TEMP",
        "MEM%",
        "FREE GiB",
        "RUNNING",
        "CAP",
        "WINDOW",
        "TRUST",
        "YIELD"
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
        let trust = a.trust.clone().unwrap_or_default();
        let trust = if trust.suspect.is_empty() {
            format!("ok ({})", trust.confirmed)
        } else {
            "SUSPECT".into()
        };
        println!(
            "{:<16} {:<9} {:<7} {:<8} {:>5.0} {:>6} {:>7} {:>10} {:<8} {:>9} {:<11} {:<10} {:<15} {}",
            a.name,
            a.state,
            a.paused,
            caps.arch,
            t.cpu_percent,
            temp,
            mem,
            free_text(&t),
            running.join(","),
            cap_text(a.bandwidth_cap),
            window_text(&a.window),
            trust,
            yield_text(&a),
            ago(a.last_seen_ms)
        );
    }
    Ok(())
}

/// Free staging disk in GiB, marked when the agent announces it low.
fn free_text(t: &ark_proto::Telemetry) -> String {
    let gib = t.staging_free_bytes as f64 / (1u64 << 30) as f64;
    match t.low_disk {
        true => format!("LOW {gib:.1}"),
        false => format!("{gib:.1}"),
    }
}
