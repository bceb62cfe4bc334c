//! Agents behind the same uplink back off together. Each agent with
//! self-yield on watches the queue its own transfers add; when one of them
//! reports that it backs off (it cut its rate for the queue within the
//! last 10 s), every other agent on the same uplink (`uplink` in
//! agent.toml, "home" by default) is held, through its heartbeat's
//! `uplink_budget`, to the lowest rate any backing-off agent there holds.
//! The queue is one queue: an agent that does not see it yet (it probes
//! another origin, its transfer just started) must not fill what another
//! just drained.
//!
//! An agent that backs off itself gets no budget: its own controller
//! answers the queue, and two agents holding each other to the other's
//! rate would ratchet each other down for ever. An agent with `--yield
//! off` neither gets a budget nor counts.

use ark_proto::AgentInfo;

use super::placement::Candidate;
use super::*;
use crate::state::uplink;

/// The budget for `agent`: Some((bytes/s, the agent whose rate it is))
/// while another online agent on its uplink backs off, None otherwise.
pub fn budget<'a>(agent: &str, swarm: &'a [Candidate]) -> Option<(u64, &'a str)> {
    let backing_off = |a: &AgentInfo| {
        a.self_yield
            && a.state == "online"
            && a.telemetry
                .and_then(|t| t.self_yield)
                .is_some_and(|y| y.enabled && y.backing_off && y.rate_limit > 0)
    };
    let me = &swarm.iter().find(|c| c.info.name == agent)?.info;
    if backing_off(me) {
        return None;
    }
    let mine = uplink(me.capabilities.as_ref()?);
    swarm
        .iter()
        .map(|c| &c.info)
        .filter(|a| a.name != agent && backing_off(a))
        .filter(|a| a.capabilities.as_ref().is_some_and(|c| uplink(c) == mine))
        .filter_map(|a| Some((a.telemetry?.self_yield?.rate_limit, a.name.as_str())))
        .min()
}

impl Scheduler {
    /// `agent`'s uplink budget now (bytes/s, 0 = none), against the
    /// swarm's snapshot.
    pub(super) fn uplink_budget(&self, tx: &Connection, agent: &str, now: i64) -> Result<u64> {
        let swarm = self.swarm(tx, now)?;
        Ok(budget(agent, &swarm.agents)
            .map(|(rate, _)| rate)
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_proto::{Capabilities, SelfYield, Telemetry};

    fn agent(name: &str, uplink: &str, on: bool, backing_off_at: Option<u64>) -> Candidate {
        Candidate {
            info: AgentInfo {
                name: name.into(),
                state: "online".into(),
                self_yield: on,
                capabilities: Some(Capabilities {
                    uplink: uplink.into(),
                    ..Default::default()
                }),
                telemetry: Some(Telemetry {
                    self_yield: Some(SelfYield {
                        enabled: on,
                        backing_off: backing_off_at.is_some(),
                        rate_limit: backing_off_at.unwrap_or(0),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            window_open: true,
            mean_rate: None,
        }
    }

    #[test]
    fn the_others_on_an_uplink_keep_to_the_lowest_rate_of_those_backing_off() {
        let swarm = [
            agent("pi", "", true, None),
            agent("laptop", "home", true, Some(900_000)),
            agent("nas", "home", true, Some(400_000)),
            agent("attic", "attic", true, Some(100_000)),
            agent("off", "home", false, Some(50_000)),
        ];
        // "" is "home"; the attic's uplink and an agent with yield off do
        // not count.
        assert_eq!(budget("pi", &swarm), Some((400_000, "nas")));
        // One that backs off itself answers the queue on its own.
        assert_eq!(budget("laptop", &swarm), None);
        assert_eq!(budget("attic", &swarm), None, "alone on its uplink");
        assert_eq!(
            budget("off", &swarm),
            Some((400_000, "nas")),
            "the scheduler skips it"
        );
        let mut lost = swarm.clone();
        lost[2].info.state = "lost".into();
        assert_eq!(budget("pi", &lost), Some((900_000, "laptop")));
        assert_eq!(budget("nobody", &swarm), None);
    }
}
