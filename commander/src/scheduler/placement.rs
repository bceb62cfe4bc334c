//! Placement: which agent a queued run should go to, and why each other
//! agent should not. A heartbeat still receives its leases, but an agent
//! gets a run only when, against the whole swarm's latest telemetry, it is
//! the agent expected to finish it soonest (or within [`TIE`] of it) among
//! those that may take it at all.
//!
//! Hard constraints, each refusal worded for `runs show`: the agent is
//! online, harvests the kind, is not paused, its window is open, it has a
//! free slot, it holds the expected size plus [`disk_margin`] on its
//! staging disk, it is below its temperature cap (the target's, else the
//! agent's, else `max-temp`), it is not on battery unless allowed, and it is
//! not suspect where its word alone would land a version. Preference: the
//! expected size over the agent's measured rate from that origin host (its
//! mean over all hosts, else [`DEFAULT_RATE`], when it has not fetched from
//! there), times one more than its running jobs; ties go to the agent with
//! fewer jobs, so work spreads.
//!
//! Placement waits for the best agent only [`PATIENCE_HEARTBEATS`]: past
//! that, any agent that may take the run does, so a best agent that never
//! asks (busy with a quorum it cannot join, gone quiet) holds nothing up.

use ark_proto::AgentInfo;

use crate::config::OnBattery;

/// A rate assumed for an agent that has reported none: 1 MiB/s, a slow
/// Wi-Fi device; measured rates replace it after the first progress report.
pub const DEFAULT_RATE: u64 = 1 << 20;

/// Agents whose expected finish is within this fraction of the best are
/// tied, and the tie spreads work.
pub const TIE: f64 = 0.25;

/// How many heartbeats a run waits for its best agent before any eligible
/// agent may take it.
pub const PATIENCE_HEARTBEATS: i64 = 3;

/// Runs one heartbeat weighs and leaves to other agents before it stops
/// looking: placing a run costs a pass over the whole swarm, and an agent
/// that is not the best place for the oldest runs rarely is for the next.
/// Runs that waited past the patience are at the head of the queue, so
/// they are always weighed.
pub const DECLINED_PER_HEARTBEAT: u32 = 16;

/// How old the swarm's snapshot may be when a run is placed: a second of
/// telemetry is fresh enough (agents report every few seconds), and the
/// asking agent's own running jobs are counted afresh.
pub const SNAPSHOT_MS: i64 = 1000;

/// Room kept free beyond a job's expected size: 5 % and 256 MiB, for the
/// outboard, the registry and the device's own needs.
pub fn disk_margin(size: u64) -> u64 {
    size / 20 + (256 << 20)
}

/// The swarm as read at a moment (ms): what every heartbeat places against
/// until it is [`SNAPSHOT_MS`] old.
pub type Snapshot = (i64, Vec<Candidate>);

/// What a run needs of an agent.
#[derive(Debug, Clone, Default)]
pub struct Need {
    pub kind: String,
    /// Expected size in bytes (0: unknown).
    pub size: u64,
    /// The target's temperature cap (0: none of its own).
    pub max_temp: f32,
    /// The run would land on this agent's word alone (quorum 1): a suspect
    /// agent may not take it.
    pub sole_word: bool,
}

/// The commander's defaults for what agents do not set themselves.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub max_temp: f32,
    pub on_battery: OnBattery,
}

/// An agent as placement sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub info: AgentInfo,
    /// Its window is open now.
    pub window_open: bool,
    /// Measured bytes/s from the run's host, and over all hosts.
    pub rate: (Option<u64>, Option<u64>),
}

/// Whether `c` may take a run needing `need`: Ok(expected milliseconds to
/// finish), or Err(why not), worded for the operator.
pub fn judge(c: &Candidate, need: &Need, defaults: Defaults) -> Result<u64, String> {
    let a = &c.info;
    let name = &a.name;
    if a.state != "online" {
        return Err(format!("{name}: {}", a.state));
    }
    let none = ark_proto::Capabilities::default();
    let caps = a.capabilities.as_ref().unwrap_or(&none);
    if !caps.kinds.is_empty() && !caps.kinds.contains(&need.kind) {
        return Err(format!("{name}: does not harvest {}", need.kind));
    }
    if a.paused {
        return Err(format!("{name}: paused"));
    }
    if !c.window_open {
        return Err(format!("{name}: outside its window {}", a.window));
    }
    let running = a.running.len() as u32;
    if caps.max_jobs > 0 && running >= caps.max_jobs {
        return Err(format!(
            "{name}: busy ({running} of {} jobs)",
            caps.max_jobs
        ));
    }
    if need.sole_word && a.trust.as_ref().is_some_and(|t| !t.suspect.is_empty()) {
        return Err(format!(
            "{name}: suspect (its word alone may not land a version)"
        ));
    }
    let t = a.telemetry.unwrap_or_default();
    let cap = [need.max_temp, a.max_temp, defaults.max_temp]
        .into_iter()
        .find(|c| *c > 0.0)
        .unwrap_or(defaults.max_temp);
    if let Some(temp) = t.temperature_celsius.filter(|t| *t >= cap) {
        return Err(format!("{name}: {temp:.0} °C ≥ cap {cap:.0} °C"));
    }
    let battery_ok = match a.on_battery.as_str() {
        "allow" => true,
        "deny" => false,
        _ => defaults.on_battery == OnBattery::Allow,
    };
    if t.on_battery == Some(true) && !battery_ok {
        return Err(format!(
            "{name}: on battery (allow with `agent set {name} --on-battery allow`)"
        ));
    }
    let free = if t.staging_free_bytes > 0 {
        t.staging_free_bytes
    } else {
        caps.staging_free_bytes
    };
    let needed = need.size + disk_margin(need.size);
    if need.size > 0 && free > 0 && free < needed {
        return Err(format!(
            "{name}: {} free < {} needed",
            gib(free),
            gib(needed)
        ));
    }
    let rate = c.rate.0.or(c.rate.1).unwrap_or(DEFAULT_RATE).max(1);
    let one = need.size.max(1 << 20) * 1000 / rate;
    Ok(one * (1 + u64::from(running)))
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Each agent's verdict: Ok(expected ms to finish) or Err(why not).
pub type Verdicts = Vec<(String, Result<u64, String>)>;

/// The verdict on every candidate, and the agents tied for best (fewest
/// jobs first), for a run needing `need`.
pub fn rank(candidates: &[Candidate], need: &Need, defaults: Defaults) -> (Vec<String>, Verdicts) {
    let verdicts: Verdicts = candidates
        .iter()
        .map(|c| (c.info.name.clone(), judge(c, need, defaults)))
        .collect();
    let best = verdicts
        .iter()
        .filter_map(|(_, v)| v.as_ref().ok())
        .min()
        .copied();
    let Some(best) = best else {
        return (Vec::new(), verdicts);
    };
    let bound = best as f64 * (1.0 + TIE);
    let mut tied: Vec<(usize, &String)> = verdicts
        .iter()
        .zip(candidates)
        .filter(|((_, v), _)| v.as_ref().is_ok_and(|eta| (*eta as f64) <= bound))
        .map(|((name, _), c)| (c.info.running.len(), name))
        .collect();
    tied.sort();
    let least = tied.first().map(|(n, _)| *n).unwrap_or(0);
    let tied = tied
        .into_iter()
        .filter(|(n, _)| *n == least)
        .map(|(_, name)| name.clone())
        .collect();
    (tied, verdicts)
}

/// The host of `url` (where a throughput was measured).
pub fn host_of(url: &str) -> String {
    url.split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(url)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Most other agents one placement names: the refused first (their
/// reasons are the news), then the eligible by expected finish; the rest
/// are counted. A swarm of a thousand agents must not write a thousand
/// reasons into every run's events.
pub const EXPLAINED: usize = 8;

/// One line for a run's events: who was chosen, and why not the others.
pub fn explain(chosen: &str, eta_ms: u64, verdicts: &[(String, Result<u64, String>)]) -> String {
    let mut others: Vec<&(String, Result<u64, String>)> =
        verdicts.iter().filter(|(name, _)| name != chosen).collect();
    others.sort_by_key(|(name, v)| match v {
        Err(_) => (0, 0, name.clone()),
        Ok(eta) => (1, *eta, name.clone()),
    });
    let mut named: Vec<String> = others
        .iter()
        .take(EXPLAINED)
        .map(|(name, v)| match v {
            Ok(eta) => format!("{name}: expected {:.1} s", *eta as f64 / 1000.0),
            Err(why) => why.clone(),
        })
        .collect();
    if others.len() > EXPLAINED {
        named.push(format!("{} more agents", others.len() - EXPLAINED));
    }
    let mut text = format!(
        "placed on {chosen} (expected {:.1} s)",
        eta_ms as f64 / 1000.0
    );
    if !named.is_empty() {
        text.push_str("; ");
        text.push_str(&named.join("; "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_proto::{Capabilities, Telemetry, Trust};

    fn agent(name: &str) -> Candidate {
        Candidate {
            info: AgentInfo {
                name: name.into(),
                state: "online".into(),
                capabilities: Some(Capabilities {
                    kinds: vec!["file".into(), "zim".into()],
                    max_jobs: 2,
                    ..Default::default()
                }),
                telemetry: Some(Telemetry {
                    temperature_celsius: Some(50.0),
                    staging_free_bytes: 100 << 30,
                    ..Default::default()
                }),
                trust: Some(Trust::default()),
                ..Default::default()
            },
            window_open: true,
            rate: (None, None),
        }
    }

    const DEFAULTS: Defaults = Defaults {
        max_temp: 70.0,
        on_battery: OnBattery::Deny,
    };

    fn need(size: u64) -> Need {
        Need {
            kind: "zim".into(),
            size,
            ..Default::default()
        }
    }

    fn telemetry(c: &mut Candidate) -> &mut Telemetry {
        c.info.telemetry.get_or_insert_with(Default::default)
    }

    fn refusal(c: &Candidate, n: &Need) -> String {
        judge(c, n, DEFAULTS).expect_err("eligible")
    }

    #[test]
    fn each_constraint_refuses_with_its_reason() {
        let mut hot = agent("agent-2");
        telemetry(&mut hot).temperature_celsius = Some(71.0);
        assert_eq!(refusal(&hot, &need(0)), "agent-2: 71 °C ≥ cap 70 °C");
        // The target's own cap comes first.
        let cooler = Need {
            max_temp: 80.0,
            ..need(0)
        };
        assert!(judge(&hot, &cooler, DEFAULTS).is_ok());

        let mut small = agent("agent-3");
        telemetry(&mut small).staging_free_bytes = 3_328_599_654;
        let big = need(4 << 30);
        assert_eq!(
            refusal(&small, &big),
            "agent-3: 3.1 GiB free < 4.4 GiB needed"
        );

        let mut laptop = agent("laptop");
        telemetry(&mut laptop).on_battery = Some(true);
        assert!(refusal(&laptop, &need(0))
            .contains("on battery (allow with `agent set laptop --on-battery allow`)"));
        laptop.info.on_battery = "allow".into();
        assert!(judge(&laptop, &need(0), DEFAULTS).is_ok());

        let mut paused = agent("p");
        paused.info.paused = true;
        assert_eq!(refusal(&paused, &need(0)), "p: paused");
        let mut closed = agent("w");
        closed.window_open = false;
        closed.info.window = "01:00-06:00".into();
        assert_eq!(
            refusal(&closed, &need(0)),
            "w: outside its window 01:00-06:00"
        );
        let mut busy = agent("b");
        busy.info.running = vec![1, 2];
        assert_eq!(refusal(&busy, &need(0)), "b: busy (2 of 2 jobs)");
        let mut lost = agent("l");
        lost.info.state = "lost".into();
        assert_eq!(refusal(&lost, &need(0)), "l: lost");
        let rss = Need {
            kind: "rss".into(),
            ..need(0)
        };
        assert_eq!(refusal(&agent("z"), &rss), "z: does not harvest rss");
        let mut suspect = agent("s");
        suspect.info.trust = Some(Trust {
            suspect: "outvoted".into(),
            ..Default::default()
        });
        let sole = Need {
            sole_word: true,
            ..need(0)
        };
        assert!(refusal(&suspect, &sole).starts_with("s: suspect"));
        assert!(
            judge(&suspect, &need(0), DEFAULTS).is_ok(),
            "a confirmed run may use a suspect"
        );
    }

    #[test]
    fn the_big_file_goes_to_the_fast_agent_and_ties_spread_work() {
        let mut laptop = agent("laptop");
        laptop.rate = (Some(80 << 20), None);
        let mut pi = agent("pi");
        pi.rate = (Some(8 << 20), None);
        let (best, verdicts) = rank(&[pi.clone(), laptop.clone()], &need(90 << 30), DEFAULTS);
        assert_eq!(best, ["laptop"]);
        let text = explain("laptop", *verdicts[1].1.as_ref().expect("ok"), &verdicts);
        assert!(
            text.starts_with("placed on laptop") && text.contains("pi: expected"),
            "{text}"
        );
        // Unknown rates: the agent's mean elsewhere, else the default.
        let mut fresh = agent("fresh");
        fresh.rate = (None, Some(40 << 20));
        let (best, _) = rank(&[pi.clone(), fresh], &need(1 << 30), DEFAULTS);
        assert_eq!(best, ["fresh"]);
        // Equal agents tie; the one with fewer jobs is preferred.
        let (mut a, mut b) = (agent("a"), agent("b"));
        let (best, _) = rank(&[a.clone(), b.clone()], &need(1 << 20), DEFAULTS);
        assert_eq!(best, ["a", "b"]);
        b.info.running = vec![7];
        a.info.running.clear();
        let (best, _) = rank(&[a, b], &need(1 << 20), DEFAULTS);
        assert_eq!(best, ["a"], "a busy agent loses the tie");
    }

    #[test]
    fn a_big_swarm_is_explained_in_a_few_lines() {
        let mut swarm: Vec<Candidate> = (0..1000).map(|i| agent(&format!("a{i:04}"))).collect();
        telemetry(&mut swarm[500]).temperature_celsius = Some(99.0);
        let (best, verdicts) = rank(&swarm, &need(1 << 20), DEFAULTS);
        let text = explain(&best[0], 1000, &verdicts);
        assert!(
            text.contains("a0500: 99 °C"),
            "the refused come first: {text}"
        );
        assert!(text.ends_with("991 more agents"), "{text}");
        assert!(text.len() < 600, "{} bytes", text.len());
    }

    #[test]
    fn hosts_are_compared_without_case_credentials_or_path() {
        assert_eq!(
            host_of("https://User:pw@Download.Kiwix.org:443/zim/x.zim"),
            "download.kiwix.org:443"
        );
        assert_eq!(host_of("http://127.0.0.1:8080/a?b"), "127.0.0.1:8080");
    }
}
