//! Yielding to the household: `[[pause_when]]` rules in `commander.toml`,
//! evaluated by the commander every `pause-check` (default 10 s). Each rule
//! has one source — `tcp = "HOST:PORT"` (holds while a TCP connect
//! succeeds: the game console is on), `prometheus = "URL"` with `query` and
//! `above` or `below` (an instant query of Prometheus or VictoriaMetrics:
//! the WAN is busy, a film is playing), `command = "…"` (holds while it
//! exits 0) — and an optional `hold_down` (default 1 min).
//!
//! While any rule holds, the swarm *yields*: no agent gets new work, and
//! every agent's transfers drop to the `yield-floor` rate (default 32 KiB/s:
//! a trickle that keeps leases alive and loses no progress). A rule that
//! held is released only once it has been clear for its `hold_down`, so a
//! flapping signal does not flap the swarm. Every change is an event naming
//! the rule; `status`, the dashboard and `/metrics` say why the swarm
//! yields.
//!
//! A source that cannot be read (Prometheus down, a command that hangs) is
//! not a signal: the rule keeps its last verdict for its `hold_down`, and
//! after that counts as clear, so a dead exporter never stops the swarm for
//! ever. It is reported all along (`unreachable since …` in `status`, an
//! event when it starts and stops, `ark_pause_rule_errors`).
//!
//! Design: one task ([`watch_task`]) evaluates the rules in turn (each with
//! a timeout) and writes the outcome to the store's settings
//! ([`YIELD_SETTING`], JSON); the scheduler reads that row on each
//! heartbeat. The verdicts live in the task; a restart re-evaluates before
//! the first heartbeat is answered differently.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scheduler::Scheduler;
use crate::state;
use crate::{CommanderError, Result};

/// The settings row holding the swarm's yield state.
pub const YIELD_SETTING: &str = "yield";

/// How long one evaluation of a source may take.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `hold_down`: a minute clear before the swarm takes work again.
pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(60);

/// A `[[pause_when]]` rule as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PauseRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub hold_down: Option<Duration>,
}

impl PauseRule {
    /// Refuses a rule without exactly one source, or a Prometheus rule
    /// without its query and one threshold.
    pub fn check(&self) -> Result<()> {
        let invalid = |why: String| {
            Err(CommanderError::Invalid(format!(
                "[[pause_when]] {:?}: {why}",
                self.name
            )))
        };
        if self.name.trim().is_empty() {
            return invalid("give it a name".into());
        }
        let sources = [
            self.tcp.is_some(),
            self.prometheus.is_some(),
            self.command.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return invalid("give exactly one of tcp, prometheus or command".into());
        }
        if self.prometheus.is_some() {
            if self.query.as_deref().is_none_or(|q| q.trim().is_empty()) {
                return invalid("a prometheus rule needs its query".into());
            }
            if self.above.is_some() == self.below.is_some() {
                return invalid("a prometheus rule needs exactly one of above or below".into());
            }
        } else if self.query.is_some() || self.above.is_some() || self.below.is_some() {
            return invalid("query, above and below go with prometheus".into());
        }
        if let Some(tcp) = &self.tcp {
            if tcp
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return invalid(format!("tcp {tcp:?}: say HOST:PORT"));
            }
        }
        Ok(())
    }

    fn hold_down(&self) -> Duration {
        self.hold_down.unwrap_or(DEFAULT_HOLD_DOWN)
    }
}

/// One rule's standing, as `status` and the dashboard show it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleState {
    pub name: String,
    /// The swarm yields because of it (held, or within its hold-down).
    pub holding: bool,
    /// Since when it holds (ms), or 0.
    pub since_ms: i64,
    /// What the source said last ("console answers on 192.168.1.40:3074").
    pub reading: String,
    /// Why the source could not be read, and since when (empty: it could).
    pub error: String,
    pub error_since_ms: i64,
}

/// The swarm's yield state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Yield {
    pub rules: Vec<RuleState>,
}

impl Yield {
    /// The rules the swarm yields to now (empty: it does not).
    pub fn holding(&self) -> Vec<&RuleState> {
        self.rules.iter().filter(|r| r.holding).collect()
    }
}

/// The yield state recorded in the store (default: not yielding).
pub fn current(conn: &rusqlite::Connection) -> Result<Yield> {
    Ok(state::setting(conn, YIELD_SETTING)?
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default())
}

/// What one evaluation of a source found.
#[derive(Debug, Clone, PartialEq)]
enum Reading {
    /// The condition holds (or not), with what was seen.
    Condition(bool, String),
    /// The source could not be read.
    Unreadable(String),
}

async fn read(rule: &PauseRule, http: &reqwest::Client) -> Reading {
    if let Some(addr) = &rule.tcp {
        let connect = tokio::net::TcpStream::connect(addr.as_str());
        return match tokio::time::timeout(SOURCE_TIMEOUT, connect).await {
            Ok(Ok(_)) => Reading::Condition(true, format!("{addr} answers")),
            Ok(Err(e)) => Reading::Condition(false, format!("{addr}: {e}")),
            Err(_) => Reading::Condition(false, format!("{addr}: no answer in {SOURCE_TIMEOUT:?}")),
        };
    }
    if let Some(command) = &rule.command {
        let run = tokio::process::Command::new("sh")
            .args(["-c", command])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        return match tokio::time::timeout(SOURCE_TIMEOUT, run).await {
            Ok(Ok(status)) => {
                Reading::Condition(status.success(), format!("`{command}` exited {status}"))
            }
            Ok(Err(e)) => Reading::Unreadable(format!("running `{command}`: {e}")),
            Err(_) => Reading::Unreadable(format!("`{command}` ran over {SOURCE_TIMEOUT:?}")),
        };
    }
    let (Some(base), Some(query)) = (&rule.prometheus, &rule.query) else {
        return Reading::Unreadable("no source".into());
    };
    match prometheus_value(http, base, query).await {
        Ok(None) => Reading::Condition(false, format!("{query}: no samples")),
        Ok(Some(value)) => {
            let (holds, bound) = match (rule.above, rule.below) {
                (Some(above), _) => (value > above, format!("> {above}")),
                (_, Some(below)) => (value < below, format!("< {below}")),
                _ => (false, String::new()),
            };
            Reading::Condition(holds, format!("{query} = {value} (yields when {bound})"))
        }
        Err(e) => Reading::Unreadable(e),
    }
}

/// The first sample of an instant query (Prometheus' HTTP API, which
/// VictoriaMetrics serves too); None when the result is empty.
async fn prometheus_value(
    http: &reqwest::Client,
    base: &str,
    query: &str,
) -> std::result::Result<Option<f64>, String> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let response = http
        .get(&url)
        .query(&[("query", query)])
        .timeout(SOURCE_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    let body: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{url} ({status}): not Prometheus' JSON: {e}"))?;
    if body["status"] != "success" {
        return Err(format!(
            "{url}: {}",
            body["error"].as_str().unwrap_or("query failed")
        ));
    }
    let data = &body["data"];
    let value = match data["resultType"].as_str() {
        Some("vector") => data["result"].get(0).map(|s| &s["value"][1]),
        Some("scalar") => Some(&data["result"][1]),
        other => {
            return Err(format!(
                "{url}: a {other:?} result; use a query that gives one number"
            ))
        }
    };
    match value {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .map(Some)
            .ok_or_else(|| format!("{url}: sample {v} is not a number")),
    }
}

/// The evaluator's memory of one rule.
#[derive(Debug, Clone, Default)]
struct Memory {
    state: RuleState,
    /// When the condition was last seen true (ms).
    last_true_ms: i64,
}

/// Folds one reading into a rule's memory at `now`; what to say when the
/// rule starts or stops holding, or its source stops or starts answering.
/// An unreadable source keeps a holding rule holding for its hold-down;
/// after that it counts as clear (and the rule is released a hold-down
/// later, like any clear rule).
fn fold(rule: &PauseRule, m: &mut Memory, reading: Reading, now: i64) -> Vec<String> {
    let hold_ms = rule.hold_down().as_millis() as i64;
    let mut said = Vec::new();
    match reading {
        Reading::Condition(holds, seen) => {
            if !m.state.error.is_empty() {
                said.push(format!(
                    "pause rule {:?}: its source answers again ({seen})",
                    rule.name
                ));
                m.state.error.clear();
                m.state.error_since_ms = 0;
            }
            if holds {
                m.last_true_ms = now;
            }
            m.state.reading = seen;
        }
        Reading::Unreadable(why) => {
            if m.state.error.is_empty() {
                m.state.error_since_ms = now;
                said.push(format!(
                    "pause rule {:?}: its source cannot be read ({why}); it keeps its last verdict for its hold-down ({:?}), then counts as clear",
                    rule.name,
                    rule.hold_down()
                ));
            }
            m.state.error = why;
            if m.state.holding && now - m.state.error_since_ms <= hold_ms {
                m.last_true_ms = now;
            }
        }
    }
    let holds = m.last_true_ms > 0 && (m.last_true_ms == now || now - m.last_true_ms < hold_ms);
    if holds && !m.state.holding {
        m.state.holding = true;
        m.state.since_ms = now;
        said.push(format!(
            "the swarm yields to the household: pause rule {:?} holds ({})",
            rule.name, m.state.reading
        ));
    } else if !holds && m.state.holding {
        m.state.holding = false;
        m.state.since_ms = 0;
        said.push(format!(
            "pause rule {:?} released after {:?} clear ({})",
            rule.name,
            rule.hold_down(),
            m.state.reading
        ));
    }
    said
}

/// Evaluates `rules` every `every` and records the yield state in `store`
/// until aborted.
pub async fn watch_task(scheduler: Scheduler, rules: Vec<PauseRule>, every: Duration) {
    let store = &scheduler.store;
    if rules.is_empty() {
        // No rules (any more): a yield recorded before a restart must not
        // outlive the rules that caused it.
        let cleared = store.tx(|tx| {
            if state::setting(tx, YIELD_SETTING)?.is_some() {
                state::set_setting(tx, YIELD_SETTING, "{\"rules\":[]}")?;
            }
            Ok(())
        });
        if let Err(e) = cleared {
            tracing::error!("clearing the pause rules' state: {e}");
        }
        return;
    }
    ark_link::tls::install_crypto_provider();
    let http = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("pause rules will not be evaluated: {e}");
            return;
        }
    };
    let mut memory: Vec<Memory> = rules
        .iter()
        .map(|r| Memory {
            state: RuleState {
                name: r.name.clone(),
                ..RuleState::default()
            },
            ..Memory::default()
        })
        .collect();
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let mut said = Vec::new();
        for (rule, m) in rules.iter().zip(memory.iter_mut()) {
            let reading = read(rule, &http).await;
            said.extend(fold(rule, m, reading, ark_core::unix_ms()));
        }
        let state = Yield {
            rules: memory.iter().map(|m| m.state.clone()).collect(),
        };
        let now = ark_core::unix_ms();
        let recorded = store.tx(|tx| {
            let json = serde_json::to_string(&state)
                .map_err(|e| CommanderError::Invalid(e.to_string()))?;
            if state::setting(tx, YIELD_SETTING)?.as_deref() != Some(json.as_str()) {
                state::set_setting(tx, YIELD_SETTING, &json)?;
            }
            for text in &said {
                state::event(tx, now, None, None, "yield", text)?;
            }
            Ok(())
        });
        for text in &said {
            tracing::info!("{text}");
        }
        match recorded {
            // A yield starting or ending reaches the agents now, not at
            // their next heartbeat: their transfers drop to the floor (or
            // come back) within milliseconds of the evaluation.
            Ok(()) if !said.is_empty() => scheduler.wakers.wake_all(),
            Ok(()) => {}
            Err(e) => tracing::error!("recording the pause rules' state: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(hold: u64) -> PauseRule {
        PauseRule {
            name: "console".into(),
            tcp: Some("127.0.0.1:9".into()),
            hold_down: Some(Duration::from_millis(hold)),
            ..Default::default()
        }
    }

    #[test]
    fn a_rule_holds_at_once_and_releases_only_after_its_hold_down() {
        let r = rule(1000);
        let mut m = Memory::default();
        let said = fold(&r, &mut m, Reading::Condition(true, "up".into()), 10_000);
        assert!(
            m.state.holding && said[0].contains("yields") && said[0].contains("console"),
            "{said:?}"
        );
        // Flapping inside the hold-down changes nothing.
        assert!(fold(&r, &mut m, Reading::Condition(false, "down".into()), 10_400).is_empty());
        assert!(fold(&r, &mut m, Reading::Condition(true, "up".into()), 10_600).is_empty());
        assert!(fold(&r, &mut m, Reading::Condition(false, "down".into()), 11_000).is_empty());
        assert!(m.state.holding);
        let said = fold(&r, &mut m, Reading::Condition(false, "down".into()), 11_700);
        assert!(!m.state.holding && said[0].contains("released"), "{said:?}");
    }

    #[test]
    fn an_unreadable_source_is_reported_and_does_not_hold_the_swarm_for_ever() {
        let r = rule(1000);
        let mut m = Memory::default();
        fold(&r, &mut m, Reading::Condition(true, "up".into()), 10_000);
        let said = fold(
            &r,
            &mut m,
            Reading::Unreadable("connection refused".into()),
            10_500,
        );
        assert!(
            said.iter().any(|s| s.contains("cannot be read")),
            "{said:?}"
        );
        assert!(m.state.holding, "its last verdict stands for the hold-down");
        fold(
            &r,
            &mut m,
            Reading::Unreadable("connection refused".into()),
            10_900,
        );
        fold(
            &r,
            &mut m,
            Reading::Unreadable("connection refused".into()),
            11_600,
        );
        assert!(
            m.state.holding,
            "counts as clear from 11.5 s, released a hold-down later"
        );
        let said = fold(
            &r,
            &mut m,
            Reading::Unreadable("connection refused".into()),
            12_000,
        );
        assert!(
            !m.state.holding && said.iter().any(|s| s.contains("released")),
            "{said:?}"
        );
        assert!(m.state.error.contains("refused"), "still reported");
        // Never held: an unreadable source does not start a yield.
        let mut fresh = Memory::default();
        fold(&r, &mut fresh, Reading::Unreadable("down".into()), 1);
        assert!(!fresh.state.holding);
    }

    #[test]
    fn rules_need_exactly_one_source_and_a_threshold() {
        assert!(rule(1).check().is_ok());
        let both = PauseRule {
            command: Some("true".into()),
            ..rule(1)
        };
        assert!(both
            .check()
            .expect_err("refused")
            .to_string()
            .contains("exactly one"));
        let prom = PauseRule {
            name: "wan".into(),
            prometheus: Some("http://127.0.0.1:9090".into()),
            query: Some("x".into()),
            ..Default::default()
        };
        assert!(prom
            .check()
            .expect_err("refused")
            .to_string()
            .contains("above or below"));
        let ok = PauseRule {
            above: Some(1.0),
            ..prom
        };
        assert!(ok.check().is_ok());
        let bad = PauseRule {
            name: "x".into(),
            tcp: Some("nohost".into()),
            ..Default::default()
        };
        assert!(bad
            .check()
            .expect_err("refused")
            .to_string()
            .contains("HOST:PORT"));
    }

    #[tokio::test]
    async fn a_yield_recorded_before_a_restart_ends_when_its_rules_are_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = std::sync::Arc::new(
            state::Store::open(&dir.path().join("state.sqlite")).expect("open"),
        );
        let held = Yield {
            rules: vec![RuleState {
                name: "console".into(),
                holding: true,
                ..RuleState::default()
            }],
        };
        let json = serde_json::to_string(&held).expect("json");
        store
            .tx(|tx| state::set_setting(tx, YIELD_SETTING, &json))
            .expect("set");
        assert_eq!(store.read(current).expect("read").holding().len(), 1);
        let scheduler = Scheduler::new(store.clone(), Default::default());
        watch_task(scheduler, Vec::new(), Duration::from_secs(1)).await;
        assert!(store.read(current).expect("read").holding().is_empty());
    }
}
