//! `Have`: the signed manifest checked against the run the commander
//! assigned, then the decision — unchanged, hard-link bytes the archive
//! holds, defer for a full disk, or upload from the verified offset.

use super::*;

/// What `Have` decided.
pub(super) enum Decision {
    Unchanged(Version),
    Link(Version, Box<NewVersion>),
    Upload(u64),
    /// The archive's disk cannot hold the upload now: the run was deferred.
    NoSpace(String),
    /// A quorum member's vote is in, and the commander holds its bytes:
    /// its group (by id) is settled next.
    Confirmed(i64),
}

/// The `Have` call.
pub fn have(
    scheduler: &Scheduler,
    archive: &Archive,
    caller: &Caller,
    req: &HaveRequest,
    now: i64,
) -> Result<HaveResponse> {
    let lease = req
        .lease
        .ok_or_else(|| CommanderError::Invalid("Have without a lease".into()))?;
    let store = &scheduler.store;
    let manifest = checked_manifest(store, caller, req, lease.run_id, now)?;
    let decision = store.tx(|tx| {
        decide(
            tx,
            scheduler,
            archive,
            caller,
            (&lease, &manifest, req),
            now,
        )
    });
    let decision = match decision {
        Err(e @ (CommanderError::StaleLease(_) | CommanderError::PermissionDenied(_))) => {
            return Err(scheduler.refuse(&caller.agent, &lease, e, now))
        }
        other => other?,
    };
    Ok(match decision {
        Decision::Unchanged(latest) => HaveResponse {
            held: true,
            unchanged: true,
            path: latest.path,
            resume_from: 0,
            confirmed: false,
        },
        Decision::Confirmed(group) => {
            let path = quorum::settle_logged(scheduler, archive, group);
            HaveResponse {
                held: true,
                unchanged: false,
                path: path.unwrap_or_default(),
                resume_from: 0,
                confirmed: true,
            }
        }
        Decision::NoSpace(why) => return Err(no_space_refusal(&why)),
        Decision::Link(other, version) => {
            let linked = land(
                scheduler,
                archive,
                &version,
                Source::Link {
                    version: other.id,
                    path: other.path.clone(),
                },
                &|_, _| Ok(()),
                now,
            );
            let landed = match linked {
                Err(CommanderError::NoSpace(why)) => {
                    return Err(defer_for_space(scheduler, archive, &version, &why))
                }
                other => other?,
            };
            HaveResponse {
                held: true,
                unchanged: false,
                path: landed.path,
                resume_from: 0,
                confirmed: false,
            }
        }
        Decision::Upload(resume_from) => HaveResponse {
            held: false,
            unchanged: false,
            path: String::new(),
            resume_from,
            confirmed: false,
        },
    })
}

/// Checks the manifest against what the commander itself assigned.
pub(super) fn pending_from(
    tx: &Connection,
    caller: &Caller,
    lease: &LeaseRef,
    m: &Manifest,
    req: &HaveRequest,
) -> Result<Pending> {
    let (target, kind, url): (String, String, String) = tx.query_row(
        "SELECT target, kind, url FROM runs WHERE id = ?1",
        [lease.run_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut wrong = Vec::new();
    if m.format != ark_core::manifest::FORMAT {
        wrong.push(format!(
            "format {} (this commander reads {})",
            m.format,
            ark_core::manifest::FORMAT
        ));
    }
    if m.run_id != lease.run_id || m.generation != lease.generation {
        wrong.push(format!(
            "lease {}/{} (the call is for {}/{})",
            m.run_id, m.generation, lease.run_id, lease.generation
        ));
    }
    if m.agent != caller.agent {
        wrong.push(format!(
            "agent {:?} (the certificate is {:?}'s)",
            m.agent, caller.agent
        ));
    }
    if m.target != target || m.kind != kind || m.url != url {
        wrong.push(format!(
            "target/kind/url {}/{}/{} (the run is {target}/{kind}/{url})",
            m.target, m.kind, m.url
        ));
    }
    if blake3::Hash::from_hex(&m.blake3).is_err() {
        wrong.push(format!("BLAKE3 {:?} is not 64 hex digits", m.blake3));
    }
    if !wrong.is_empty() {
        return Err(CommanderError::Invalid(format!(
            "the manifest does not match run {}: {}",
            lease.run_id,
            wrong.join("; ")
        )));
    }
    Ok(Pending {
        generation: lease.generation,
        version: NewVersion {
            target,
            kind,
            run_id: lease.run_id,
            agent: caller.agent.clone(),
            cert_sha256: caller.cert_sha256.clone(),
            manifest: req.manifest.clone(),
            signature: req.signature.clone(),
            url,
            etag: m.etag.clone(),
            last_modified: m.last_modified.clone(),
            size: m.size,
            blake3: m.blake3.clone(),
        },
    })
}

/// The decision, in the transaction that records it: the lease and the
/// manifest checked against the run, then unchanged (the target's latest
/// version holds the bytes), a link (another target's does), a deferral
/// (the disk cannot hold them), or an upload from the verified offset.
fn decide(
    tx: &Connection,
    scheduler: &Scheduler,
    archive: &Archive,
    caller: &Caller,
    (lease, manifest, req): (&LeaseRef, &Manifest, &HaveRequest),
    now: i64,
) -> Result<Decision> {
    scheduler.check_lease(tx, &caller.agent, lease, now)?;
    let pending = pending_from(tx, caller, lease, manifest, req)?;
    let v = &pending.version;
    match crate::scheduler::quorum::group_of(tx, v.run_id)? {
        Some(group) => {
            if let Some(decision) = quorum::have_member(tx, scheduler, &pending, manifest, &group)?
            {
                return Ok(decision);
            }
        }
        // A release held to a published digest is always uploaded and
        // checked against it: an agent's word that the archive already
        // has its bytes would let it pass an old release off as the new.
        None if !held_to_a_digest(tx, v.run_id)? => {
            if let Some(decision) = held_already(tx, scheduler, caller, &pending, now)? {
                return Ok(decision);
            }
        }
        None => {}
    }
    upload_from(tx, scheduler, archive, caller, pending, now)
}

/// Whether run `id` must match a digest the commander resolved itself.
fn held_to_a_digest(tx: &Connection, id: i64) -> Result<bool> {
    Ok(tx.query_row(
        "SELECT expected_sha256 != '' FROM runs WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?)
}

/// Unchanged (the target's latest version holds the bytes) or a link
/// (another target's does), if either.
fn held_already(
    tx: &Connection,
    scheduler: &Scheduler,
    caller: &Caller,
    pending: &Pending,
    now: i64,
) -> Result<Option<Decision>> {
    let v = &pending.version;
    if let Some(latest) = latest_with(tx, v)? {
        scheduler.finish_run(
            tx,
            v.run_id,
            &caller.agent,
            run_state::UNCHANGED,
            v.size,
            &v.blake3,
            v.validators(),
            &format!(
                "same bytes as the latest version {}: nothing new landed",
                latest.path
            ),
            now,
        )?;
        return Ok(Some(Decision::Unchanged(latest)));
    }
    // (Unless the kind says no: a bundle is a delta against one mirror.)
    if crate::kinds::of(&v.kind).links_across_targets() {
        if let Some(other) = archive::landed_root(tx, &v.blake3, v.size)? {
            return Ok(Some(Decision::Link(
                other,
                Box::new(pending.version.clone()),
            )));
        }
    }
    Ok(None)
}

/// An upload from the verified offset (or a deferral for a full disk).
fn upload_from(
    tx: &Connection,
    scheduler: &Scheduler,
    archive: &Archive,
    caller: &Caller,
    pending: Pending,
    now: i64,
) -> Result<Decision> {
    let v = &pending.version;
    // A new body: remember the claim, keep what an earlier attempt
    // of the same bytes left in quarantine.
    let earlier: Option<(String, i64)> = tx
        .query_row(
            "SELECT blake3, size FROM uploads WHERE run_id = ?1",
            [v.run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if earlier.is_some_and(|(root, size)| root != v.blake3 || size as u64 != v.size) {
        let (data, outboard) = archive.quarantined(v.run_id);
        let _ = std::fs::remove_file(data);
        let _ = std::fs::remove_file(outboard);
    }
    let kept = resumable(archive, v.run_id, v.size);
    if let Some(why) = no_room(archive, v, kept) {
        tracing::warn!("{why}");
        scheduler.defer_for_space(tx, v.run_id, &caller.agent, &why, now)?;
        return Ok(Decision::NoSpace(why));
    }
    tx.execute(
        "INSERT OR REPLACE INTO uploads (run_id, generation, agent, cert_sha256, blake3, size, manifest, signature, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            v.run_id,
            pending.generation as i64,
            caller.agent,
            caller.cert_sha256,
            v.blake3,
            v.size as i64,
            v.manifest,
            v.signature,
            now
        ],
    )?;
    Ok(Decision::Upload(kept))
}

/// The manifest, its signature checked against the caller's certificate;
/// a refusal is recorded on the run.
fn checked_manifest(
    store: &crate::state::Store,
    caller: &Caller,
    req: &HaveRequest,
    run: i64,
    now: i64,
) -> Result<Manifest> {
    match verify_manifest(&req.manifest, &req.signature, &caller.cert_der) {
        Ok(m) => Ok(m),
        Err(e) => {
            let message = format!("manifest from {} refused: {e}", caller.agent);
            tracing::warn!("{message}");
            store.tx(|tx| {
                event(
                    tx,
                    now,
                    Some(run),
                    Some(&caller.agent),
                    "manifest_refused",
                    &message,
                )
            })?;
            Err(e)
        }
    }
}

/// Why the archive's disk cannot take the rest of `v` now (`kept` bytes of
/// it already in quarantine), if it cannot.
fn no_room(archive: &Archive, v: &NewVersion, kept: u64) -> Option<String> {
    let needed = space_needed(v.size, kept);
    let free = ark_core::fs::free_space(&archive.quarantine())
        .filter(|_| std::env::var_os(FAULT_SKIP_SPACE_CHECK).is_none())?;
    (free < needed).then(|| {
        format!(
            "the archive disk ({}) is full: {free} bytes free, run {} needs {needed} \
             ({} bytes to receive, its outboard and a margin); free space there",
            archive.root().display(),
            v.run_id,
            v.size - kept.min(v.size)
        )
    })
}
