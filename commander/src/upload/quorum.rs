//! A quorum member's delivery and the group's settling (the groups
//! themselves: [`crate::scheduler::quorum`]).
//!
//! `Have` records the member's signed claim as its vote. When the commander
//! already holds what it vouches for (another member uploaded the same
//! result, or the archive has those bytes) nothing is uploaded: the NAS
//! receives a version once however many agents confirm it. Otherwise the
//! member uploads, verified group by group as any upload; the verified
//! bytes then wait in quarantine (`awaiting_quorum`) instead of landing.
//!
//! Settling (after every vote, and on every sweep) counts the votes by the
//! kind's key and lands the agreed version, by the landing protocol, with
//! the group's closing (confirmations, outvoted agents, vouchers) in the
//! same ledger step.

use std::path::Path;

use ark_core::formats::bundle::Refs;

use super::have::Decision;
use super::*;
use crate::scheduler::quorum::{self as q, Group, Vote};

/// The key a body's votes are compared by: its size and root.
pub fn root_key(size: u64, blake3: &str) -> String {
    format!("{size}:{blake3}")
}

/// The key of a git bundle's votes: its ref → object map, so two honest
/// agents whose packs differ byte for byte still agree.
pub fn refs_key(refs: &Refs) -> String {
    format!("refs {}", serde_json::to_string(refs).unwrap_or_default())
}

/// The key of what an agent claims in its manifest.
pub fn claimed_key(m: &Manifest) -> String {
    match m.kind.parse() {
        Ok(ark_core::Kind::Git) => refs_key(&m.refs),
        _ => root_key(m.size, &m.blake3),
    }
}

/// The key of the commander's own verified copy at `data`.
fn held_key(v: &NewVersion, data: &Path) -> std::result::Result<String, String> {
    match v.kind.parse() {
        Ok(ark_core::Kind::Git) => crate::git_check::bundle_refs(data)
            .map(|refs| refs_key(&refs))
            .map_err(|e| e.to_string()),
        _ => Ok(root_key(v.size, &v.blake3)),
    }
}

/// `Have` for a member of `group`: its vote, and `Confirmed` when the
/// commander holds what it vouches for; None when it must upload.
pub(super) fn have_member(
    tx: &Connection,
    scheduler: &Scheduler,
    pending: &Pending,
    manifest: &Manifest,
    group: &Group,
) -> Result<Option<Decision>> {
    let now = ark_core::unix_ms();
    let v = &pending.version;
    let vote = Vote {
        run_id: v.run_id,
        group_id: group.id,
        agent: v.agent.clone(),
        cert_sha256: v.cert_sha256.clone(),
        key: claimed_key(manifest),
        blake3: v.blake3.clone(),
        size: v.size,
        etag: v.etag.clone(),
        last_modified: v.last_modified.clone(),
        manifest: v.manifest.clone(),
        signature: v.signature.clone(),
        verified: false,
    };
    let held_by_member = q::votes(tx, group.id)?
        .iter()
        .filter(|o| o.run_id != v.run_id && o.key == vote.key)
        .any(|o| o.verified || has_upload(tx, o.run_id).unwrap_or(false));
    let in_archive = !v
        .kind
        .parse::<ark_core::Kind>()
        .is_ok_and(|k| k == ark_core::Kind::Git)
        && (latest_with(tx, v)?.is_some()
            || (crate::kinds::of(&v.kind).links_across_targets()
                && archive::landed_root(tx, &v.blake3, v.size)?.is_some()));
    if held_by_member || in_archive {
        scheduler.record_vote(tx, &vote, false, now)?;
        return Ok(Some(Decision::Confirmed(group.id)));
    }
    scheduler.record_vote(tx, &vote, true, now)?;
    Ok(None)
}

fn has_upload(conn: &Connection, run: i64) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM uploads WHERE run_id = ?1", [run], |_| Ok(()))
        .optional()?
        .is_some())
}

/// A member's upload is complete and verified: its bytes wait in
/// quarantine for the quorum (once the commander checked they are what the
/// manifest claims), and the group is settled.
pub(super) fn hold(
    scheduler: &Scheduler,
    archive: &Archive,
    pending: &Pending,
    (data, outboard): (&Path, &Path),
    group: &Group,
    now: i64,
) -> Result<UploadResponse> {
    let v = &pending.version;
    let refused = |reason| refuse(scheduler, pending, data, outboard, reason, now);
    let key = match held_key(v, data) {
        Ok(key) => key,
        Err(e) => return Err(refused(format!("the commander's copy cannot be read: {e}"))),
    };
    let held = scheduler.store.tx(|tx| {
        let Some(mut vote) = q::votes(tx, group.id)?
            .into_iter()
            .find(|o| o.run_id == v.run_id)
        else {
            return Ok(Err(None));
        };
        if vote.key != key {
            let why = format!(
                "{} signed a manifest that does not describe its upload: it claims {}, the bytes hold {}",
                v.agent,
                q::key_summary(&vote),
                q::key_summary(&Vote {
                    key: key.clone(),
                    ..vote.clone()
                })
            );
            q::mark_suspect(tx, &v.agent, "spot_failed", &why, v.run_id, now)?;
            return Ok(Err(Some(why)));
        }
        vote.verified = true;
        tx.execute(
            "UPDATE votes SET verified = 1 WHERE run_id = ?1",
            [v.run_id],
        )?;
        scheduler.await_quorum(tx, &vote, now)?;
        Ok(Ok(()))
    })?;
    match held {
        Ok(()) => {}
        Err(Some(why)) => return Err(refused(why)),
        Err(None) => {
            // The group was retried (or the agent revoked) while the bytes
            // were on their way: the run is queued again, and only these
            // bytes go.
            let _ = std::fs::remove_file(data);
            let _ = std::fs::remove_file(outboard);
            return Err(CommanderError::StaleLease(format!(
                "run {}: its vote was withdrawn while it uploaded (the group was retried, or the \
                 agent revoked); nothing landed: drop the job",
                v.run_id
            )));
        }
    }
    let landed = settle_logged(scheduler, archive, group.id);
    Ok(UploadResponse {
        path: landed.unwrap_or_default(),
        size: v.size,
        blake3: v.blake3.clone(),
        deduplicated: false,
        awaiting_quorum: true,
    })
}

/// What settling decided, inside its transaction.
enum Plan {
    /// Nothing to land now (waiting, or decided without files).
    Nothing,
    /// Land `vote`'s version (from its quarantine, or linked to `link`).
    Land {
        group: Group,
        key: String,
        vote: Box<Vote>,
        link: Option<Box<Version>>,
    },
}

/// Settles group `id`, logging instead of failing (a settle is never the
/// caller's error); returns the landed path, if it landed now.
pub fn settle_logged(scheduler: &Scheduler, archive: &Archive, id: i64) -> Option<String> {
    match settle(scheduler, archive, id, ark_core::unix_ms()) {
        Ok(path) => path,
        Err(e) => {
            tracing::warn!(group = id, "settling the quorum: {e}");
            None
        }
    }
}

/// Settles the group of run `run`, if it is in one.
pub fn settle_run(scheduler: &Scheduler, archive: &Archive, run: i64) {
    if let Ok(Some(group)) = scheduler.store.read(|c| q::group_of(c, run)) {
        settle_logged(scheduler, archive, group.id);
    }
}

/// Settles every group still open (the sweep: expiry, failed members);
/// one group's trouble is logged, and does not hold up the others.
pub fn settle_all(scheduler: &Scheduler, archive: &Archive) -> Result<()> {
    for id in scheduler.store.read(q::unsettled)? {
        settle_logged(scheduler, archive, id);
    }
    Ok(())
}

/// Counts group `id`'s votes and acts: lands the agreed version, retries,
/// disputes, fails, or waits. Returns the landed path when it landed.
pub fn settle(
    scheduler: &Scheduler,
    archive: &Archive,
    id: i64,
    now: i64,
) -> Result<Option<String>> {
    let plan = scheduler.store.tx(|tx| plan(tx, scheduler, id, now))?;
    let Plan::Land {
        group,
        key,
        vote,
        link,
    } = plan
    else {
        return Ok(None);
    };
    let pending = scheduler.store.read(|c| pending_of(c, &vote))?;
    let close = |tx: &Connection, version: &Version| {
        scheduler.close_group(tx, &group, &key, vote.run_id, Some(version.id), now)
    };
    let landed = match link {
        Some(other) => {
            let other = *other;
            land(
                scheduler,
                archive,
                &pending.version,
                Source::Link {
                    version: other.id,
                    path: other.path,
                },
                &close,
                now,
            )
        }
        None => {
            let (data, outboard) = archive.quarantined(vote.run_id);
            super::receive::land_checked(
                scheduler,
                archive,
                &pending,
                (&data, &outboard),
                &close,
                now,
            )
            .map(|(version, _)| version)
        }
    };
    match landed {
        Ok(version) => {
            tracing::info!(group = id, path = %version.path, "quorum reached: landed");
            Ok(Some(version.path))
        }
        Err(CommanderError::NoSpace(why)) => {
            let _ = defer_for_space(scheduler, archive, &pending.version, &why);
            scheduler.store.tx(|tx| reopen(tx, id))?;
            Ok(None)
        }
        Err(e) => {
            let reason = format!("the agreed version could not land: {e}");
            scheduler.store.tx(|tx| {
                let group = q::group(tx, id)?;
                match group {
                    Some(g) if g.state == q::group_state::LANDING => {
                        scheduler.fail_group(tx, &g, &reason, now)
                    }
                    _ => Ok(()),
                }
            })?;
            Err(e)
        }
    }
}

fn reopen(tx: &Connection, id: i64) -> Result<()> {
    tx.execute(
        "UPDATE quorum_groups SET state = 'open' WHERE id = ?1 AND state = 'landing'",
        [id],
    )?;
    Ok(())
}

/// After a restart: a group caught landing is settled again (the landing
/// protocol's own recovery has finished or rolled back its version).
pub fn reopen_landing(store: &crate::state::Store) -> Result<usize> {
    store.tx(|tx| {
        Ok(tx.execute(
            "UPDATE quorum_groups SET state = 'open' WHERE state = 'landing'",
            [],
        )?)
    })
}

/// The version `vote` vouches for, as it would land.
fn pending_of(conn: &Connection, vote: &Vote) -> Result<Pending> {
    let (target, kind, url): (String, String, String) = conn.query_row(
        "SELECT target, kind, url FROM runs WHERE id = ?1",
        [vote.run_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(Pending {
        generation: 0,
        version: NewVersion {
            target,
            kind,
            run_id: vote.run_id,
            agent: vote.agent.clone(),
            cert_sha256: vote.cert_sha256.clone(),
            manifest: vote.manifest.clone(),
            signature: vote.signature.clone(),
            url,
            etag: vote.etag.clone(),
            last_modified: vote.last_modified.clone(),
            size: vote.size,
            blake3: vote.blake3.clone(),
        },
    })
}

/// Why the votes show the origin changed between the fetches (their
/// validators differ), if they do.
fn origin_changed(votes: &[Vote]) -> Option<String> {
    let differ = |field: fn(&Vote) -> &str, name: &str| {
        let seen: std::collections::BTreeSet<&str> =
            votes.iter().map(field).filter(|s| !s.is_empty()).collect();
        (seen.len() > 1).then(|| {
            let each: Vec<String> = votes
                .iter()
                .map(|v| format!("{} saw {name} {:?}", v.agent, field(v)))
                .collect();
            format!(
                "the origin changed between the fetches ({}): retried, not a dispute",
                each.join(", ")
            )
        })
    };
    differ(|v| v.etag.as_str(), "ETag")
        .or_else(|| differ(|v| v.last_modified.as_str(), "Last-Modified"))
}

/// The decision, in one transaction.
fn plan(tx: &Connection, scheduler: &Scheduler, id: i64, now: i64) -> Result<Plan> {
    let Some(group) = q::group(tx, id)? else {
        return Ok(Plan::Nothing);
    };
    if !matches!(
        group.state.as_str(),
        q::group_state::OPEN | q::group_state::DISPUTED
    ) {
        return Ok(Plan::Nothing);
    }
    let members = q::members(tx, id)?;
    let votes = q::votes(tx, id)?;
    // A member landed and the group was not closed (a crash between).
    if let Some((run, _)) = members
        .iter()
        .find(|(_, s)| s == run_state::SUCCEEDED || s == run_state::UNCHANGED)
    {
        let key = votes
            .iter()
            .find(|v| v.run_id == *run)
            .map(|v| v.key.clone())
            .unwrap_or_default();
        let version: Option<i64> = tx
            .query_row(
                "SELECT id FROM versions WHERE run_id = ?1 AND state = 'landed'",
                [run],
                |r| r.get(0),
            )
            .optional()?;
        scheduler.close_group(tx, &group, &key, *run, version, now)?;
        return Ok(Plan::Nothing);
    }
    if now >= group.deadline {
        let reason = format!(
            "quorum {} not reached within {:?} ({} of {} agents reported)",
            group.need,
            scheduler.config.quorum_ttl,
            votes.len(),
            group.need
        );
        scheduler.retry_group(tx, &group, &reason, now)?;
        return Ok(Plan::Nothing);
    }
    if let Some(reason) = origin_changed(&votes) {
        scheduler.retry_group(tx, &group, &reason, now)?;
        return Ok(Plan::Nothing);
    }
    let mut tally: Vec<(&str, Vec<&Vote>)> = Vec::new();
    for v in &votes {
        match tally.iter_mut().find(|(k, _)| *k == v.key) {
            Some((_, list)) => list.push(v),
            None => tally.push((&v.key, vec![v])),
        }
    }
    let best = tally
        .iter()
        .max_by_key(|(_, list)| list.len())
        .map(|(k, list)| (k.to_string(), list.clone()));
    let (best_key, best) = best.unwrap_or_default();
    if best.len() as u32 >= group.need {
        return agreed(tx, scheduler, group, best_key, &best, now);
    }
    let voted = |run: i64| votes.iter().any(|v| v.run_id == run);
    let coming = members
        .iter()
        .filter(|(run, s)| (s == run_state::QUEUED || s == run_state::LEASED) && !voted(*run))
        .count();
    if best.len() + coming >= group.need as usize {
        return Ok(Plan::Nothing);
    }
    if tally.len() > 1 {
        scheduler.dispute(tx, &group, &votes, now)?;
    } else {
        scheduler.fail_group(
            tx,
            &group,
            &format!(
                "quorum {} not reached: {} agent(s) delivered, the other members failed",
                group.need,
                votes.len()
            ),
            now,
        )?;
    }
    Ok(Plan::Nothing)
}

/// `need` votes agree on `key`: land it (or finish as unchanged when the
/// archive already has it), or wait for its upload, or retry when no
/// member holds its bytes any more.
fn agreed(
    tx: &Connection,
    scheduler: &Scheduler,
    group: Group,
    key: String,
    best: &[&Vote],
    now: i64,
) -> Result<Plan> {
    let first = best[0];
    let begin_landing = |tx: &Connection| {
        tx.execute(
            "UPDATE quorum_groups SET state = 'landing' WHERE id = ?1",
            [group.id],
        )
    };
    if key == q::UNCHANGED_KEY {
        scheduler.finish_run(
            tx,
            first.run_id,
            &first.agent,
            run_state::UNCHANGED,
            0,
            "",
            None,
            &format!("quorum {}: the origin is unchanged", group.need),
            now,
        )?;
        scheduler.close_group(tx, &group, &key, first.run_id, None, now)?;
        return Ok(Plan::Nothing);
    }
    if let Some(held) = best.iter().find(|v| v.verified) {
        begin_landing(tx)?;
        return Ok(Plan::Land {
            group,
            key,
            vote: Box::new((*held).clone()),
            link: None,
        });
    }
    let pending = pending_of(tx, first)?;
    let v = &pending.version;
    if let Some(latest) = latest_with(tx, v)? {
        scheduler.finish_run(
            tx,
            first.run_id,
            &first.agent,
            run_state::UNCHANGED,
            v.size,
            &v.blake3,
            v.validators(),
            &format!(
                "quorum {}: same bytes as the latest version {}",
                group.need, latest.path
            ),
            now,
        )?;
        scheduler.close_group(tx, &group, &key, first.run_id, Some(latest.id), now)?;
        return Ok(Plan::Nothing);
    }
    if crate::kinds::of(&v.kind).links_across_targets() {
        if let Some(other) = archive::landed_root(tx, &v.blake3, v.size)? {
            begin_landing(tx)?;
            return Ok(Plan::Land {
                group,
                key,
                vote: Box::new(first.clone()),
                link: Some(Box::new(other)),
            });
        }
    }
    if best
        .iter()
        .any(|v| has_upload(tx, v.run_id).unwrap_or(false))
    {
        return Ok(Plan::Nothing); // its upload is on the way
    }
    scheduler.retry_group(
        tx,
        &group,
        "the agreed version's bytes are not held (its upload failed): harvesting again",
        now,
    )?;
    Ok(Plan::Nothing)
}
