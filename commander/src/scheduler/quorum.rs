//! Quorum groups: one harvest of a target done by several distinct agents,
//! each on its own run (the group's *members*; the group's id is its first
//! member's), so leases, expiry, retries and fencing work for each exactly
//! as for any run.
//!
//! A member's agent fetches and hashes on its own and sends its signed
//! manifest; that is its *vote*, kept in `votes` (durable: a commander
//! restart keeps every confirmation). Only the first agent to claim a given
//! result uploads the bytes (see [`crate::upload::quorum`]); the others'
//! votes cost a manifest. The group lands when `need` votes agree on what
//! matters for the kind (the vote's *key*: the body's size and BLAKE3 root,
//! or a git bundle's ref → object map), and not before.
//!
//! Disagreement with the same validators is a *dispute*: the voters' runs
//! read `disputed` with every root, one more agent is asked (a tie-break),
//! and the majority lands only if it reaches `need`; an agent outvoted by
//! what landed is recorded and becomes `suspect`. Votes whose validators
//! differ mean the origin changed between the fetches: no dispute, the
//! whole group is tried again. A group that does not settle within
//! `quorum-ttl` is tried again too, like an expired lease.
//!
//! Adaptive quorum (after BOINC's adaptive replication): an agent's result
//! is confirmed until it has [`ADAPTIVE_STREAK`] consecutive confirmed
//! harvests of the kind, then one in [`ADAPTIVE_SAMPLE`], chosen with a
//! secret random draw the agent cannot predict; any lost dispute sets the
//! streak back to zero.

use super::*;
use crate::config::Quorum;

/// Consecutive confirmed harvests of a kind after which an adaptive
/// quorum only samples an agent's results.
pub const ADAPTIVE_STREAK: i64 = 10;

/// One in this many of a trusted agent's adaptive harvests is confirmed.
pub const ADAPTIVE_SAMPLE: u32 = 10;

/// Tie-breaks a disputed group may ask for before it fails.
pub const MAX_TIE_BREAKS: i64 = 1;

/// How many heartbeats a quorum member waits for an agent of a device
/// class its group lacks: time enough for every online agent to ask once
/// or twice, short enough that a busy class costs the quorum seconds.
pub const CLASS_PREFERENCE_HEARTBEATS: i64 = 3;

/// The key of a vote that the origin answered 304 (nothing new).
pub const UNCHANGED_KEY: &str = "unchanged";

/// Group states as stored.
pub mod group_state {
    pub const OPEN: &str = "open";
    pub const DISPUTED: &str = "disputed";
    /// One settle is landing the agreed version (reset to open on restart).
    pub const LANDING: &str = "landing";
    pub const LANDED: &str = "landed";
    pub const FAILED: &str = "failed";
}

/// A quorum group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub target: String,
    pub need: u32,
    pub state: String,
    pub tie_breaks: i64,
    pub deadline: i64,
}

/// One agent's claim in a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vote {
    pub run_id: i64,
    pub group_id: i64,
    pub agent: String,
    pub cert_sha256: String,
    pub key: String,
    pub blake3: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: String,
    pub manifest: Vec<u8>,
    pub signature: Vec<u8>,
    /// The commander holds these bytes in the member's quarantine, verified.
    pub verified: bool,
}

/// A member run: id, state.
pub type Member = (i64, String);

/// The group run `run` belongs to, if any.
pub fn group_of(conn: &Connection, run: i64) -> Result<Option<Group>> {
    let id: Option<i64> = conn
        .query_row("SELECT quorum_group FROM runs WHERE id = ?1", [run], |r| {
            r.get(0)
        })
        .optional()?
        .flatten();
    match id {
        Some(id) => group(conn, id),
        None => Ok(None),
    }
}

pub fn group(conn: &Connection, id: i64) -> Result<Option<Group>> {
    Ok(conn
        .query_row(
            "SELECT id, target, need, state, tie_breaks, deadline FROM quorum_groups WHERE id = ?1",
            [id],
            |r| {
                Ok(Group {
                    id: r.get(0)?,
                    target: r.get(1)?,
                    need: r.get(2)?,
                    state: r.get(3)?,
                    tie_breaks: r.get(4)?,
                    deadline: r.get(5)?,
                })
            },
        )
        .optional()?)
}

/// Groups that have not settled yet, oldest first.
pub fn unsettled(conn: &Connection) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM quorum_groups WHERE state IN ('open', 'disputed') ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn members(conn: &Connection, group: i64) -> Result<Vec<Member>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, state FROM runs WHERE quorum_group = ?1 ORDER BY id")?;
    let rows = stmt.query_map([group], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn votes(conn: &Connection, group: i64) -> Result<Vec<Vote>> {
    let mut stmt = conn.prepare_cached(
        "SELECT run_id, group_id, agent, cert_sha256, key, blake3, size, etag, last_modified,
                manifest, signature, verified
         FROM votes WHERE group_id = ?1 ORDER BY at, run_id",
    )?;
    let rows = stmt.query_map([group], |r| {
        Ok(Vote {
            run_id: r.get(0)?,
            group_id: r.get(1)?,
            agent: r.get(2)?,
            cert_sha256: r.get(3)?,
            key: r.get(4)?,
            blake3: r.get(5)?,
            size: r.get::<_, i64>(6)? as u64,
            etag: r.get(7)?,
            last_modified: r.get(8)?,
            manifest: r.get(9)?,
            signature: r.get(10)?,
            verified: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What `target` asks of its runs (its own `--quorum`, else `default`).
pub fn target_quorum(conn: &Connection, target: &str, default: Quorum) -> Result<Quorum> {
    let text: Option<String> = conn
        .query_row(
            "SELECT quorum FROM targets WHERE name = ?1",
            [target],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match text.as_deref().map(str::trim) {
        None | Some("") => default,
        Some(text) => Quorum::parse(text).unwrap_or(default),
    })
}

/// A short form of a vote's key for reasons and events.
pub fn key_summary(vote: &Vote) -> String {
    if vote.key == UNCHANGED_KEY {
        return "unchanged (304)".into();
    }
    let head = |s: &str| s.chars().take(16).collect::<String>();
    if vote.key.starts_with("refs ") {
        let digest = blake3::hash(vote.key.as_bytes()).to_hex();
        return format!("refs {}", head(digest.as_str()));
    }
    format!("{} ({} bytes)", head(&vote.blake3), vote.size)
}

/// Whether `agent` is suspect (and so gets no quorum-1 work).
pub fn is_suspect(conn: &Connection, agent: &str) -> Result<bool> {
    let reason: Option<String> = conn
        .query_row("SELECT suspect FROM agents WHERE name = ?1", [agent], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(reason.is_some_and(|r| !r.is_empty()))
}

/// Records against `agent` a lost dispute (`disputes_lost`) or a failed
/// spot check (`spot_failed`): it becomes suspect with `reason`, and its
/// adaptive streaks start again.
pub fn mark_suspect(
    conn: &Connection,
    agent: &str,
    counter: &str,
    reason: &str,
    run: i64,
    now: i64,
) -> Result<()> {
    let column = match counter {
        "disputes_lost" => "disputes_lost",
        _ => "spot_failed",
    };
    conn.execute(
        &format!("UPDATE agents SET {column} = {column} + 1, suspect = ?2 WHERE name = ?1"),
        params![agent, reason],
    )?;
    conn.execute("UPDATE streaks SET streak = 0 WHERE agent = ?1", [agent])?;
    event(conn, now, Some(run), Some(agent), "suspect", reason)
}

/// Clears `agent`'s suspect mark (the counters stay: they are history).
pub fn clear_suspect(conn: &Connection, agent: &str, now: i64) -> Result<()> {
    if !state::agent_exists(conn, agent)? {
        return Err(CommanderError::NotFound(format!(
            "no agent named {agent:?} (see `ark-commander agents`)"
        )));
    }
    conn.execute("UPDATE agents SET suspect = '' WHERE name = ?1", [agent])?;
    event(
        conn,
        now,
        None,
        Some(agent),
        "trust_cleared",
        "suspect mark cleared by the operator",
    )
}

fn confirmed(conn: &Connection, agent: &str, kind: &str) -> Result<()> {
    conn.execute(
        "UPDATE agents SET confirmed = confirmed + 1 WHERE name = ?1",
        [agent],
    )?;
    conn.execute(
        "INSERT INTO streaks (agent, kind, streak) VALUES (?1, ?2, 1)
         ON CONFLICT(agent, kind) DO UPDATE SET streak = streak + 1",
        params![agent, kind],
    )?;
    Ok(())
}

/// Records that `vote`'s agent vouched for landed version `version`.
fn vouch(tx: &Connection, version: i64, vote: &Vote, role: &str) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO vouchers (version_id, agent, cert_sha256, run_id, role, manifest, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![version, vote.agent, vote.cert_sha256, vote.run_id, role, vote.manifest, vote.signature],
    )?;
    Ok(())
}

/// A uniformly random draw in `0..n` from the system's secure generator:
/// an agent that knows this code still cannot tell which of its harvests
/// will be confirmed.
fn secret_draw(n: u32) -> u32 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u32::from_le_bytes(bytes) % n.max(1)
}

impl Scheduler {
    /// Opens a group of `need` members with `first` (already queued) as its
    /// first member.
    pub(super) fn open_group(
        &self,
        tx: &Connection,
        first: i64,
        target: &str,
        need: u32,
        now: i64,
    ) -> Result<()> {
        let deadline = now + ms(self.config.quorum_ttl);
        tx.execute(
            "INSERT INTO quorum_groups (id, target, need, state, created_at, deadline)
             VALUES (?1, ?2, ?3, 'open', ?4, ?5)",
            params![first, target, need, now, deadline],
        )?;
        tx.execute("UPDATE runs SET quorum_group = ?1 WHERE id = ?1", [first])?;
        for n in 2..=need {
            self.add_member(tx, first, &format!("confirmation {n} of {need}"), now)?;
        }
        event(
            tx,
            now,
            Some(first),
            None,
            "quorum",
            &format!("quorum {need}: {need} distinct agents must agree before it lands"),
        )
    }

    /// Adds a member run to `group` (a confirmation or a tie-break).
    fn add_member(&self, tx: &Connection, group: i64, why: &str, now: i64) -> Result<i64> {
        let (target, kind, url): (String, String, String) = tx.query_row(
            "SELECT target, kind, url FROM runs WHERE id = ?1",
            [group],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let id = state::insert_run(
            tx,
            &target,
            &kind,
            &url,
            &format!("{why} of run {group} queued"),
            now,
        )?;
        // A member harvests what the group's first run does, held to the
        // same published digest (a Kiwix release's).
        tx.execute(
            "UPDATE runs SET quorum_group = ?1,
               (expected_sha256, expected_source) =
                 (SELECT expected_sha256, expected_source FROM runs WHERE id = ?1)
             WHERE id = ?2",
            params![group, id],
        )?;
        Ok(id)
    }

    /// Whether `agent` may take member `run` of `group`: not while it holds
    /// or voted on another member of the same attempt.
    pub(super) fn may_join(
        &self,
        tx: &Connection,
        group: i64,
        run: i64,
        agent: &str,
        now: i64,
    ) -> Result<bool> {
        let mut stmt = tx.prepare_cached(
            "SELECT l.agent FROM leases l JOIN runs r ON r.id = l.run_id
              WHERE r.quorum_group = ?1 AND r.id != ?2 AND l.ended_at IS NULL
             UNION SELECT agent FROM votes WHERE group_id = ?1 AND run_id != ?2",
        )?;
        let others = stmt
            .query_map(params![group, run], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<std::collections::BTreeSet<String>>>()?;
        Ok(!others.contains(agent) && self.class_may_join(tx, &others, (run, agent), now)?)
    }

    /// Distinct device classes first: `agent` waits while the group's
    /// `members` already have its class and an online agent of a class they
    /// lack could take member `run` instead — for at most
    /// [`CLASS_PREFERENCE_HEARTBEATS`] after the member was queued, so a
    /// busy or slow other class never holds the quorum up.
    fn class_may_join(
        &self,
        tx: &Connection,
        members: &std::collections::BTreeSet<String>,
        (run, agent): (i64, &str),
        now: i64,
    ) -> Result<bool> {
        let heartbeat = ms(self.config.heartbeat);
        let (queued_at, kind): (i64, String) = tx.query_row(
            "SELECT created_at, kind FROM runs WHERE id = ?1",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if now - queued_at > CLASS_PREFERENCE_HEARTBEATS * heartbeat {
            return Ok(true);
        }
        let class_of = |name: &str| -> Result<String> {
            Ok(state::capabilities(tx, name)?
                .map(|c| state::device_class(&c))
                .unwrap_or_default())
        };
        let classes = members
            .iter()
            .map(|m| class_of(m))
            .collect::<Result<std::collections::BTreeSet<String>>>()?;
        if !classes.contains(&class_of(agent)?) {
            return Ok(true);
        }
        let mut stmt = tx.prepare_cached(
            "SELECT name FROM agents
              WHERE revoked_at IS NULL AND paused = 0 AND suspect = '' AND name != ?1
                AND last_seen >= ?2",
        )?;
        let others = stmt
            .query_map(params![agent, now - 2 * heartbeat], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut another_class = false;
        for name in others.iter().filter(|n| !members.contains(*n)) {
            if let Some(c) = state::capabilities(tx, name)? {
                another_class |=
                    c.kinds.contains(&kind) && !classes.contains(&state::device_class(&c));
            }
        }
        Ok(!another_class)
    }

    /// How many agents must agree on `run` (no group yet) if `agent` takes
    /// it: the target's fixed quorum 1, or the adaptive decision. A
    /// suspect agent's harvest is always confirmed. Some(reason) when a
    /// group must be opened for it.
    pub(super) fn needs_confirmation(
        &self,
        tx: &Connection,
        target: &str,
        kind: &str,
        agent: &str,
    ) -> Result<Option<String>> {
        let suspect = is_suspect(tx, agent)?;
        match target_quorum(tx, target, self.config.quorum)? {
            Quorum::Fixed(_) => Ok(None),
            Quorum::Adaptive if suspect => Ok(Some(format!(
                "adaptive quorum: {agent} is suspect, every harvest is confirmed"
            ))),
            Quorum::Adaptive => {
                let streak: i64 = tx
                    .query_row(
                        "SELECT streak FROM streaks WHERE agent = ?1 AND kind = ?2",
                        params![agent, kind],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or(0);
                if streak < ADAPTIVE_STREAK {
                    Ok(Some(format!(
                        "adaptive quorum: {agent} has {streak} of {ADAPTIVE_STREAK} consecutive confirmed {kind} harvests, confirming"
                    )))
                } else if secret_draw(ADAPTIVE_SAMPLE) == 0 {
                    Ok(Some(format!(
                        "adaptive quorum: {agent} is trusted for {kind} ({streak} confirmed in a row); this one is sampled (1 in {ADAPTIVE_SAMPLE})"
                    )))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Records `vote` for its member run. With `uploading` the lease stays
    /// open for the upload that follows; otherwise the member's part is
    /// done: its lease ends and the run waits for the others.
    pub fn record_vote(
        &self,
        tx: &Connection,
        vote: &Vote,
        uploading: bool,
        now: i64,
    ) -> Result<()> {
        tx.execute(
            "INSERT OR REPLACE INTO votes (run_id, group_id, agent, cert_sha256, key, blake3, size, etag,
               last_modified, manifest, signature, verified, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                vote.run_id,
                vote.group_id,
                vote.agent,
                vote.cert_sha256,
                vote.key,
                vote.blake3,
                vote.size as i64,
                vote.etag,
                vote.last_modified,
                vote.manifest,
                vote.signature,
                vote.verified,
                now
            ],
        )?;
        if !uploading {
            self.await_quorum(tx, vote, now)?;
        }
        Ok(())
    }

    /// The member's part is done (its vote in, its upload verified if it
    /// made one): the lease ends, the run waits for the group.
    pub fn await_quorum(&self, tx: &Connection, vote: &Vote, now: i64) -> Result<()> {
        end_current_lease(tx, vote.run_id, "voted", now)?;
        tx.execute(
            "UPDATE runs SET state = ?1, blake3 = ?2, size_bytes = ?3, bytes_done = ?3, last_agent = ?4,
               reason = 'waiting for the quorum' WHERE id = ?5",
            params![
                run_state::AWAITING_QUORUM,
                vote.blake3,
                vote.size as i64,
                vote.agent,
                vote.run_id
            ],
        )?;
        event(
            tx,
            now,
            Some(vote.run_id),
            Some(&vote.agent),
            "voted",
            &format!(
                "{} vouches for {} (group {})",
                vote.agent,
                key_summary(vote),
                vote.group_id
            ),
        )
    }

    /// Sends every member of `group` back to the queue (a new attempt: the
    /// origin changed between fetches, or the group waited too long); a
    /// tie-break member is no longer needed. Fails the group once a member
    /// has used its attempts.
    pub fn retry_group(
        &self,
        tx: &Connection,
        group: &Group,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        let members = members(tx, group.id)?;
        let attempts: u32 = tx.query_row(
            "SELECT MAX(attempts) FROM runs WHERE quorum_group = ?1",
            [group.id],
            |r| r.get::<_, Option<u32>>(0).map(Option::unwrap_or_default),
        )?;
        if attempts + 1 >= self.config.max_attempts {
            return self.fail_group(
                tx,
                group,
                &format!("gave up after {} attempts; last: {reason}", attempts + 1),
                now,
            );
        }
        let not_before = now + self.backoff(attempts + 1);
        for (index, (run, _)) in members.iter().enumerate() {
            end_current_lease(tx, *run, "requeued", now)?;
            tx.execute("DELETE FROM votes WHERE run_id = ?1", [run])?;
            tx.execute("DELETE FROM uploads WHERE run_id = ?1", [run])?;
            if index as u32 >= group.need {
                tx.execute(
                    "UPDATE runs SET state = 'failed', finished_at = ?2, reason = ?3 WHERE id = ?1",
                    params![run, now, format!("tie-break no longer needed: {reason}")],
                )?;
            } else {
                tx.execute(
                    "UPDATE runs SET state = 'queued', attempts = attempts + 1, not_before = ?2, reason = ?3
                     WHERE id = ?1",
                    params![run, not_before, reason],
                )?;
            }
        }
        tx.execute(
            "UPDATE quorum_groups SET state = 'open', tie_breaks = 0, deadline = ?2, reason = ?3 WHERE id = ?1",
            params![
                group.id,
                not_before + ms(self.config.quorum_ttl),
                reason
            ],
        )?;
        event(tx, now, Some(group.id), None, "quorum_retry", reason)
    }

    /// Fails every member still in play; nothing of the group lands.
    pub fn fail_group(&self, tx: &Connection, group: &Group, reason: &str, now: i64) -> Result<()> {
        for (run, state) in members(tx, group.id)? {
            tx.execute("DELETE FROM uploads WHERE run_id = ?1", [run])?;
            if matches!(
                state.as_str(),
                run_state::QUEUED
                    | run_state::LEASED
                    | run_state::AWAITING_QUORUM
                    | run_state::DISPUTED
            ) {
                end_current_lease(tx, run, "failed", now)?;
                tx.execute(
                    "UPDATE runs SET state = 'failed', finished_at = ?2, reason = ?3 WHERE id = ?1",
                    params![run, now, reason],
                )?;
            }
        }
        tx.execute(
            "UPDATE quorum_groups SET state = 'failed', reason = ?2 WHERE id = ?1",
            params![group.id, reason],
        )?;
        event(tx, now, Some(group.id), None, "run_failed", reason)
    }

    /// The voters disagree and no version can reach the quorum with the
    /// members left: every voter's run reads `disputed` with every root,
    /// and one more agent is asked — or the group fails when it already was.
    pub fn dispute(&self, tx: &Connection, group: &Group, votes: &[Vote], now: i64) -> Result<()> {
        let roots: Vec<String> = votes
            .iter()
            .map(|v| format!("{}: {}", v.agent, key_summary(v)))
            .collect();
        let reason = format!(
            "disputed: the agents disagree with the same validators ({}); nothing landed",
            roots.join("; ")
        );
        if group.tie_breaks >= MAX_TIE_BREAKS {
            return self.fail_group(
                tx,
                group,
                &format!(
                    "{reason}; no version reached quorum {} after a tie-break",
                    group.need
                ),
                now,
            );
        }
        for v in votes {
            tx.execute(
                "UPDATE runs SET state = ?2, reason = ?3 WHERE id = ?1 AND state = ?4",
                params![
                    v.run_id,
                    run_state::DISPUTED,
                    reason,
                    run_state::AWAITING_QUORUM
                ],
            )?;
        }
        let tie = self.add_member(tx, group.id, "tie-break", now)?;
        tx.execute(
            "UPDATE quorum_groups SET state = 'disputed', tie_breaks = tie_breaks + 1, reason = ?2 WHERE id = ?1",
            params![group.id, reason],
        )?;
        event(
            tx,
            now,
            Some(group.id),
            None,
            "disputed",
            &format!("{reason}; tie-break run {tie} asks one more agent"),
        )
    }

    /// The group's agreed version is in the archive (landed by member
    /// `landed`, or held already): the agreeing voters are confirmed, the
    /// outvoted ones become suspect, members still out are called off.
    pub fn close_group(
        &self,
        tx: &Connection,
        group: &Group,
        winner: &str,
        landed: i64,
        version: Option<i64>,
        now: i64,
    ) -> Result<()> {
        let votes = votes(tx, group.id)?;
        let kind: String =
            tx.query_row("SELECT kind FROM runs WHERE id = ?1", [group.id], |r| {
                r.get(0)
            })?;
        let agreed = votes
            .iter()
            .find(|v| v.key == winner)
            .map(key_summary)
            .unwrap_or_default();
        for v in &votes {
            if v.run_id != landed {
                tx.execute("DELETE FROM uploads WHERE run_id = ?1", [v.run_id])?;
            }
            if v.key == winner {
                confirmed(tx, &v.agent, &kind)?;
                if let Some(version) = version {
                    vouch(
                        tx,
                        version,
                        v,
                        if v.run_id == landed {
                            "harvested"
                        } else {
                            "confirmed"
                        },
                    )?;
                }
                tx.execute(
                    "UPDATE runs SET state = ?2, finished_at = ?3, reason = ?4
                     WHERE id = ?1 AND state IN ('awaiting_quorum', 'disputed')",
                    params![
                        v.run_id,
                        run_state::CONFIRMED,
                        now,
                        format!("confirmed run {landed}'s version")
                    ],
                )?;
            } else {
                let why = format!(
                    "outvoted in run {}: {} reported {}, the quorum agreed on {agreed}",
                    group.id,
                    v.agent,
                    key_summary(v)
                );
                tx.execute(
                    "UPDATE runs SET state = ?2, finished_at = ?3, reason = ?4 WHERE id = ?1",
                    params![v.run_id, run_state::REFUTED, now, why],
                )?;
                mark_suspect(tx, &v.agent, "disputes_lost", &why, v.run_id, now)?;
            }
        }
        for (run, state) in members(tx, group.id)? {
            if matches!(state.as_str(), run_state::QUEUED | run_state::LEASED) {
                end_current_lease(tx, run, "not needed", now)?;
                tx.execute(
                    "UPDATE runs SET state = 'failed', finished_at = ?2, reason = 'not needed: the quorum was reached without it' WHERE id = ?1",
                    params![run, now],
                )?;
            }
        }
        tx.execute(
            "UPDATE quorum_groups SET state = 'landed', reason = '' WHERE id = ?1",
            [group.id],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_quorum_confirms_a_new_agent_samples_a_trusted_one_and_falls_back_after_a_dispute() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("state.sqlite")).expect("open"));
        let s = Scheduler::new(store, CommanderConfig::default());
        let decide = |agent: &str| {
            s.store
                .tx(|tx| s.needs_confirmation(tx, "x", "file", agent))
                .expect("decide")
        };
        s.store
            .tx(|tx| {
                state::enroll_agent(tx, "pi", "fp", 1)?;
                let target = ark_proto::AddTargetRequest {
                    kind: "file".into(),
                    url: "http://origin/x".into(),
                    name: "x".into(),
                    quorum: "adaptive".into(),
                    ..Default::default()
                };
                state::add_target(tx, &target, 1).map(drop)
            })
            .expect("seed");
        let why = decide("pi").expect("a new agent is always confirmed");
        assert!(why.contains("0 of 10"), "{why}");
        s.store
            .tx(|tx| {
                for _ in 0..ADAPTIVE_STREAK {
                    confirmed(tx, "pi", "file")?;
                }
                Ok(())
            })
            .expect("streak");
        let sampled = (0..2000).filter(|_| decide("pi").is_some()).count();
        // 1 in 10 of 2000: 200 expected; far outside these bounds only by a
        // broken draw (the odds of a fair one landing there are < 1e-9).
        assert!((110..=300).contains(&sampled), "sampled {sampled} of 2000");
        s.store
            .tx(|tx| mark_suspect(tx, "pi", "disputes_lost", "outvoted", 1, 2))
            .expect("dispute");
        assert!(
            (0..50).all(|_| decide("pi").is_some()),
            "a suspect agent's harvests must all be confirmed"
        );
        s.store.tx(|tx| clear_suspect(tx, "pi", 3)).expect("clear");
        let why = decide("pi").expect("the streak started again");
        assert!(why.contains("0 of 10"), "{why}");
    }
}
