//! An agent that crosses its temperature cap while it works. Placement
//! already gives a hot agent no new work; for the jobs it holds, the
//! commander slows its transfers to [`HOT_RATE`] at once (its hashing keeps
//! pace with the bytes, so the device's load drops with them), and if the
//! device stays hot for `hot-handback` (default 10 min) it hands its jobs
//! back: the leases end, the runs go back to the queue without an attempt
//! counted, and placement sends them to a cooler agent.
//!
//! Why slow first and hand back late: a job that moves starts again from
//! zero elsewhere (the verified bytes the hot device holds are not
//! transferable, and the commander keeps only a verified upload's prefix),
//! so a device that cools within the window loses nothing, and only one
//! that does not cool loses its jobs. Back under its cap, it works at full
//! pace again.

use super::*;

/// Bytes/s a hot agent's transfers are held to: enough to keep its leases
/// and a feed or two moving, little enough that its CPU (hashing, TLS)
/// idles and it cools.
pub const HOT_RATE: u64 = 256 << 10;

impl Scheduler {
    /// Notes `agent`'s temperature from this heartbeat; Some(the rate its
    /// transfers are held to) while it is at or over its cap. An agent hot
    /// for longer than `hot-handback` loses its leases here (the heartbeat's
    /// lease check then tells it to drop them).
    pub(super) fn cool_down(
        &self,
        tx: &Connection,
        agent: &str,
        telemetry: Option<&ark_proto::Telemetry>,
        now: i64,
    ) -> Result<Option<u64>> {
        let (cap, hot_since): (f64, Option<i64>) = tx.query_row(
            "SELECT max_temp, hot_since FROM agents WHERE name = ?1",
            [agent],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let cap = if cap > 0.0 {
            cap as f32
        } else {
            self.config.max_temp
        };
        let Some(temp) = telemetry
            .and_then(|t| t.temperature_celsius)
            .filter(|t| *t >= cap)
        else {
            if hot_since.is_some() {
                let said = format!("{agent} is below its cap of {cap:.0} °C again: full pace");
                set_hot(tx, agent, None, ("cooled", &said), now)?;
            }
            return Ok(None);
        };
        let since = match hot_since {
            Some(since) => since,
            None => {
                let said = format!(
                    "{agent}: {temp:.0} °C ≥ cap {cap:.0} °C: its transfers are slowed to {} KiB/s; its jobs go elsewhere if it stays hot for {:?}",
                    HOT_RATE >> 10,
                    self.config.hot_handback
                );
                set_hot(tx, agent, Some(now), ("hot", &said), now)?;
                now
            }
        };
        if now - since >= ms(self.config.hot_handback) {
            let held: Vec<i64> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT run_id FROM leases WHERE agent = ?1 AND ended_at IS NULL",
                )?;
                let rows = stmt.query_map([agent], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for run in held {
                let why = format!(
                    "handed back: {agent} stayed at or over its cap of {cap:.0} °C for {:?} ({temp:.0} °C)",
                    self.config.hot_handback
                );
                self.hand_back(tx, (run, agent), ("hot", &why), 0, now)?;
            }
        }
        Ok(Some(HOT_RATE))
    }
}

/// Records when `agent` got hot (None: it is cool again) and the event that
/// says so.
fn set_hot(
    tx: &Connection,
    agent: &str,
    since: Option<i64>,
    (kind, said): (&str, &str),
    now: i64,
) -> Result<()> {
    tx.execute(
        "UPDATE agents SET hot_since = ?2 WHERE name = ?1",
        params![agent, since],
    )?;
    event(tx, now, None, Some(agent), kind, said)
}
