//! Work starts at once: a run that becomes due (a `run-now`, a schedule
//! coming round, a lease given back) reaches an idle agent in milliseconds,
//! not at its next heartbeat.
//!
//! Each registered agent holds a `Watch` stream open. Whenever runs are
//! queued the scheduler says so ([`Wakers::due`]); the wake task then
//! places the oldest due runs against the swarm as a heartbeat would and
//! sends a `Wake` to the best placed agent of each that is watching, one
//! run per agent. That agent heartbeats at once and its heartbeat grants
//! the lease through the usual path: a wake is only a hint, so a lost or
//! late one costs at most one heartbeat interval, as before.
//!
//! The same stream carries what must reach agents at once and used to wait
//! for their heartbeat: a pause or resume, and a household yield starting
//! or ending ([`Wakers::wake_all`]): the agents heartbeat and hear it.
//!
//! The heartbeat rate does not change, and an idle swarm costs nothing: a
//! stream waits without traffic, and the task only reads when runs were
//! queued or once a sweep interval (for runs whose backoff ran out). A run
//! is not woken for again within a heartbeat interval, so a run no agent
//! takes does not wake the swarm over and over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ark_proto::Wake;
use tokio::sync::{mpsc, Notify};

use super::*;

/// Due runs one pass weighs: the oldest, as a heartbeat's grant would.
const WAKE_SCAN: i64 = 32;

/// Agents' open `Watch` streams, and what the wake task has to do.
#[derive(Debug, Default)]
pub struct Wakers {
    watching: Mutex<HashMap<String, (u64, mpsc::Sender<Wake>)>>,
    /// Runs woken for, and when (ms): not again within a heartbeat.
    woken: Mutex<HashMap<i64, i64>>,
    next_id: std::sync::atomic::AtomicU64,
    queued: Notify,
}

impl Wakers {
    /// Runs were queued: the wake task looks now.
    pub fn due(&self) {
        self.queued.notify_one();
    }

    /// `agent`'s new stream (an older one of the same agent is replaced:
    /// a reconnecting agent's old stream is dead).
    pub fn watch(&self, agent: &str) -> mpsc::Receiver<Wake> {
        let (tx, rx) = mpsc::channel(4);
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.watching).insert(agent.to_string(), (id, tx));
        rx
    }

    /// Every watching agent heartbeats now: a change that applies to all
    /// of them (a pause or resume, a yield starting or ending) reaches them
    /// in milliseconds, not at their next heartbeat.
    pub fn wake_all(&self) {
        let agents: Vec<String> = lock(&self.watching).keys().cloned().collect();
        for agent in agents {
            self.wake(&agent, 0);
        }
    }

    /// `agent` (every agent when empty, as in `pause`) heartbeats now.
    pub fn wake_agent(&self, agent: &str) {
        match agent {
            "" => self.wake_all(),
            one => {
                self.wake(one, 0);
            }
        }
    }

    /// How many agents hold a stream open.
    pub fn watching(&self) -> usize {
        lock(&self.watching).len()
    }

    /// Sends `run` to `agent` if it is watching; false if it is not (or its
    /// stream is gone, which forgets it).
    fn wake(&self, agent: &str, run: i64) -> bool {
        let mut watching = lock(&self.watching);
        let Some((_, tx)) = watching.get(agent) else {
            return false;
        };
        match tx.try_send(Wake { run_id: run }) {
            Ok(()) => true,
            // A full channel: the agent has wakes it has not acted on yet,
            // so it is heartbeating anyway.
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                watching.remove(agent);
                false
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scheduler {
    /// Wakes, for each of the oldest due runs not woken for lately, the
    /// best placed agent that is watching (one run per agent). Returns the
    /// agents woken.
    pub fn wake_due(&self, now: i64) -> Result<Vec<String>> {
        let wakers = &self.wakers;
        if wakers.watching() == 0 {
            return Ok(Vec::new());
        }
        let quiet = ms(self.config.heartbeat);
        lock(&wakers.woken).retain(|_, at| now - *at < quiet);
        // The main connection: a wake for a run queued a moment ago must
        // see it committed (its transaction holds this lock until then).
        self.store.read(|conn| {
            let due = due_runs(conn, now)?;
            if due.is_empty() {
                return Ok(Vec::new());
            }
            let swarm = self.swarm(conn, now)?;
            let defaults = placement::Defaults {
                max_temp: self.config.max_temp,
                on_battery: self.config.on_battery,
            };
            let mut woken = Vec::new();
            for (run, kind, url) in due {
                if lock(&wakers.woken).contains_key(&run) {
                    continue;
                }
                let need = placement::Need {
                    kind,
                    host: placement::host_of(&url),
                    ..Default::default()
                };
                let ranking = placement::rank(&swarm, &need, defaults, None);
                let chosen = ranking.best.iter().find_map(|i| {
                    let name = &swarm.agents[*i].info.name;
                    (!woken.contains(name) && wakers.wake(name, run)).then(|| name.clone())
                });
                if let Some(name) = chosen {
                    lock(&wakers.woken).insert(run, now);
                    woken.push(name);
                }
            }
            Ok(woken)
        })
    }
}

/// The oldest queued runs that are due: id, kind, url.
fn due_runs(conn: &Connection, now: i64) -> Result<Vec<(i64, String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, url FROM runs WHERE state = 'queued' AND not_before <= ?1
          ORDER BY not_before, id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now, WAKE_SCAN], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The commander's wake task: a pass whenever runs are queued, and once
/// every `every` for runs whose wait ran out.
pub async fn wake_task(scheduler: Scheduler, every: Duration) {
    loop {
        tokio::select! {
            _ = scheduler.wakers.queued.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
        let s = scheduler.clone();
        match tokio::task::spawn_blocking(move || s.wake_due(ark_core::unix_ms())).await {
            Ok(Ok(woken)) if !woken.is_empty() => {
                tracing::debug!(?woken, "woke agents for due runs");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("waking agents for due runs failed: {e}"),
            Err(e) => tracing::error!("wake task failed: {e}"),
        }
    }
}
