//! `Upload`: the outboard, then the bytes, verified group by group as they
//! arrive and cut at the first that does not match; then the kind's check
//! on the commander's own copy, and the landing.

use super::have::pending_from;
use super::*;

/// One message of an upload as the receiving thread sees it.
#[derive(Debug)]
pub enum Piece {
    Part(upload_chunk::Part),
    /// The stream ended cleanly (as opposed to a broken connection).
    End,
}

/// Looks up the upload the agent announced with `Have`, checks the header
/// against it, and returns it with the offset the data must start at.
pub fn begin(
    scheduler: &Scheduler,
    archive: &Archive,
    caller: &Caller,
    header: &ark_proto::UploadHeader,
    now: i64,
) -> Result<(Pending, u64)> {
    let lease = header
        .lease
        .ok_or_else(|| CommanderError::Invalid("upload header without a lease".into()))?;
    let found = scheduler.store.tx(|tx| {
        scheduler.check_lease(tx, &caller.agent, &lease, now)?;
        let row: Option<(Vec<u8>, Vec<u8>)> = tx
            .query_row(
                "SELECT manifest, signature FROM uploads WHERE run_id = ?1 AND blake3 = ?2",
                params![lease.run_id, header.blake3],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((manifest, signature)) = row else {
            return Err(CommanderError::Invalid(format!(
                "no announced upload of {} for run {}: call Have first",
                header.blake3, lease.run_id
            )));
        };
        let m: Manifest = serde_json::from_slice(&manifest)
            .map_err(|e| CommanderError::Invalid(e.to_string()))?;
        let req = HaveRequest {
            lease: Some(lease),
            manifest,
            signature,
        };
        pending_from(tx, caller, &lease, &m, &req)
    });
    let pending = match found {
        Err(e @ (CommanderError::StaleLease(_) | CommanderError::PermissionDenied(_))) => {
            return Err(scheduler.refuse(&caller.agent, &lease, e, now))
        }
        other => other?,
    };
    let offset = resumable(archive, lease.run_id, pending.version.size);
    if header.offset != offset {
        return Err(CommanderError::Aborted(format!(
            "the upload starts at byte {} but the commander holds {offset} verified bytes: ask Have again",
            header.offset
        )));
    }
    Ok((pending, offset))
}

/// Receives the outboard and the data on a blocking thread, verifying as
/// they arrive, then lands the version. A disk that fills on the way is
/// no failure of the harvest: the partial upload is removed (its space
/// freed) and the run waits for space (see [`defer_for_space`]).
pub fn receive(
    scheduler: &Scheduler,
    archive: &Archive,
    pending: &Pending,
    offset: u64,
    pieces: tokio::sync::mpsc::Receiver<Piece>,
) -> Result<UploadResponse> {
    match receive_verified(scheduler, archive, pending, offset, pieces) {
        Err(CommanderError::NoSpace(why)) => {
            Err(defer_for_space(scheduler, archive, &pending.version, &why))
        }
        Err(CommanderError::StoreUnavailable(why)) => {
            // Not the harvest's fault: the agent retries, the run waits.
            let v = &pending.version;
            scheduler.store.tx(|tx| {
                event(
                    tx,
                    ark_core::unix_ms(),
                    Some(v.run_id),
                    Some(&v.agent),
                    "landing_deferred",
                    &why,
                )
            })?;
            tracing::warn!(run = v.run_id, "landing deferred: {why}");
            Err(CommanderError::StoreUnavailable(why))
        }
        Err(CommanderError::Name(why)) => {
            // The same name would be refused again: the run fails now.
            let (data, outboard) = archive.quarantined(pending.version.run_id);
            Err(refuse(
                scheduler,
                pending,
                &data,
                &outboard,
                why,
                ark_core::unix_ms(),
            ))
        }
        other => other,
    }
}

pub(super) fn receive_verified(
    scheduler: &Scheduler,
    archive: &Archive,
    pending: &Pending,
    offset: u64,
    mut pieces: tokio::sync::mpsc::Receiver<Piece>,
) -> Result<UploadResponse> {
    let v = &pending.version;
    let run = v.run_id;
    let (data_path, outboard_path) = archive.quarantined(run);
    archive.create()?;
    let root = blake3::Hash::from_hex(&v.blake3)
        .map_err(|e| CommanderError::Invalid(format!("BLAKE3 root: {e}")))?;
    let io = |what, path: &std::path::Path| CommanderError::io(what, path.to_path_buf());
    // The outboard, in full, every time: it is 0.2 % of the data.
    let mut outboard = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&outboard_path)
        .map_err(io("creating", &outboard_path))?;
    let (first_data, ended) = receive_outboard(
        scheduler,
        pending,
        &mut pieces,
        (&mut outboard, &outboard_path),
    )?;
    outboard.rewind().map_err(io("reading", &outboard_path))?;
    let mut verifier = GroupVerifier::new(root, v.size, std::io::BufReader::new(outboard))
        .map_err(|e| cut(scheduler, pending, 0, e.to_string()))?;
    let mut data = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&data_path)
        .map_err(io("opening", &data_path))?;
    // What earlier attempts left is re-verified, not trusted.
    data.set_len(offset).map_err(io("truncating", &data_path))?;
    reverify_kept(&mut data, &mut verifier, offset, run, &data_path)?;
    // The disk writes while the rest arrives: the final fsync waits for
    // the last few MiB, not the whole upload.
    let mut writeback =
        ark_core::fs::EarlyWriteBack::start(&data).map_err(io("opening", &data_path))?;
    let received = receive_data(
        scheduler,
        pending,
        &mut pieces,
        (&mut data, &data_path),
        &mut verifier,
        &mut writeback,
        (offset, first_data, ended),
    )?;
    drop(writeback);
    if let Err(e) = verifier.finish() {
        return Err(cut(scheduler, pending, received, e.to_string()));
    }
    let now = ark_core::unix_ms();
    data.sync_all().map_err(io("syncing", &data_path))?;
    drop(data);
    check_and_land(
        scheduler,
        archive,
        pending,
        (&data_path, &outboard_path),
        now,
    )
}

/// The outboard, in full, every time (it is 0.2 % of the data), up to the
/// first data piece; returns that piece and whether the stream ended.
fn receive_outboard(
    scheduler: &Scheduler,
    pending: &Pending,
    pieces: &mut tokio::sync::mpsc::Receiver<Piece>,
    (outboard, outboard_path): (&mut std::fs::File, &std::path::Path),
) -> Result<(Option<bytes::Bytes>, bool)> {
    let v = &pending.version;
    let run = v.run_id;
    let expected_outboard = v.size.div_ceil(GROUP_LEN as u64) * CV_LEN as u64;
    let io = |what| CommanderError::io(what, outboard_path.to_path_buf());
    let mut got = 0u64;
    let mut first_data = None;
    let mut ended = false;
    while let Some(piece) = pieces.blocking_recv() {
        match piece {
            Piece::Part(upload_chunk::Part::Outboard(bytes)) => {
                got += bytes.len() as u64;
                if got > expected_outboard {
                    return Err(cut(scheduler, pending, 0, format!(
                        "the outboard is longer than {expected_outboard} bytes, all {} bytes of data need",
                        v.size
                    )));
                }
                outboard.write_all(&bytes).map_err(io("writing"))?;
            }
            Piece::Part(upload_chunk::Part::Data(bytes)) => {
                first_data = Some(bytes);
                break;
            }
            Piece::Part(upload_chunk::Part::Header(_)) => {
                return Err(CommanderError::Invalid("a second upload header".into()))
            }
            Piece::End => {
                ended = true;
                break;
            }
        }
    }
    if !ended && first_data.is_none() && got < expected_outboard {
        return Err(CommanderError::Aborted(format!(
            "upload of run {run} interrupted while sending the outboard"
        )));
    }
    Ok((first_data, ended))
}

/// What earlier attempts left in quarantine is re-verified, not trusted.
fn reverify_kept(
    data: &mut std::fs::File,
    verifier: &mut GroupVerifier<std::io::BufReader<std::fs::File>>,
    offset: u64,
    run: i64,
    data_path: &std::path::Path,
) -> Result<()> {
    let io = |what, path: &std::path::Path| CommanderError::io(what, path.to_path_buf());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = offset;
    while left > 0 {
        let n = data
            .read(&mut buf[..(left.min(1 << 20)) as usize])
            .map_err(io("re-reading", data_path))?;
        if n == 0 {
            break;
        }
        left -= n as u64;
        if let Err(e) = verifier.update(&buf[..n]) {
            let keep = verifier.verified_bytes();
            let _ = data.set_len(keep);
            return Err(CommanderError::Aborted(format!(
                "the quarantined copy of run {run} is damaged ({e}); kept {keep} verified bytes: ask Have again"
            )));
        }
    }
    Ok(())
}

/// The data from `offset`, each group verified as it arrives; the first
/// that does not match cuts the transfer (its verified groups kept).
/// Returns the bytes received in all.
fn receive_data(
    scheduler: &Scheduler,
    pending: &Pending,
    pieces: &mut tokio::sync::mpsc::Receiver<Piece>,
    (data, data_path): (&mut std::fs::File, &std::path::Path),
    verifier: &mut GroupVerifier<std::io::BufReader<std::fs::File>>,
    writeback: &mut ark_core::fs::EarlyWriteBack,
    (offset, first_data, mut ended): (u64, Option<bytes::Bytes>, bool),
) -> Result<u64> {
    let io = |what, path: &std::path::Path| CommanderError::io(what, path.to_path_buf());
    let mut received = offset;
    let mut next = first_data;
    loop {
        if let Some(bytes) = next.take() {
            if let Err(e) = verifier.update(&bytes) {
                // Keep the groups of this piece that did verify.
                let keep = verifier.verified_bytes();
                let good = keep.saturating_sub(received).min(bytes.len() as u64) as usize;
                ark_core::fs::write_in_pieces(data, &bytes[..good])
                    .map_err(io("writing", data_path))?;
                let _ = data.set_len(keep);
                let _ = data.sync_all();
                return Err(cut(scheduler, pending, keep, e.to_string()));
            }
            ark_core::fs::write_in_pieces(data, &bytes).map_err(io("writing", data_path))?;
            writeback.wrote(bytes.len());
            received += bytes.len() as u64;
        }
        if ended {
            if received < pending.version.size {
                // Ended short of the claim. A request stream whose
                // connection broke can end like a finished one (tonic
                // reports a cancelled body as its end: seen when the
                // commander's HTTP/2 keepalive closes a partitioned
                // connection), so this is an interruption, not a lie.
                return Err(kept_for_resume(
                    scheduler, pending, data, received, verifier,
                ));
            }
            break;
        }
        match pieces.blocking_recv() {
            Some(Piece::Part(upload_chunk::Part::Data(bytes))) => next = Some(bytes),
            Some(Piece::End) => ended = true,
            Some(Piece::Part(_)) => {
                return Err(CommanderError::Invalid(
                    "outboard or header after the data began".into(),
                ))
            }
            None => {
                // The connection broke.
                return Err(kept_for_resume(
                    scheduler, pending, data, received, verifier,
                ));
            }
        }
    }
    Ok(received)
}

/// An upload that stopped short: what was written is synced and its
/// verified groups are kept for a resume.
fn kept_for_resume(
    scheduler: &Scheduler,
    pending: &Pending,
    data: &mut std::fs::File,
    received: u64,
    verifier: &GroupVerifier<std::io::BufReader<std::fs::File>>,
) -> CommanderError {
    let _ = data.sync_data();
    interrupted(scheduler, pending, received, verifier.verified_bytes())
}

/// The complete, verified upload: the published digests recomputed, the
/// kind's own check (and what it moves once it passes: a git mirror's
/// refs), then the landing — as a hard link when the same bytes landed
/// meanwhile under another target.
fn check_and_land(
    scheduler: &Scheduler,
    archive: &Archive,
    pending: &Pending,
    (data_path, outboard_path): (&std::path::Path, &std::path::Path),
    now: i64,
) -> Result<UploadResponse> {
    let v = &pending.version;
    let refused = |reason| refuse(scheduler, pending, data_path, outboard_path, reason, now);
    if let Some(reason) = content_problem(scheduler, v, data_path)? {
        return Err(refused(reason));
    }
    if let Some(reason) = spot_checked(scheduler, v, data_path, now)? {
        return Err(refused(reason));
    }
    // A quorum member's bytes wait for the others' votes.
    if let Some(group) = scheduler
        .store
        .read(|c| crate::scheduler::quorum::group_of(c, v.run_id))?
    {
        return super::quorum::hold(
            scheduler,
            archive,
            pending,
            (data_path, outboard_path),
            &group,
            now,
        );
    }
    let (version, deduplicated) = land_checked(
        scheduler,
        archive,
        pending,
        (data_path, outboard_path),
        &|_, _| Ok(()),
        now,
    )?;
    Ok(UploadResponse {
        path: version.path,
        size: version.size,
        blake3: version.blake3,
        deduplicated,
        awaiting_quorum: false,
    })
}

/// Runs the target's spot check (if it asks for one) and records what it
/// found; Some(reason) when it failed (the agent is marked suspect).
fn spot_checked(
    scheduler: &Scheduler,
    v: &NewVersion,
    data: &std::path::Path,
    now: i64,
) -> Result<Option<String>> {
    let k: u32 = scheduler.store.read(|c| {
        Ok(c.query_row(
            "SELECT spot_check FROM targets WHERE name = ?1",
            [&v.target],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
    })?;
    if k == 0 {
        return Ok(None);
    }
    let spot = super::spot::spot_check(v, data, k);
    scheduler.store.tx(|tx| {
        let (kind, message) = match &spot {
            super::spot::Spot::Passed(m) => ("spot_check", m),
            super::spot::Spot::Impossible(m) => ("spot_check_impossible", m),
            super::spot::Spot::Failed(m) => ("spot_check_failed", m),
        };
        event(tx, now, Some(v.run_id), Some(&v.agent), kind, message)?;
        if let super::spot::Spot::Failed(why) = &spot {
            crate::scheduler::quorum::mark_suspect(
                tx,
                &v.agent,
                "spot_failed",
                why,
                v.run_id,
                now,
            )?;
        }
        Ok(())
    })?;
    Ok(match spot {
        super::spot::Spot::Failed(why) => Some(why),
        _ => None,
    })
}

/// The kind's own check on the commander's copy (and what it moves once it
/// passes: a git mirror's refs), then the landing, with `also` in its
/// ledger step. Returns the version and whether it was linked.
pub(super) fn land_checked(
    scheduler: &Scheduler,
    archive: &Archive,
    pending: &Pending,
    (data_path, outboard_path): (&std::path::Path, &std::path::Path),
    also: super::Also<'_>,
    now: i64,
) -> Result<(Version, bool)> {
    let v = &pending.version;
    let refused = |reason| refuse(scheduler, pending, data_path, outboard_path, reason, now);
    let ctx = crate::kinds::CheckCtx {
        archive,
        store: &scheduler.store,
        version: v,
        data: data_path,
        now,
    };
    if let Some(reason) = crate::kinds::of(&v.kind).check(&ctx)? {
        return Err(refused(reason));
    }
    // The same bytes may have landed meanwhile under another target.
    let other = scheduler
        .store
        .read(|c| archive::landed_root(c, &v.blake3, v.size))?
        .filter(|_| crate::kinds::of(&v.kind).links_across_targets());
    let source = match other {
        Some(o) => Source::Link {
            version: o.id,
            path: o.path,
        },
        None => Source::Quarantine,
    };
    let deduplicated = matches!(source, Source::Link { .. });
    let version = land(scheduler, archive, v, source, also, now)?;
    tracing::info!(run = v.run_id, path = %version.path, size = v.size, deduplicated, "landed");
    Ok((version, deduplicated))
}
