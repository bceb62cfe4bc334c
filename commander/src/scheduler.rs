//! Leases: who does which run, for how long, under which fencing token.
//!
//! A run is `queued` until an eligible agent heartbeats with a free slot;
//! then it is `leased` to that agent under a new generation (the fencing
//! token) with a deadline of one lease TTL. Every progress report from the
//! holder renews the deadline. A report that names a generation other than
//! the run's current one, a lease that ended, or someone else's lease is
//! refused — that is how a device that comes back from the dead learns its
//! work was given away.
//!
//! Expiry (lease TTL passed without a report) sends the run back to the
//! queue at once, counting an attempt; the agent that lost it gets it back
//! only after the run has waited one more TTL, so another eligible agent
//! takes it first. A failed job is retried after an exponential backoff.
//! After `max_attempts` the run fails with its reasons in the event log.
//!
//! Pause (swarm or agent) stops new grants only. Jobs already running
//! finish: their bytes are half-fetched already and a lease is a promise;
//! pause is for "take no new work" (maintenance, a hot device, a metered
//! link), and an operator who wants a job gone removes its target.

use std::sync::Arc;

use ark_proto::{
    command, complete_request, Command, CompleteRequest, HeartbeatRequest, HeartbeatResponse, Job, Lease, LeaseRef,
    Pause, ProgressRequest, Resume,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::config::CommanderConfig;
use crate::state::{self, event, run_state, Store};
use crate::{CommanderError, Result};

/// The lease policy over the store.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub store: Arc<Store>,
    pub config: CommanderConfig,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Scheduler {
    pub fn new(store: Arc<Store>, config: CommanderConfig) -> Self {
        Self { store, config }
    }

    fn ttl(&self) -> i64 {
        ms(self.config.lease_ttl)
    }

    /// Wait before retry number `attempts` of a failed job.
    pub fn backoff(&self, attempts: u32) -> i64 {
        let base = ms(self.config.retry_backoff);
        let factor = 1i64 << attempts.saturating_sub(1).min(30);
        base.saturating_mul(factor).min(ms(self.config.retry_backoff_max))
    }

    /// Periodic upkeep: expire overdue leases, queue due runs.
    pub fn sweep(&self, now: i64) -> Result<usize> {
        self.store.tx(|tx| {
            let expired = self.expire_leases(tx, now)?;
            self.queue_due_runs(tx, now)?;
            Ok(expired)
        })
    }

    /// After a commander restart: agents could not renew while we were
    /// down, so open leases get one full TTL from now before they expire.
    pub fn restart_grace(&self, now: i64) -> Result<usize> {
        let ttl = self.ttl();
        self.store.tx(|tx| {
            let n = tx.execute(
                "UPDATE leases SET expires_at = MAX(expires_at, ?1) WHERE ended_at IS NULL",
                [now + ttl],
            )?;
            if n > 0 {
                event(tx, now, None, None, "restart", &format!("commander restarted: {n} open lease(s) extended by one TTL"))?;
            }
            Ok(n)
        })
    }

    fn expire_leases(&self, tx: &Connection, now: i64) -> Result<usize> {
        let overdue: Vec<(i64, i64, String)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT run_id, generation, agent FROM leases WHERE ended_at IS NULL AND expires_at <= ?1",
            )?;
            let rows = stmt.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (run, generation, agent) in &overdue {
            tx.execute(
                "UPDATE leases SET ended_at = ?1, outcome = 'expired' WHERE run_id = ?2 AND generation = ?3",
                params![now, run, generation],
            )?;
            let reason = format!("lease {generation} expired on agent {agent}: no report within {:?}", self.config.lease_ttl);
            self.retry_or_fail(tx, *run, agent, &reason, true, now, now)?;
            event(tx, now, Some(*run), Some(agent), "lease_expired", &reason)?;
        }
        Ok(overdue.len())
    }

    /// Counts a failed attempt and either re-queues the run (eligible from
    /// `not_before`) or fails it for good.
    #[allow(clippy::too_many_arguments)]
    fn retry_or_fail(
        &self,
        tx: &Connection,
        run: i64,
        agent: &str,
        reason: &str,
        retryable: bool,
        not_before: i64,
        now: i64,
    ) -> Result<()> {
        let attempts: u32 = tx.query_row("SELECT attempts FROM runs WHERE id = ?1", [run], |r| r.get(0))?;
        let attempts = attempts + 1;
        if !retryable || attempts >= self.config.max_attempts {
            let why = if retryable {
                format!("gave up after {attempts} attempts; last: {reason}")
            } else {
                format!("not retryable: {reason}")
            };
            tx.execute(
                "UPDATE runs SET state = ?1, attempts = ?2, finished_at = ?3, reason = ?4, last_agent = ?5 WHERE id = ?6",
                params![run_state::FAILED, attempts, now, why, agent, run],
            )?;
            event(tx, now, Some(run), Some(agent), "run_failed", &why)?;
        } else {
            tx.execute(
                "UPDATE runs SET state = ?1, attempts = ?2, not_before = ?3, reason = ?4, last_agent = ?5 WHERE id = ?6",
                params![run_state::QUEUED, attempts, not_before, reason, agent, run],
            )?;
        }
        Ok(())
    }

    fn queue_due_runs(&self, tx: &Connection, now: i64) -> Result<()> {
        let due: Vec<(String, i64)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT name, every_ms FROM targets WHERE next_due IS NOT NULL AND next_due <= ?1",
            )?;
            let rows = stmt.query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (target, every) in due {
            queue_run(tx, &target, now)?;
            let next = (every > 0).then_some(now + every);
            tx.execute("UPDATE targets SET next_due = ?1 WHERE name = ?2", params![next, target])?;
        }
        Ok(())
    }

    /// Queues a run of `target` now, unless one is already queued or leased
    /// (then that one is returned).
    pub fn run_now(&self, target: &str, now: i64) -> Result<ark_proto::RunInfo> {
        self.store.tx(|tx| {
            if state::target(tx, target)?.is_none() {
                return Err(CommanderError::NotFound(format!(
                    "no target named {target:?} (see `ark-commander target ls`)"
                )));
            }
            let id = queue_run(tx, target, now)?;
            state::run(tx, id)
        })
    }

    /// An agent's heartbeat: record it, then answer with the pause state,
    /// leases it must drop, and new leases for its free slots.
    pub fn heartbeat(&self, agent: &str, req: &HeartbeatRequest, now: i64) -> Result<HeartbeatResponse> {
        self.store.tx(|tx| {
            state::agent_seen(tx, agent, req.telemetry.as_ref(), now)?;
            self.expire_leases(tx, now)?;
            self.queue_due_runs(tx, now)?;
            let paused = if state::swarm_paused(tx)? {
                Some("swarm")
            } else if state::agent_paused(tx, agent)? {
                Some("agent")
            } else {
                None
            };
            let mut commands = vec![Command {
                command: Some(match paused {
                    Some(scope) => command::Command::Pause(Pause { scope: scope.into() }),
                    None => command::Command::Resume(Resume {}),
                }),
            }];
            for held in &req.active {
                if self.check_lease(tx, agent, held, now).is_err() {
                    commands.push(Command {
                        command: Some(command::Command::DropLease(*held)),
                    });
                }
            }
            let leases = match paused {
                Some(_) => Vec::new(),
                None => self.grant(tx, agent, req.free_slots, now)?,
            };
            Ok(HeartbeatResponse {
                commands,
                leases,
                heartbeat_interval_ms: ms(self.config.heartbeat) as u64,
            })
        })
    }

    fn grant(&self, tx: &Connection, agent: &str, free_slots: u32, now: i64) -> Result<Vec<Lease>> {
        if free_slots == 0 {
            return Ok(Vec::new());
        }
        let kinds = state::capabilities(tx, agent)?
            .map(|c| c.kinds)
            .unwrap_or_else(|| vec![ark_proto::KIND_FILE.to_string()]);
        let ttl = self.ttl();
        let candidates: Vec<(i64, String, String, String, u32, i64)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id, target, kind, url, attempts, generation FROM runs
                 WHERE state = 'queued' AND not_before <= ?1
                   AND (last_agent IS NULL OR last_agent != ?2 OR not_before + ?3 <= ?1)
                 ORDER BY not_before, id",
            )?;
            let rows = stmt.query_map(params![now, agent, ttl], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut leases = Vec::new();
        for (run, target, kind, url, attempts, generation) in candidates {
            if leases.len() as u32 >= free_slots {
                break;
            }
            if !kinds.contains(&kind) {
                continue;
            }
            let generation = generation + 1;
            tx.execute(
                "UPDATE runs SET state = 'leased', generation = ?1 WHERE id = ?2",
                params![generation, run],
            )?;
            tx.execute(
                "INSERT INTO leases (run_id, generation, agent, granted_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run, generation, agent, now, now + ttl],
            )?;
            event(tx, now, Some(run), Some(agent), "leased", &format!("lease {generation} granted (attempt {})", attempts + 1))?;
            leases.push(Lease {
                run_id: run,
                generation: generation as u64,
                ttl_ms: ttl as u64,
                attempt: attempts + 1,
                job: Some(Job { target, kind, url }),
            });
        }
        Ok(leases)
    }

    /// Checks that `lease` is open, current and held by `agent`.
    fn check_lease(&self, tx: &Connection, agent: &str, lease: &LeaseRef, now: i64) -> Result<()> {
        let (run, generation) = (lease.run_id, lease.generation as i64);
        let current: Option<i64> = tx
            .query_row("SELECT generation FROM runs WHERE id = ?1", [run], |r| r.get(0))
            .optional()?;
        let Some(current) = current else {
            return Err(CommanderError::StaleLease(format!("run {run} does not exist: drop the job")));
        };
        let row: Option<(String, i64, Option<String>)> = tx
            .query_row(
                "SELECT agent, expires_at, outcome FROM leases WHERE run_id = ?1 AND generation = ?2",
                params![run, generation],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((holder, expires_at, outcome)) = row else {
            return Err(CommanderError::StaleLease(format!(
                "run {run} never had lease generation {generation}: drop the job"
            )));
        };
        if holder != agent {
            return Err(CommanderError::PermissionDenied(format!(
                "lease {generation} of run {run} belongs to another agent"
            )));
        }
        if current != generation {
            return Err(CommanderError::StaleLease(format!(
                "stale lease: run {run} was re-leased (generation {current}, you hold {generation}); drop the job"
            )));
        }
        if let Some(outcome) = outcome {
            return Err(CommanderError::StaleLease(format!(
                "lease {generation} of run {run} has already ended ({outcome}); drop the job"
            )));
        }
        if expires_at <= now {
            return Err(CommanderError::StaleLease(format!(
                "lease {generation} of run {run} expired {} ms ago; drop the job",
                now - expires_at
            )));
        }
        Ok(())
    }

    /// Records a refused report, then returns the refusal.
    fn refuse(&self, agent: &str, lease: &LeaseRef, err: CommanderError, now: i64) -> CommanderError {
        let message = format!("refused report from {agent} on run {} lease {}: {err}", lease.run_id, lease.generation);
        tracing::warn!("{message}");
        let _ = self
            .store
            .tx(|tx| event(tx, now, Some(lease.run_id), Some(agent), "refused", &message));
        err
    }

    /// A progress report: renews the lease; returns the new time to live.
    pub fn progress(&self, agent: &str, req: &ProgressRequest, now: i64) -> Result<u64> {
        let lease = req
            .lease
            .ok_or_else(|| CommanderError::Invalid("progress report without a lease".into()))?;
        let ttl = self.ttl();
        let checked = self.store.tx(|tx| {
            self.check_lease(tx, agent, &lease, now)?;
            tx.execute(
                "UPDATE leases SET expires_at = ?1 WHERE run_id = ?2 AND generation = ?3",
                params![now + ttl, lease.run_id, lease.generation as i64],
            )?;
            tx.execute(
                "UPDATE runs SET bytes_done = ?1 WHERE id = ?2",
                params![req.bytes_done as i64, lease.run_id],
            )?;
            Ok(())
        });
        match checked {
            Ok(()) => Ok(ttl as u64),
            Err(e @ (CommanderError::StaleLease(_) | CommanderError::PermissionDenied(_))) => {
                Err(self.refuse(agent, &lease, e, now))
            }
            Err(e) => Err(e),
        }
    }

    /// A completion: the run succeeds, or its failure is counted.
    pub fn complete(&self, agent: &str, req: &CompleteRequest, now: i64) -> Result<()> {
        let lease = req
            .lease
            .ok_or_else(|| CommanderError::Invalid("completion without a lease".into()))?;
        let outcome = req
            .outcome
            .clone()
            .ok_or_else(|| CommanderError::Invalid("completion without an outcome".into()))?;
        let done = self.store.tx(|tx| {
            self.check_lease(tx, agent, &lease, now)?;
            let (run, generation) = (lease.run_id, lease.generation as i64);
            match outcome {
                complete_request::Outcome::Success(result) => {
                    tx.execute(
                        "UPDATE leases SET ended_at = ?1, outcome = 'succeeded' WHERE run_id = ?2 AND generation = ?3",
                        params![now, run, generation],
                    )?;
                    tx.execute(
                        "UPDATE runs SET state = ?1, finished_at = ?2, size_bytes = ?3, bytes_done = ?3, reason = '',
                         last_agent = ?4 WHERE id = ?5",
                        params![run_state::SUCCEEDED, now, result.size_bytes as i64, agent, run],
                    )?;
                    event(tx, now, Some(run), Some(agent), "run_succeeded", &format!("{} bytes", result.size_bytes))?;
                }
                complete_request::Outcome::Failure(failure) => {
                    tx.execute(
                        "UPDATE leases SET ended_at = ?1, outcome = 'failed' WHERE run_id = ?2 AND generation = ?3",
                        params![now, run, generation],
                    )?;
                    let attempts: u32 = tx.query_row("SELECT attempts FROM runs WHERE id = ?1", [run], |r| r.get(0))?;
                    let not_before = now + self.backoff(attempts + 1);
                    event(tx, now, Some(run), Some(agent), "job_failed", &failure.reason)?;
                    self.retry_or_fail(tx, run, agent, &failure.reason, failure.retryable, not_before, now)?;
                }
            }
            Ok(())
        });
        match done {
            Err(e @ (CommanderError::StaleLease(_) | CommanderError::PermissionDenied(_))) => {
                Err(self.refuse(agent, &lease, e, now))
            }
            other => other,
        }
    }
}

/// Inserts a queued run for `target` unless one is active; returns its id.
fn queue_run(tx: &Connection, target: &str, now: i64) -> Result<i64> {
    let active: Option<i64> = tx
        .query_row(
            "SELECT id FROM runs WHERE target = ?1 AND state IN ('queued', 'leased') ORDER BY id LIMIT 1",
            [target],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = active {
        return Ok(id);
    }
    let (kind, url) = state::target(tx, target)?
        .ok_or_else(|| CommanderError::NotFound(format!("no target named {target:?}")))?;
    tx.execute(
        "INSERT INTO runs (target, kind, url, state, not_before, created_at) VALUES (?1, ?2, ?3, 'queued', ?4, ?4)",
        params![target, kind, url, now],
    )?;
    let id = tx.last_insert_rowid();
    event(tx, now, Some(id), None, "queued", &format!("run of {target} queued"))?;
    Ok(id)
}
