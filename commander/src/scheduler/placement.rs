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

use std::collections::HashMap;

use ark_proto::AgentInfo;

use crate::config::OnBattery;
use crate::state::Throughputs;

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
/// asking agent's own running jobs are counted afresh. The commander reads
/// it in the background twice as often (on its own connection), so no
/// heartbeat waits for a read of the whole swarm.
pub const SNAPSHOT_MS: i64 = 1000;

/// Room kept free beyond a job's expected size: 5 % and 256 MiB, for the
/// outboard, the registry and the device's own needs.
pub fn disk_margin(size: u64) -> u64 {
    size / 20 + (256 << 20)
}

/// The swarm as read at a moment (ms): what every heartbeat places against,
/// shared and never copied, until it is [`SNAPSHOT_MS`] old.
#[derive(Debug, Default)]
pub struct Swarm {
    pub at: i64,
    pub agents: Vec<Candidate>,
    by_name: HashMap<String, usize>,
    /// Per origin host, each agent's measured rate (bytes/s, 0: none), in
    /// the agents' order: one lookup per placement, not one per agent.
    by_host: HashMap<String, Vec<u64>>,
}

impl Swarm {
    /// The swarm of `agents` with the rates each achieved from each host.
    pub fn new(at: i64, mut agents: Vec<Candidate>, rates: &Throughputs) -> Self {
        let n = agents.len();
        let mut by_host: HashMap<String, Vec<u64>> = HashMap::new();
        for (i, c) in agents.iter_mut().enumerate() {
            let Some(hosts) = rates.get(&c.info.name).filter(|h| !h.is_empty()) else {
                continue;
            };
            c.mean_rate = Some(hosts.values().sum::<u64>() / hosts.len() as u64);
            for (host, rate) in hosts {
                by_host.entry(host.clone()).or_insert_with(|| vec![0; n])[i] = *rate;
            }
        }
        let by_name = agents
            .iter()
            .enumerate()
            .map(|(i, c)| (c.info.name.clone(), i))
            .collect();
        Self {
            at,
            agents,
            by_name,
            by_host,
        }
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

/// What a run needs of an agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Need {
    pub kind: String,
    /// The origin host (`host:port`, see [`host_of`]): whose measured rate
    /// counts.
    pub host: String,
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
#[derive(Debug, Clone, Default)]
pub struct Candidate {
    pub info: AgentInfo,
    /// Its window is open now.
    pub window_open: bool,
    /// Its mean measured rate over the hosts it has fetched from (bytes/s).
    pub mean_rate: Option<u64>,
}

/// Why an agent may not take a run. A run is judged against every agent,
/// a thousand of them, on every placement; only the few an operator reads
/// are worded ([`Refusal::describe`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// Not online (enrolled, lost).
    State,
    Kind,
    Paused,
    Window,
    Busy {
        running: u32,
        max: u32,
    },
    Suspect,
    Hot {
        temp: f32,
        cap: f32,
    },
    Battery,
    Disk {
        free: u64,
        needed: u64,
    },
    /// The agent announced low disk and the run's size is not known.
    LowDisk {
        free: u64,
    },
}

impl Refusal {
    /// The refusal as `runs show` words it, e.g. "agent-2: 71 °C ≥ cap 70 °C".
    pub fn describe(self, c: &Candidate, need: &Need) -> String {
        let a = &c.info;
        let name = &a.name;
        match self {
            Refusal::State => format!("{name}: {}", a.state),
            Refusal::Kind => format!("{name}: does not harvest {}", need.kind),
            Refusal::Paused => format!("{name}: paused"),
            Refusal::Window => format!("{name}: outside its window {}", a.window),
            Refusal::Busy { running, max } => format!("{name}: busy ({running} of {max} jobs)"),
            Refusal::Suspect => format!("{name}: suspect (its word alone may not land a version)"),
            Refusal::Hot { temp, cap } => format!("{name}: {temp:.0} °C ≥ cap {cap:.0} °C"),
            Refusal::Battery => {
                format!("{name}: on battery (allow with `agent set {name} --on-battery allow`)")
            }
            Refusal::Disk { free, needed } => {
                format!("{name}: {} free < {} needed", gib(free), gib(needed))
            }
            Refusal::LowDisk { free } => {
                format!("{name}: low disk ({free} bytes free) and this run's size is not known yet")
            }
        }
    }
}

/// Whether `c`, running `running` jobs, may take a run needing `need`:
/// Ok(expected milliseconds to finish), or Err(why not). `host_rate` is
/// its measured rate from the run's host (0: none; its mean over other
/// hosts, else [`DEFAULT_RATE`], stands in).
pub fn judge(
    c: &Candidate,
    (running, host_rate): (u32, u64),
    need: &Need,
    defaults: Defaults,
) -> Result<u64, Refusal> {
    let a = &c.info;
    if a.state != "online" {
        return Err(Refusal::State);
    }
    let none = ark_proto::Capabilities::default();
    let caps = a.capabilities.as_ref().unwrap_or(&none);
    if !caps.kinds.is_empty() && !caps.kinds.contains(&need.kind) {
        return Err(Refusal::Kind);
    }
    if a.paused {
        return Err(Refusal::Paused);
    }
    if !c.window_open {
        return Err(Refusal::Window);
    }
    if caps.max_jobs > 0 && running >= caps.max_jobs {
        return Err(Refusal::Busy {
            running,
            max: caps.max_jobs,
        });
    }
    if need.sole_word && a.trust.as_ref().is_some_and(|t| !t.suspect.is_empty()) {
        return Err(Refusal::Suspect);
    }
    let t = a.telemetry.unwrap_or_default();
    let cap = [need.max_temp, a.max_temp, defaults.max_temp]
        .into_iter()
        .find(|c| *c > 0.0)
        .unwrap_or(defaults.max_temp);
    if let Some(temp) = t.temperature_celsius.filter(|t| *t >= cap) {
        return Err(Refusal::Hot { temp, cap });
    }
    let battery_ok = match a.on_battery.as_str() {
        "allow" => true,
        "deny" => false,
        _ => defaults.on_battery == OnBattery::Allow,
    };
    if t.on_battery == Some(true) && !battery_ok {
        return Err(Refusal::Battery);
    }
    // 0 is "not measured" unless the agent also says its disk is low.
    let free = if t.staging_free_bytes > 0 || t.low_disk {
        t.staging_free_bytes
    } else {
        caps.staging_free_bytes
    };
    let needed = need.size + disk_margin(need.size);
    if need.size > 0 && (free > 0 || t.low_disk) && free < needed {
        return Err(Refusal::Disk { free, needed });
    }
    if need.size == 0 && t.low_disk {
        return Err(Refusal::LowDisk {
            free: t.staging_free_bytes,
        });
    }
    let rate = match host_rate {
        0 => c.mean_rate.unwrap_or(DEFAULT_RATE),
        measured => measured,
    };
    let one = need.size.max(1 << 20) * 1000 / rate.max(1);
    Ok(one * (1 + u64::from(running)))
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// One run judged against the swarm: each agent's verdict (Ok(expected ms
/// to finish) or why not), in the swarm's order, and the agents tied for
/// best (fewest jobs first).
#[derive(Debug)]
pub struct Ranking {
    pub verdicts: Vec<Result<u64, Refusal>>,
    pub best: Vec<usize>,
}

/// Ranks the swarm for a run needing `need`. `mine` is the asking agent
/// (its position) and its running jobs counted now; the others' come from
/// the snapshot.
pub fn rank(swarm: &Swarm, need: &Need, defaults: Defaults, mine: Option<(usize, u32)>) -> Ranking {
    let agents = &swarm.agents;
    let running = |i: usize| match mine {
        Some((me, now)) if me == i => now,
        _ => agents[i].info.running.len() as u32,
    };
    let rates = swarm.by_host.get(&need.host);
    let verdicts: Vec<Result<u64, Refusal>> = agents
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let rate = rates.map_or(0, |r| r[i]);
            judge(c, (running(i), rate), need, defaults)
        })
        .collect();
    let Some(fastest) = verdicts
        .iter()
        .filter_map(|v| v.as_ref().ok())
        .min()
        .copied()
    else {
        return Ranking {
            verdicts,
            best: Vec::new(),
        };
    };
    let bound = fastest as f64 * (1.0 + TIE);
    let tied = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.as_ref().is_ok_and(|eta| (*eta as f64) <= bound))
        .map(|(i, _)| i);
    let least = tied.clone().map(running).min().unwrap_or(0);
    let best = tied.filter(|i| running(*i) == least).collect();
    Ranking { verdicts, best }
}

impl Ranking {
    /// Why no agent may take the run, for its reason: the first
    /// [`EXPLAINED`] refusals, the rest counted.
    pub fn waiting(&self, swarm: &[Candidate], need: &Need) -> String {
        let refused: Vec<(usize, Refusal)> = self
            .verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.err().map(|r| (i, r)))
            .collect();
        let mut why = format!(
            "waiting for an agent that may take it: {}",
            refused
                .iter()
                .take(EXPLAINED)
                .map(|(i, r)| r.describe(&swarm[*i], need))
                .collect::<Vec<_>>()
                .join("; ")
        );
        if refused.len() > EXPLAINED {
            why.push_str(&format!("; {} more agents", refused.len() - EXPLAINED));
        }
        why
    }

    /// One line for a run's events: who was chosen, and why not the others.
    /// The refused come first (their reasons are the news), then the
    /// eligible by expected finish; past [`EXPLAINED`] they are counted.
    pub fn explain(&self, swarm: &[Candidate], need: &Need, chosen: usize) -> String {
        let eta = self.verdicts[chosen].unwrap_or(0);
        let mut others: Vec<(usize, &Result<u64, Refusal>)> = self
            .verdicts
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != chosen)
            .collect();
        let order = |(i, v): &(usize, &Result<u64, Refusal>)| match v {
            Err(_) => (0, 0, *i),
            Ok(eta) => (1, *eta, *i),
        };
        let total = others.len();
        if total > EXPLAINED {
            // The first EXPLAINED in order, without sorting a thousand.
            others.select_nth_unstable_by_key(EXPLAINED - 1, order);
            others.truncate(EXPLAINED);
        }
        others.sort_by_key(order);
        let mut named: Vec<String> = others
            .iter()
            .map(|(i, v)| match v {
                Ok(eta) => format!(
                    "{}: expected {:.1} s",
                    swarm[*i].info.name,
                    *eta as f64 / 1000.0
                ),
                Err(why) => why.describe(&swarm[*i], need),
            })
            .collect();
        if total > EXPLAINED {
            named.push(format!("{} more agents", total - EXPLAINED));
        }
        let mut text = format!(
            "placed on {} (expected {:.1} s)",
            swarm[chosen].info.name,
            eta as f64 / 1000.0
        );
        if !named.is_empty() {
            text.push_str("; ");
            text.push_str(&named.join("; "));
        }
        text
    }
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
            mean_rate: None,
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

    fn verdict(c: &Candidate, n: &Need) -> Result<u64, Refusal> {
        judge(c, (c.info.running.len() as u32, 0), n, DEFAULTS)
    }

    /// A swarm of `agents` where each (agent, host, bytes/s) was measured.
    fn swarm(agents: &[Candidate], measured: &[(&str, &str, u64)]) -> Swarm {
        let mut rates = Throughputs::new();
        for (agent, host, rate) in measured {
            rates
                .entry(agent.to_string())
                .or_default()
                .insert(host.to_string(), *rate);
        }
        Swarm::new(0, agents.to_vec(), &rates)
    }

    fn refusal(c: &Candidate, n: &Need) -> String {
        verdict(c, n).expect_err("eligible").describe(c, n)
    }

    fn names(swarm: &Swarm, r: &Ranking) -> Vec<String> {
        r.best
            .iter()
            .map(|i| swarm.agents[*i].info.name.clone())
            .collect()
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
        assert!(verdict(&hot, &cooler).is_ok());

        let mut small = agent("agent-3");
        telemetry(&mut small).staging_free_bytes = 3_328_599_654;
        let big = need(4 << 30);
        assert_eq!(
            refusal(&small, &big),
            "agent-3: 3.1 GiB free < 4.4 GiB needed"
        );
        // A full disk (0 free, announced low) refuses what fits nowhere
        // and what is of unknown size; 0 alone is "not measured".
        let mut full = agent("full");
        telemetry(&mut full).staging_free_bytes = 0;
        assert!(verdict(&full, &need(0)).is_ok());
        telemetry(&mut full).low_disk = true;
        assert_eq!(
            refusal(&full, &need(0)),
            "full: low disk (0 bytes free) and this run's size is not known yet"
        );
        assert_eq!(
            refusal(&full, &need(1 << 20)),
            "full: 0.0 GiB free < 0.3 GiB needed"
        );

        let mut laptop = agent("laptop");
        telemetry(&mut laptop).on_battery = Some(true);
        assert!(refusal(&laptop, &need(0))
            .contains("on battery (allow with `agent set laptop --on-battery allow`)"));
        laptop.info.on_battery = "allow".into();
        assert!(verdict(&laptop, &need(0)).is_ok());

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
            verdict(&suspect, &need(0)).is_ok(),
            "a confirmed run may use a suspect"
        );
    }

    #[test]
    fn the_big_file_goes_to_the_fast_agent_and_ties_spread_work() {
        let (laptop, pi) = (agent("laptop"), agent("pi"));
        let host = "download.kiwix.org:443";
        let s = swarm(
            &[pi.clone(), laptop.clone()],
            &[("laptop", host, 80 << 20), ("pi", host, 8 << 20)],
        );
        let big = Need {
            host: host.into(),
            ..need(90 << 30)
        };
        let ranking = rank(&s, &big, DEFAULTS, None);
        assert_eq!(names(&s, &ranking), ["laptop"]);
        let text = ranking.explain(&s.agents, &big, 1);
        assert!(
            text.starts_with("placed on laptop") && text.contains("pi: expected"),
            "{text}"
        );
        // Unknown rates: the agent's mean elsewhere, else the default.
        let s = swarm(
            &[pi.clone(), agent("fresh")],
            &[("pi", host, 8 << 20), ("fresh", "elsewhere:443", 40 << 20)],
        );
        let ranking = rank(&s, &big, DEFAULTS, None);
        assert_eq!(names(&s, &ranking), ["fresh"]);
        // Equal agents tie; the one with fewer jobs is preferred.
        let (a, mut b) = (agent("a"), agent("b"));
        let s = swarm(&[a.clone(), b.clone()], &[]);
        let ranking = rank(&s, &need(1 << 20), DEFAULTS, None);
        assert_eq!(names(&s, &ranking), ["a", "b"]);
        b.info.running = vec![7];
        let s = swarm(&[a, b], &[]);
        let ranking = rank(&s, &need(1 << 20), DEFAULTS, None);
        assert_eq!(names(&s, &ranking), ["a"], "a busy agent loses the tie");
        // The asking agent's own jobs, counted now, replace the snapshot's.
        let ranking = rank(&s, &need(1 << 20), DEFAULTS, Some((0, 2)));
        assert_eq!(names(&s, &ranking), ["b"]);
    }

    #[test]
    fn a_big_swarm_is_explained_in_a_few_lines() {
        let mut agents: Vec<Candidate> = (0..1000).map(|i| agent(&format!("a{i:04}"))).collect();
        telemetry(&mut agents[500]).temperature_celsius = Some(99.0);
        let s = swarm(&agents, &[("a0007", "", 1)]);
        let small = need(1 << 20);
        let ranking = rank(&s, &small, DEFAULTS, None);
        assert_eq!(ranking.best.len(), 998, "all but the hot and the slow tie");
        let text = ranking.explain(&s.agents, &small, ranking.best[0]);
        assert!(
            text.contains("a0500: 99 °C"),
            "the refused come first: {text}"
        );
        assert!(!text.contains("a0007"), "the slowest is counted: {text}");
        assert!(text.ends_with("991 more agents"), "{text}");
        assert!(text.len() < 600, "{} bytes", text.len());
        let nobody = Need {
            kind: "rss".into(),
            ..small
        };
        let ranking = rank(&s, &nobody, DEFAULTS, None);
        assert!(ranking.best.is_empty());
        let why = ranking.waiting(&s.agents, &nobody);
        assert!(
            why.starts_with("waiting for an agent that may take it: a0000: does not harvest rss;")
                && why.ends_with("; 992 more agents"),
            "{why}"
        );
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
