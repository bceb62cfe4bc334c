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
    command, complete_request, Command, CompleteRequest, HeartbeatRequest, HeartbeatResponse, Job,
    Lease, LeaseRef, Pause, ProgressRequest, Resume,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::config::CommanderConfig;
use crate::state::{self, event, run_state, Store};
use crate::{CommanderError, Result};

mod grant;
mod hot;
pub mod placement;
pub mod quorum;
pub mod uplink;
pub mod wake;

/// The lease policy over the store.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub store: Arc<Store>,
    pub config: CommanderConfig,
    /// The archive root, where a git job's known refs are read from the
    /// landed mirror (None in unit tests without an archive).
    pub archive_root: Option<std::path::PathBuf>,
    /// The commander's own endpoints (`host:port`, `*:port` for every
    /// interface), sent with every job so no agent ever fetches them.
    pub own_endpoints: Vec<String>,
    /// The swarm as placement last read it, and when: read at most once a
    /// [`placement::SNAPSHOT_MS`] however many agents heartbeat, so a
    /// thousand agents cost one read of the agents a second, not a
    /// thousand.
    swarm: Arc<std::sync::Mutex<Option<Arc<placement::Swarm>>>>,
    /// When a heartbeat last placed against the swarm (ms): the background
    /// refresh reads the swarm only while placements want it, so an idle
    /// swarm costs nothing.
    swarm_wanted: Arc<std::sync::atomic::AtomicI64>,
    /// Agents' `Watch` streams: a run queued now wakes its best agent.
    pub wakers: Arc<wake::Wakers>,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Scheduler {
    pub fn new(store: Arc<Store>, config: CommanderConfig) -> Self {
        Self {
            store,
            config,
            archive_root: None,
            own_endpoints: Vec::new(),
            swarm: Default::default(),
            swarm_wanted: Default::default(),
            wakers: Default::default(),
        }
    }

    /// The scheduler of a commander whose archive is at `root`.
    pub fn with_archive(mut self, root: impl Into<std::path::PathBuf>) -> Self {
        self.archive_root = Some(root.into());
        self
    }

    fn ttl(&self) -> i64 {
        ms(self.config.lease_ttl)
    }

    /// Wait before retry number `attempts` of a failed job.
    pub fn backoff(&self, attempts: u32) -> i64 {
        let base = ms(self.config.retry_backoff);
        let factor = 1i64 << attempts.saturating_sub(1).min(30);
        base.saturating_mul(factor)
            .min(ms(self.config.retry_backoff_max))
    }

    /// Periodic upkeep: expire overdue leases, queue due runs.
    pub fn sweep(&self, now: i64) -> Result<usize> {
        let expired = self.store.tx(|tx| {
            let expired = self.expire_leases(tx, now)?;
            self.queue_due_runs(tx, now)?;
            Ok(expired)
        })?;
        if expired > 0 {
            self.wakers.due(); // their runs are queued again
        }
        Ok(expired)
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
                event(
                    tx,
                    now,
                    None,
                    None,
                    "restart",
                    &format!("commander restarted: {n} open lease(s) extended by one TTL"),
                )?;
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
            let reason = format!(
                "lease {generation} expired on agent {agent}: no report within {:?}",
                self.config.lease_ttl
            );
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
        let attempts: u32 =
            tx.query_row("SELECT attempts FROM runs WHERE id = ?1", [run], |r| {
                r.get(0)
            })?;
        let attempts = attempts + 1;
        // A vote belongs to the attempt that cast it.
        tx.execute("DELETE FROM votes WHERE run_id = ?1", [run])?;
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
            // Its quarantined bytes will never land: the next sweep
            // reclaims them (see Archive::reclaim_quarantine).
            tx.execute("DELETE FROM uploads WHERE run_id = ?1", [run])?;
            event(tx, now, Some(run), Some(agent), "run_failed", &why)?;
        } else {
            tx.execute(
                "UPDATE runs SET state = ?1, attempts = ?2, not_before = ?3, reason = ?4, last_agent = ?5 WHERE id = ?6",
                params![run_state::QUEUED, attempts, not_before, reason, agent, run],
            )?;
        }
        Ok(())
    }

    /// `agent` gives `run` back without an attempt counted: it stayed hot
    /// too long (see hot.rs), or its staging disk cannot hold the body. Its
    /// lease ends with `outcome`, its vote is withdrawn, and the run is
    /// queued again at once, another agent first; `size` (0: unknown) tells
    /// placement what the next agent needs, so one without room is refused
    /// with the reason.
    fn hand_back(
        &self,
        tx: &Connection,
        (run, agent): (i64, &str),
        (outcome, why): (&str, &str),
        size: u64,
        now: i64,
    ) -> Result<()> {
        end_current_lease(tx, run, outcome, now)?;
        tx.execute("DELETE FROM votes WHERE run_id = ?1", [run])?;
        tx.execute(
            "UPDATE runs SET state = ?1, not_before = ?2, reason = ?3, last_agent = ?4,
                    bytes_total = MAX(bytes_total, ?5)
              WHERE id = ?6 AND state = 'leased'",
            params![run_state::QUEUED, now, why, agent, size as i64, run],
        )?;
        event(tx, now, Some(run), Some(agent), "handed_back", why)?;
        self.wakers.due();
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
            self.queue_run(tx, &target, now)?;
            let next = (every > 0).then_some(now + every);
            tx.execute(
                "UPDATE targets SET next_due = ?1 WHERE name = ?2",
                params![next, target],
            )?;
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
            let id = self.queue_run(tx, target, now)?;
            state::run(tx, id)
        })
    }

    /// An agent's heartbeat: record it, then answer with the pause state,
    /// leases it must drop, and new leases for its free slots.
    pub fn heartbeat(
        &self,
        agent: &str,
        req: &HeartbeatRequest,
        now: i64,
    ) -> Result<HeartbeatResponse> {
        self.store.tx(|tx| {
            state::agent_seen(tx, agent, req.telemetry.as_ref(), now)?;
            self.expire_leases(tx, now)?;
            self.queue_due_runs(tx, now)?;
            // Hot: its transfers slowed now, its jobs handed back if it
            // stays (before the lease check, which then drops them).
            let hot = self.cool_down(tx, agent, req.telemetry.as_ref(), now)?;
            let paused = if state::swarm_paused(tx)? {
                Some("swarm")
            } else if state::agent_paused(tx, agent)? {
                Some("agent")
            } else {
                None
            };
            let mut commands = vec![Command {
                command: Some(match paused {
                    Some(scope) => command::Command::Pause(Pause {
                        scope: scope.into(),
                    }),
                    None => command::Command::Resume(Resume {}),
                }),
            }];
            let (keeping, drop_kept) = kept_runs(tx, agent, &req.kept)?;
            for held in &req.active {
                if self.check_lease(tx, agent, held, now).is_err() {
                    commands.push(Command {
                        command: Some(command::Command::DropLease(*held)),
                    });
                }
            }
            let (mut agent_bandwidth_cap, window, self_yield) = state::agent_settings(tx, agent)?;
            if let Some(hot) = hot {
                agent_bandwidth_cap = match agent_bandwidth_cap {
                    0 => hot,
                    cap => cap.min(hot),
                };
            }
            // Yielding to the household: no new work, transfers at the floor.
            let yielding = !crate::household::current(tx)?.holding().is_empty();
            if yielding {
                let floor = self.config.yield_floor.max(1);
                agent_bandwidth_cap = match agent_bandwidth_cap {
                    0 => floor,
                    cap => cap.min(floor),
                };
            }
            // Outside its window an agent finishes what it holds and takes
            // nothing new, like a pause that lifts itself.
            let leases = match paused {
                None if !yielding && crate::window::open_at(&window, now) => {
                    self.grant(tx, agent, (req.free_slots, &keeping), now)?
                }
                _ => Vec::new(),
            };
            // Self-yield: on unless the operator said off; held to the
            // rate of another agent on its uplink that backs off.
            let uplink_budget = if self_yield {
                self.uplink_budget(tx, agent, now)?
            } else {
                0
            };
            Ok(HeartbeatResponse {
                commands,
                leases,
                heartbeat_interval_ms: ms(self.config.heartbeat) as u64,
                agent_bandwidth_cap,
                self_yield_off: !self_yield,
                uplink_budget,
                drop_kept,
            })
        })
    }

    /// Sets the endpoints the commander listens on (once bound).
    pub fn with_own_endpoints(mut self, endpoints: Vec<String>) -> Self {
        self.own_endpoints = endpoints;
        self
    }

    /// Checks that `lease` is open, current and held by `agent`.
    pub fn check_lease(
        &self,
        tx: &Connection,
        agent: &str,
        lease: &LeaseRef,
        now: i64,
    ) -> Result<()> {
        let (run, generation) = (lease.run_id, lease.generation as i64);
        let current: Option<i64> = tx
            .query_row("SELECT generation FROM runs WHERE id = ?1", [run], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(current) = current else {
            return Err(CommanderError::StaleLease(format!(
                "run {run} does not exist: drop the job"
            )));
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

    /// Completes `run` because its body is in the archive (landed now, or
    /// found there already): the open lease ends, the run takes `state`
    /// (succeeded or unchanged), and the target remembers the validators.
    /// Verified bytes are a fact whoever fetched them, so this ends whichever
    /// lease is current; a holder of an older one is refused on its next
    /// report.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_run(
        &self,
        tx: &Connection,
        run: i64,
        agent: &str,
        state: &str,
        size: u64,
        blake3: &str,
        validators: Option<(&str, &str)>,
        message: &str,
        now: i64,
    ) -> Result<()> {
        end_current_lease(tx, run, state, now)?;
        tx.execute(
            "UPDATE runs SET state = ?1, finished_at = ?2, size_bytes = ?3, bytes_done = ?3, reason = '',
             last_agent = ?4, blake3 = ?6 WHERE id = ?5",
            params![state, now, size as i64, agent, run, blake3],
        )?;
        if let Some((etag, last_modified)) = validators {
            // What the origin said about this version, so the next run can
            // ask "changed since?".
            tx.execute(
                "UPDATE targets SET etag = ?1, last_modified = ?2
                 WHERE name = (SELECT target FROM runs WHERE id = ?3)",
                params![etag, last_modified, run],
            )?;
        }
        event(
            tx,
            now,
            Some(run),
            Some(agent),
            &format!("run_{state}"),
            message,
        )
    }

    /// Puts `run` back in the queue because the archive's disk cannot hold
    /// it now: the lease ends, no attempt is counted (the harvest did not
    /// fail), and the run waits with its own backoff (doubling from
    /// `retry-backoff` with each deferral, capped at `retry-backoff-max`) so
    /// it lands once space is free.
    pub fn defer_for_space(
        &self,
        tx: &Connection,
        run: i64,
        agent: &str,
        reason: &str,
        now: i64,
    ) -> Result<i64> {
        end_current_lease(tx, run, "deferred", now)?;
        tx.execute("DELETE FROM votes WHERE run_id = ?1", [run])?;
        let deferrals: u32 = tx.query_row(
            "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND kind = 'no_space'",
            [run],
            |r| r.get(0),
        )?;
        let wait = self.backoff(deferrals + 1);
        tx.execute(
            "UPDATE runs SET state = ?1, not_before = ?2, reason = ?3, last_agent = ?4 WHERE id = ?5",
            params![run_state::QUEUED, now + wait, reason, agent, run],
        )?;
        event(
            tx,
            now,
            Some(run),
            Some(agent),
            "no_space",
            &format!("{reason}; retrying in {} s", wait / 1000),
        )?;
        Ok(wait)
    }

    /// Fails `run` because the commander's own check refused what the agent
    /// delivered: the lease ends and the run fails (no retry: the origin
    /// serves a file that is not what its kind promises).
    pub fn refuse_delivery(
        &self,
        tx: &Connection,
        run: i64,
        agent: &str,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        end_current_lease(tx, run, "failed", now)?;
        event(
            tx,
            now,
            Some(run),
            Some(agent),
            "verification_failed",
            reason,
        )?;
        self.retry_or_fail(tx, run, agent, reason, false, now, now)
    }

    /// Records a refused report, then returns the refusal.
    pub fn refuse(
        &self,
        agent: &str,
        lease: &LeaseRef,
        err: CommanderError,
        now: i64,
    ) -> CommanderError {
        let message = format!(
            "refused report from {agent} on run {} lease {}: {err}",
            lease.run_id, lease.generation
        );
        tracing::warn!("{message}");
        let _ = self.store.tx(|tx| {
            event(
                tx,
                now,
                Some(lease.run_id),
                Some(agent),
                "refused",
                &message,
            )
        });
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
                "UPDATE runs SET bytes_done = ?1, bytes_total = ?2, bytes_per_second = ?3 WHERE id = ?4",
                params![
                    req.bytes_done as i64,
                    req.bytes_total as i64,
                    req.bytes_per_second as i64,
                    lease.run_id
                ],
            )?;
            let url: String =
                tx.query_row("SELECT url FROM runs WHERE id = ?1", [lease.run_id], |r| r.get(0))?;
            state::record_throughput(tx, agent, &placement::host_of(&url), req.bytes_per_second, now)?;
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
                complete_request::Outcome::Success(result) if !result.unchanged => {
                    return Err(CommanderError::Invalid(format!(
                        "run {run}: a body must go through Have and Upload, where the commander verifies and lands it; \
                         Complete reports only an unchanged origin or a failure"
                    )));
                }
                complete_request::Outcome::Success(result) if quorum::group_of(tx, run)?.is_some() => {
                    // In a quorum group "nothing changed" is one agent's
                    // claim like any other: a vote, not the run's end.
                    let group_id: i64 = tx.query_row(
                        "SELECT quorum_group FROM runs WHERE id = ?1",
                        [run],
                        |r| r.get(0),
                    )?;
                    let vote = quorum::Vote {
                        run_id: run,
                        group_id,
                        agent: agent.to_string(),
                        key: quorum::UNCHANGED_KEY.into(),
                        etag: result.etag,
                        last_modified: result.last_modified,
                        ..quorum::Vote::default()
                    };
                    self.record_vote(tx, &vote, false, now)?;
                }
                complete_request::Outcome::Success(_) => {
                    self.finish_run(
                        tx,
                        run,
                        agent,
                        run_state::UNCHANGED,
                        0,
                        "",
                        None,
                        "origin unchanged (conditional request answered 304)",
                        now,
                    )?;
                }
                complete_request::Outcome::Failure(failure) if failure.handed_back => {
                    let why = ("handed_back", failure.reason.as_str());
                    self.hand_back(tx, (run, agent), why, failure.size_bytes, now)?;
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

/// Ends run `run`'s current lease (if still open) with `outcome`.
fn end_current_lease(tx: &Connection, run: i64, outcome: &str, now: i64) -> Result<()> {
    let generation: i64 =
        tx.query_row("SELECT generation FROM runs WHERE id = ?1", [run], |r| {
            r.get(0)
        })?;
    tx.execute(
        "UPDATE leases SET ended_at = ?1, outcome = ?4 WHERE run_id = ?2 AND generation = ?3 AND ended_at IS NULL",
        params![now, run, generation, outcome],
    )?;
    Ok(())
}

impl Scheduler {
    /// Inserts a queued run for `target` unless one is active (with the
    /// rest of its quorum group when it asks for more than one agent);
    /// returns its id.
    fn queue_run(&self, tx: &Connection, target: &str, now: i64) -> Result<i64> {
        let (id, inserted) = queue_run(tx, target, now)?;
        if inserted {
            self.wakers.due();
        }
        let resolved_first =
            state::book_of(tx, target)?.is_some() || state::account_of(tx, target)?.is_some();
        if inserted && resolved_first {
            // A book's release, an account's repositories are resolved
            // first (crate::sources); a book's quorum group opens once the
            // run knows what to harvest.
            tx.execute(
                "UPDATE runs SET state = ?2, reason = 'resolving its source' WHERE id = ?1",
                params![id, run_state::RESOLVING],
            )?;
            return Ok(id);
        }
        if inserted {
            self.open_quorum(tx, id, target, now)?;
        }
        Ok(id)
    }

    /// Queues a run of `target` inside `tx` (as [`Scheduler::run_now`]
    /// does, for callers already in a transaction); its id.
    pub fn queue_in(&self, tx: &Connection, target: &str, now: i64) -> Result<i64> {
        self.queue_run(tx, target, now)
    }

    /// Opens the quorum group of the new run `id` when its target asks for
    /// a fixed quorum of 2 or more.
    fn open_quorum(&self, tx: &Connection, id: i64, target: &str, now: i64) -> Result<()> {
        if let crate::config::Quorum::Fixed(need @ 2..) =
            quorum::target_quorum(tx, target, self.config.quorum)?
        {
            self.open_group(tx, id, target, need, now)?;
        }
        Ok(())
    }

    /// The resolving run `id` of a book now knows its release: it harvests
    /// `url`, whose bytes must have the SHA-256 the origin published at
    /// `source` (the commander checks it before landing).
    pub fn queue_resolved(
        &self,
        tx: &Connection,
        id: i64,
        (url, sha256, source): (&str, &str, &str),
        now: i64,
    ) -> Result<()> {
        let target: String = tx.query_row(
            "UPDATE runs SET state = ?2, url = ?3, expected_sha256 = ?4, expected_source = ?5,
               reason = '', not_before = ?6 WHERE id = ?1 AND state = ?7 RETURNING target",
            params![
                id,
                run_state::QUEUED,
                url,
                sha256,
                source,
                now,
                run_state::RESOLVING
            ],
            |r| r.get(0),
        )?;
        self.wakers.due();
        self.open_quorum(tx, id, &target, now)
    }
}

/// Inserts a queued run for `target` unless one is active; returns its id
/// and whether it is new.
fn queue_run(tx: &Connection, target: &str, now: i64) -> Result<(i64, bool)> {
    let active: Option<i64> = tx
        .query_row(
            &format!(
                "SELECT id FROM runs WHERE target = ?1 AND state IN {}
                   AND kind = (SELECT kind FROM targets WHERE name = ?1)
                 ORDER BY id LIMIT 1",
                run_state::ACTIVE_SQL
            ),
            [target],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = active {
        return Ok((id, false));
    }
    let (kind, url) = state::target(tx, target)?
        .ok_or_else(|| CommanderError::NotFound(format!("no target named {target:?}")))?;
    let id = state::insert_run(
        tx,
        target,
        &kind,
        &url,
        &format!("run of {target} queued"),
        now,
    )?;
    Ok((id, true))
}

/// Of the runs whose staged bytes `agent` kept after its lease ran out
/// while it could not reach us: those still queued (it gets them back
/// first, and resumes), and those it will not get back — ended, leased to
/// another agent, or unknown — whose bytes it drops (it is fenced).
fn kept_runs(tx: &Connection, agent: &str, kept: &[i64]) -> Result<(Vec<i64>, Vec<i64>)> {
    let (mut keeping, mut dropping) = (Vec::new(), Vec::new());
    for &run in kept {
        let fate: Option<(String, Option<String>)> = tx
            .query_row(
                "SELECT r.state, (SELECT l.agent FROM leases l WHERE l.run_id = r.id
                                    AND l.generation = r.generation AND l.outcome IS NULL)
                   FROM runs r WHERE r.id = ?1",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match fate {
            Some((state, _)) if state == run_state::QUEUED => keeping.push(run),
            Some((state, Some(holder))) if state == run_state::LEASED && holder == agent => {
                keeping.push(run)
            }
            _ => dropping.push(run),
        }
    }
    Ok((keeping, dropping))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_proto::{JobFailure, JobResult};

    const T0: i64 = 1_000_000;

    fn scheduler(dir: &std::path::Path) -> Scheduler {
        let store = Arc::new(Store::open(&dir.join("state.sqlite")).expect("open store"));
        let config = CommanderConfig {
            lease_ttl: std::time::Duration::from_secs(30),
            heartbeat: std::time::Duration::from_secs(5),
            max_attempts: 3,
            retry_backoff: std::time::Duration::from_secs(10),
            retry_backoff_max: std::time::Duration::from_secs(25),
            ..CommanderConfig::default()
        };
        let s = Scheduler::new(store, config);
        s.store
            .tx(|tx| {
                for agent in ["a", "b"] {
                    state::enroll_agent(tx, agent, &format!("fp-{agent}"), T0)?;
                }
                let target = ark_proto::AddTargetRequest {
                    kind: "file".into(),
                    url: "http://origin/x".into(),
                    name: "x".into(),
                    ..Default::default()
                };
                state::add_target(tx, &target, T0).map(|_| ())
            })
            .expect("seed");
        s
    }

    fn beat(s: &Scheduler, agent: &str, now: i64) -> Vec<Lease> {
        let req = HeartbeatRequest {
            telemetry: None,
            free_slots: 1,
            active: Vec::new(),
            ..Default::default()
        };
        s.heartbeat(agent, &req, now).expect("heartbeat").leases
    }

    #[test]
    fn a_hot_agent_is_slowed_at_once_and_hands_its_jobs_back_if_it_stays_hot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seeded = scheduler(dir.path());
        // Handed back within one lease TTL (30 s here), which no progress
        // report renews in this test.
        let s = Scheduler::new(
            seeded.store.clone(),
            CommanderConfig {
                hot_handback: std::time::Duration::from_secs(20),
                ..seeded.config.clone()
            },
        );
        let leases = beat(&s, "a", T0);
        assert_eq!(leases.len(), 1);
        let held = vec![LeaseRef::of(&leases[0])];
        let at = |celsius: f32, now: i64| {
            let req = HeartbeatRequest {
                telemetry: Some(ark_proto::Telemetry {
                    temperature_celsius: Some(celsius),
                    ..Default::default()
                }),
                free_slots: 0,
                active: held.clone(),
                ..Default::default()
            };
            s.heartbeat("a", &req, now).expect("heartbeat")
        };
        let hot = at(80.0, T0 + 1000);
        assert_eq!(hot.agent_bandwidth_cap, hot::HOT_RATE, "slowed at once");
        assert_eq!(run1(&s).state, "leased", "it keeps its job for now");
        let cooled = at(60.0, T0 + 2000);
        assert_eq!(
            cooled.agent_bandwidth_cap, 0,
            "full pace once below the cap"
        );
        at(80.0, T0 + 3000);
        let handback = ms(s.config.hot_handback);
        let still = at(80.0, T0 + 3000 + handback - 1);
        assert_eq!(run1(&s).state, "leased", "{still:?}");
        let gone = at(81.0, T0 + 3000 + handback);
        let run = run1(&s);
        assert_eq!(run.state, "queued", "{run:?}");
        assert!(
            run.reason.contains("handed back") && run.attempts == 0,
            "{run:?}"
        );
        assert!(
            gone.commands
                .iter()
                .any(|c| matches!(c.command, Some(command::Command::DropLease(_)))),
            "the agent is told to drop it: {gone:?}"
        );
    }

    fn fail(s: &Scheduler, agent: &str, lease: &Lease, retryable: bool, now: i64) {
        let req = CompleteRequest {
            lease: Some(LeaseRef::of(lease)),
            outcome: Some(complete_request::Outcome::Failure(JobFailure {
                reason: format!("origin said no at {now}"),
                retryable,
                ..Default::default()
            })),
        };
        s.complete(agent, &req, now).expect("complete");
    }

    fn run1(s: &Scheduler) -> ark_proto::RunInfo {
        s.store.read(|c| state::run(c, 1)).expect("run 1")
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_its_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = scheduler(dir.path());
        let waits: Vec<i64> = (1..=4).map(|n| s.backoff(n)).collect();
        assert_eq!(waits, vec![10_000, 20_000, 25_000, 25_000]);
    }

    #[test]
    fn failed_jobs_back_off_then_fail_for_good_with_their_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = scheduler(dir.path());
        let mut now = T0;
        for attempt in 1..=3u32 {
            let lease = beat(&s, "a", now)
                .pop()
                .unwrap_or_else(|| panic!("no lease for attempt {attempt}"));
            assert_eq!(lease.attempt, attempt);
            assert_eq!(lease.generation, u64::from(attempt));
            fail(&s, "a", &lease, true, now);
            if attempt < 3 {
                // Not before the backoff has passed...
                let wait = s.backoff(attempt);
                assert!(
                    beat(&s, "a", now + wait - 1).is_empty(),
                    "retried inside the backoff"
                );
                assert_eq!(run1(&s).state, "queued");
                now += wait + s.ttl();
            }
        }
        let run = run1(&s);
        assert_eq!(run.state, "failed");
        assert_eq!(run.attempts, 3);
        assert!(
            run.reason.starts_with("gave up after 3 attempts")
                && run.reason.contains("origin said no"),
            "{}",
            run.reason
        );
        assert!(
            beat(&s, "b", now + 3_600_000).is_empty(),
            "a failed run was leased again"
        );
    }

    #[test]
    fn a_job_that_cannot_succeed_fails_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = scheduler(dir.path());
        let lease = beat(&s, "a", T0).pop().expect("lease");
        fail(&s, "a", &lease, false, T0);
        let run = run1(&s);
        assert_eq!((run.state.as_str(), run.attempts), ("failed", 1));
        assert!(run.reason.starts_with("not retryable"), "{}", run.reason);
    }

    #[test]
    fn an_expired_lease_goes_to_another_agent_first_and_its_holder_is_fenced_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = scheduler(dir.path());
        let first = beat(&s, "a", T0).pop().expect("lease");
        let expiry = T0 + s.ttl();
        assert_eq!(s.sweep(expiry - 1).expect("sweep"), 0, "expired early");
        assert_eq!(s.sweep(expiry).expect("sweep"), 1);
        // The agent that lost it waits; another takes it at once.
        assert!(
            beat(&s, "a", expiry + 1).is_empty(),
            "the losing agent got it straight back"
        );
        let second = beat(&s, "b", expiry + 1).pop().expect("reassigned");
        assert_eq!((second.generation, second.attempt), (2, 2));
        // The old holder's reports are refused, and recorded.
        let report = ProgressRequest {
            lease: Some(LeaseRef::of(&first)),
            ..ProgressRequest::default()
        };
        let err = s
            .progress("a", &report, expiry + 2)
            .expect_err("stale report accepted");
        assert!(matches!(err, CommanderError::StaleLease(_)), "{err}");
        let refused = s
            .store
            .read(|c| state::list_events(c, 1, 100))
            .expect("events")
            .into_iter()
            .filter(|e| e.kind == "refused" && e.agent == "a")
            .count();
        assert_eq!(refused, 1);
        // The new holder's progress renews its lease past the old deadline.
        let renew = ProgressRequest {
            lease: Some(LeaseRef::of(&second)),
            ..ProgressRequest::default()
        };
        s.progress("b", &renew, expiry + s.ttl()).expect("renew");
        assert_eq!(
            s.sweep(expiry + s.ttl() + 1).expect("sweep"),
            0,
            "a renewed lease expired"
        );
        let claimed = CompleteRequest {
            lease: Some(LeaseRef::of(&second)),
            outcome: Some(complete_request::Outcome::Success(JobResult {
                size_bytes: 42,
                ..JobResult::default()
            })),
        };
        let err = s
            .complete("b", &claimed, expiry + s.ttl() + 2)
            .expect_err("a body claimed without an upload");
        assert!(matches!(err, CommanderError::Invalid(_)), "{err}");
        let done = CompleteRequest {
            lease: Some(LeaseRef::of(&second)),
            outcome: Some(complete_request::Outcome::Success(JobResult {
                unchanged: true,
                ..JobResult::default()
            })),
        };
        s.complete("b", &done, expiry + s.ttl() + 2)
            .expect("complete");
        let run = run1(&s);
        assert_eq!((run.state.as_str(), run.agent.as_str()), ("unchanged", "b"));
    }

    #[test]
    fn an_agent_that_kept_a_runs_bytes_gets_it_back_and_is_told_to_drop_them_once_it_moved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = scheduler(dir.path());
        let first = beat(&s, "a", T0).pop().expect("lease");
        let expiry = T0 + s.ttl();
        assert_eq!(s.sweep(expiry).expect("sweep"), 1);
        let keeping = |agent: &str, now: i64| {
            let req = HeartbeatRequest {
                free_slots: 1,
                kept: vec![first.run_id],
                ..Default::default()
            };
            s.heartbeat(agent, &req, now).expect("heartbeat")
        };
        // Kept bytes beat the rule that a losing agent waits: it resumes.
        let back = keeping("a", expiry + 1);
        assert!(back.drop_kept.is_empty(), "{:?}", back.drop_kept);
        let again = back.leases.first().expect("the run came back");
        assert_eq!((again.run_id, again.generation), (first.run_id, 2));
        let placed = s
            .store
            .read(|c| state::placement_of(c, first.run_id))
            .expect("placement");
        assert!(
            placed.contains("a kept this run's staged bytes"),
            "{placed}"
        );
        // Leased to it now: still its own.
        assert!(keeping("a", expiry + 2).drop_kept.is_empty());
        // Gone to another agent: the keeper is told to drop its bytes.
        assert_eq!(s.sweep(expiry + 1 + s.ttl()).expect("sweep"), 1);
        let moved = beat(&s, "b", expiry + 2 + s.ttl()).pop().expect("to b");
        assert_eq!(moved.run_id, first.run_id);
        let fenced = keeping("a", expiry + 3 + s.ttl());
        assert_eq!(fenced.drop_kept, vec![first.run_id]);
        assert!(fenced.leases.is_empty());
        // Unknown runs are dropped too.
        let req = HeartbeatRequest {
            kept: vec![9_999],
            ..Default::default()
        };
        let unknown = s
            .heartbeat("a", &req, expiry + 4 + s.ttl())
            .expect("heartbeat");
        assert_eq!(unknown.drop_kept, vec![9_999]);
    }

    #[test]
    fn windows_hold_a_target_and_an_agent_outside_their_hours() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = scheduler(dir.path());
        // A window that is closed at T0 and one that is open, whatever the
        // machine's time zone: built around T0's own local minute.
        let m = crate::window::local_minute(T0);
        let hhmm = |minute: u16| format!("{:02}:{:02}", minute / 60 % 24, minute % 60);
        let closed = format!("{}-{}", hhmm(m + 60), hhmm(m + 120));
        let open = format!("{}-{}", hhmm(m + 1440 - 30), hhmm(m + 30));
        s.store
            .tx(|tx| {
                tx.execute("UPDATE targets SET window = ?1 WHERE name = 'x'", [&closed])?;
                Ok(())
            })
            .expect("window");
        s.run_now("x", T0).expect("queue");
        assert!(beat(&s, "a", T0).is_empty(), "target outside its window");
        s.store
            .tx(|tx| {
                tx.execute("UPDATE targets SET window = ?1 WHERE name = 'x'", [&open])?;
                state::set_agent(tx, "a", Some(1000), Some(&closed))
            })
            .expect("windows");
        assert!(beat(&s, "a", T0).is_empty(), "agent outside its window");
        let leases = beat(&s, "b", T0);
        assert_eq!(leases.len(), 1, "an agent with no window takes it");
        let response = s
            .heartbeat("a", &HeartbeatRequest::default(), T0)
            .expect("heartbeat");
        assert_eq!(
            response.agent_bandwidth_cap, 1000,
            "the operator's cap travels"
        );
    }

    #[test]
    fn pause_holds_new_grants_but_not_the_heartbeat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = scheduler(dir.path());
        s.store
            .tx(|tx| state::set_setting(tx, state::SWARM_PAUSED, "1"))
            .expect("pause");
        let req = HeartbeatRequest {
            telemetry: None,
            free_slots: 1,
            active: Vec::new(),
            ..Default::default()
        };
        let resp = s.heartbeat("a", &req, T0).expect("heartbeat");
        assert!(resp.leases.is_empty());
        assert!(
            matches!(resp.commands[0].command, Some(command::Command::Pause(ref p)) if p.scope == "swarm")
        );
        s.store
            .tx(|tx| state::set_setting(tx, state::SWARM_PAUSED, "0"))
            .expect("resume");
        let resp = s.heartbeat("a", &req, T0 + 1).expect("heartbeat");
        assert_eq!(resp.leases.len(), 1);
        assert!(matches!(
            resp.commands[0].command,
            Some(command::Command::Resume(_))
        ));
    }

    /// Issue 14: a mirror with many refs must not make every lease as long;
    /// the lease names the set by digest, and `known_refs` reads it whole
    /// for the agent holding the lease (and for no other).
    #[test]
    fn a_lease_names_a_large_ref_set_by_digest_and_known_refs_reads_it() {
        use ark_core::formats::bundle::{refs_digest, Refs};
        use prost::Message;
        const REFS: usize = 20_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = dir.path().join("archive");
        let seeded = scheduler(dir.path());
        let s = Scheduler::new(seeded.store.clone(), seeded.config.clone()).with_archive(&archive);
        let url = "http://origin/many.git";
        let mirror = archive.join(crate::kinds::git_mirror_path(url));
        std::fs::create_dir_all(mirror.join("objects")).expect("mirror");
        let refs: Refs = (0..REFS)
            .map(|i| (format!("refs/tags/v{i:05}"), format!("{:040x}", i + 1)))
            .collect();
        let packed: String = refs.iter().map(|(n, id)| format!("{id} {n}\n")).collect();
        std::fs::write(mirror.join("packed-refs"), packed).expect("packed-refs");
        s.store
            .tx(|tx| {
                let caps = ark_proto::Capabilities {
                    kinds: vec!["git".into()],
                    ..Default::default()
                };
                state::set_capabilities(tx, "a", &caps, T0)?;
                let target = ark_proto::AddTargetRequest {
                    kind: "git".into(),
                    url: url.into(),
                    name: "many".into(),
                    ..Default::default()
                };
                state::add_target(tx, &target, T0).map(|_| ())
            })
            .expect("seed");

        let leases = beat(&s, "a", T0);
        assert_eq!(leases.len(), 1, "{leases:?}");
        let lease = &leases[0];
        let job = lease.job.as_ref().expect("job");
        assert_eq!(job.kind, "git");
        assert!(
            job.known_refs.is_empty(),
            "{} refs inline",
            job.known_refs.len()
        );
        assert_eq!(job.known_refs_count, REFS as u64);
        assert_eq!(job.known_refs_digest, refs_digest(&refs));
        let bytes = lease.encoded_len();
        assert!(bytes < 1024, "a lease of {bytes} bytes for {REFS} refs");

        let held = LeaseRef::of(lease);
        assert_eq!(s.known_refs("a", &held, T0 + 1).expect("known refs"), refs);
        let pages = crate::kinds::known_refs_pages(refs.clone());
        assert_eq!(pages.len(), REFS.div_ceil(crate::kinds::KNOWN_REFS_PAGE));
        assert!(pages.iter().all(|p| p.encoded_len() < 4 << 20));
        let err = s
            .known_refs("b", &held, T0 + 1)
            .expect_err("another agent's lease");
        assert!(matches!(err, CommanderError::PermissionDenied(_)), "{err}");

        // A few refs go whole, with their digest.
        let few: Refs = refs.into_iter().take(3).collect();
        let (inline, digest, count) = crate::kinds::lease_refs(few.clone());
        assert_eq!((inline.len(), count), (3, 3));
        assert_eq!(digest, refs_digest(&few));
    }
}
