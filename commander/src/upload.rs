//! Receiving a harvested body: `Have` (the signed manifest, dedupe, where to
//! resume) and `Upload` (the outboard, then the bytes, verified group by
//! group as they arrive, then landed).
//!
//! Nothing the agent says is trusted: the manifest must carry the agent's
//! own signature and name the run, lease, target, kind and URL the
//! commander itself assigned; the outboard must hash to the claimed root;
//! every 16 KiB group must hash to its CV. The first group that does not is
//! where the transfer is cut (`DATA_LOSS`), the quarantined copy is
//! truncated to what was verified, and the offset is recorded.

use std::io::{Read, Seek, Write};

use ark_core::manifest::Manifest;
use ark_core::tree::{GroupVerifier, CV_LEN, GROUP_LEN};
use ark_proto::{upload_chunk, HaveRequest, HaveResponse, LeaseRef, UploadResponse};
use rusqlite::{params, Connection, OptionalExtension};

use crate::archive::{self, Archive, NewVersion, Source, Version};
use crate::scheduler::Scheduler;
use crate::state::{event, run_state};
use crate::{CommanderError, Result};

/// Who is calling, as the TLS layer established it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub agent: String,
    pub cert_sha256: String,
    pub cert_der: std::sync::Arc<[u8]>,
}

/// An upload the commander has agreed to receive (the `uploads` row).
#[derive(Debug, Clone)]
pub struct Pending {
    pub version: NewVersion,
    pub generation: u64,
}

/// Checks the manifest's signature with the public key of the certificate
/// the agent presented, and parses it.
pub fn verify_manifest(bytes: &[u8], signature: &[u8], cert_der: &[u8]) -> Result<Manifest> {
    use ark_core::manifest::ManifestError;
    Manifest::verify(bytes, signature, cert_der).map_err(|e| match e {
        ManifestError::BadSignature => CommanderError::PermissionDenied(e.to_string()),
        other => CommanderError::Invalid(other.to_string()),
    })
}

/// What `Have` decided.
enum Decision {
    Unchanged(Version),
    Link(Version, Box<NewVersion>),
    Upload(u64),
    /// The archive's disk cannot hold the upload now: the run was deferred.
    NoSpace(String),
}

/// Room kept free on the archive's disk beyond an upload and its outboard:
/// the manifest, the directory entries and the ledger's growth need a
/// little, and a disk filled to the last byte fails in worse places.
pub const SPACE_MARGIN: u64 = 1 << 20;

/// Environment variable that turns the space check before an upload off:
/// a test hook, so a test can fill the disk in the middle of an upload (as
/// another writer on the NAS would).
pub const FAULT_SKIP_SPACE_CHECK: &str = "ARK_FAULT_SKIP_SPACE_CHECK";

/// Bytes the archive's disk must have free to receive `size` bytes of which
/// `kept` are already in quarantine.
fn space_needed(size: u64, kept: u64) -> u64 {
    let outboard = size.div_ceil(GROUP_LEN as u64) * CV_LEN as u64;
    let rest = size - kept.min(size);
    rest + outboard + rest / 100 + SPACE_MARGIN
}

/// Bytes of run `run`'s quarantined upload that may be kept: whole groups
/// (the last, partial group only when the file is complete).
fn resumable(archive: &Archive, run: i64, size: u64) -> u64 {
    let len = std::fs::metadata(archive.quarantined(run).0)
        .map(|m| m.len())
        .unwrap_or(0);
    if len >= size {
        size
    } else {
        len - len % GROUP_LEN as u64
    }
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
    let manifest = match verify_manifest(&req.manifest, &req.signature, &caller.cert_der) {
        Ok(m) => m,
        Err(e) => {
            let message = format!("manifest from {} refused: {e}", caller.agent);
            tracing::warn!("{message}");
            store.tx(|tx| {
                event(
                    tx,
                    now,
                    Some(lease.run_id),
                    Some(&caller.agent),
                    "manifest_refused",
                    &message,
                )
            })?;
            return Err(e);
        }
    };
    let decision = store.tx(|tx| {
        scheduler.check_lease(tx, &caller.agent, &lease, now)?;
        let pending = pending_from(tx, caller, &lease, &manifest, req)?;
        let v = &pending.version;
        let latest = archive::landed(tx, Some(&v.target))?
            .into_iter()
            .find(|l| l.kind == v.kind && crate::kinds::of(&v.kind).unchanged_when_latest());
        if let Some(latest) = latest {
            if latest.blake3 == v.blake3 && latest.size == v.size {
                scheduler.finish_run(
                    tx,
                    v.run_id,
                    &caller.agent,
                    run_state::UNCHANGED,
                    v.size,
                    &v.blake3,
                    v.validators(),
                    &format!("same bytes as the latest version {}: nothing new landed", latest.path),
                    now,
                )?;
                return Ok(Decision::Unchanged(latest));
            }
        }
        // (Unless the kind says no: a bundle is a delta against one mirror.)
        if crate::kinds::of(&v.kind).links_across_targets() {
            if let Some(other) = archive::landed_root(tx, &v.blake3, v.size)? {
                return Ok(Decision::Link(other, Box::new(pending.version)));
            }
        }
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
        let needed = space_needed(v.size, kept);
        let free = crate::error::free_space(&archive.quarantine())
            .filter(|_| std::env::var_os(FAULT_SKIP_SPACE_CHECK).is_none());
        if let Some(free) = free.filter(|&free| free < needed) {
            let why = format!(
                "the archive disk ({}) is full: {free} bytes free, run {} needs {needed} \
                 ({} bytes to receive, its outboard and a margin); free space there",
                archive.root().display(),
                v.run_id,
                v.size - kept.min(v.size)
            );
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
        },
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
            }
        }
        Decision::Upload(resume_from) => HaveResponse {
            held: false,
            unchanged: false,
            path: String::new(),
            resume_from,
        },
    })
}

/// Checks the manifest against what the commander itself assigned.
fn pending_from(
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

/// Lands a verified version and completes its run in the same step.
fn land(
    scheduler: &Scheduler,
    archive: &Archive,
    v: &NewVersion,
    source: Source,
    now: i64,
) -> Result<Version> {
    let linked = matches!(source, Source::Link { .. });
    let store = &scheduler.store;
    archive.land(
        store,
        v,
        &source,
        now,
        |landing| derive(archive, store, landing, now),
        |tx, version, derived| {
            let how = if linked {
                "bytes already in the archive: hard-linked"
            } else {
                "verified upload"
            };
            record_derived(tx, version, derived, now)?;
            scheduler.finish_run(
                tx,
                v.run_id,
                &v.agent,
                run_state::SUCCEEDED,
                v.size,
                &v.blake3,
                v.validators(),
                &format!("landed {} ({} bytes, {how})", version.path, v.size),
                now,
            )
        },
    )
}

/// What landing `version` derives from its file before the ledger commits
/// (the kind decides).
pub fn derive(
    archive: &Archive,
    store: &crate::state::Store,
    version: &Version,
    now: i64,
) -> Result<crate::kinds::Derived> {
    crate::kinds::of(&version.kind).derive(archive, store, version, now)
}

/// Records, in the landing transaction, what [`derive`] produced.
pub fn record_derived(
    tx: &Connection,
    version: &Version,
    derived: crate::kinds::Derived,
    now: i64,
) -> Result<()> {
    crate::kinds::of(&version.kind).record(tx, version, derived, now)
}

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
        other => other,
    }
}

/// What the agent is told when the archive's disk cannot take its upload.
fn no_space_refusal(why: &str) -> CommanderError {
    CommanderError::StaleLease(format!(
        "{why}; nothing landed, and the run is queued again for when space is free: drop the job"
    ))
}

/// The archive's disk filled while receiving or landing `v`: its
/// quarantine goes (freeing what it took), the run is deferred.
fn defer_for_space(
    scheduler: &Scheduler,
    archive: &Archive,
    v: &NewVersion,
    why: &str,
) -> CommanderError {
    let (data, outboard) = archive.quarantined(v.run_id);
    let _ = std::fs::remove_file(data);
    let _ = std::fs::remove_file(outboard);
    let _ = std::fs::remove_dir_all(
        archive
            .quarantine()
            .join(format!("run-{}.git-check", v.run_id)),
    );
    let why = format!("{why}; the partial upload was removed to free its space");
    tracing::warn!(run = v.run_id, "{why}");
    let now = ark_core::unix_ms();
    let deferred = scheduler.store.tx(|tx| {
        tx.execute("DELETE FROM uploads WHERE run_id = ?1", [v.run_id])?;
        scheduler.defer_for_space(tx, v.run_id, &v.agent, &why, now)
    });
    if let Err(e) = deferred {
        return e;
    }
    no_space_refusal(&why)
}

fn receive_verified(
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
    let expected_outboard = v.size.div_ceil(GROUP_LEN as u64) * CV_LEN as u64;
    let io = |what, path: &std::path::Path| CommanderError::io(what, path.to_path_buf());
    // The outboard, in full, every time: it is 0.2 % of the data.
    let mut outboard = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&outboard_path)
        .map_err(io("creating", &outboard_path))?;
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
                outboard
                    .write_all(&bytes)
                    .map_err(io("writing", &outboard_path))?;
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
    let mut buf = vec![0u8; 1 << 20];
    let mut left = offset;
    while left > 0 {
        let n = data
            .read(&mut buf[..(left.min(1 << 20)) as usize])
            .map_err(io("re-reading", &data_path))?;
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
    let mut received = offset;
    let mut next = first_data;
    loop {
        if let Some(bytes) = next.take() {
            if let Err(e) = verifier.update(&bytes) {
                // Keep the groups of this piece that did verify.
                let keep = verifier.verified_bytes();
                let good = keep.saturating_sub(received).min(bytes.len() as u64) as usize;
                data.write_all(&bytes[..good])
                    .map_err(io("writing", &data_path))?;
                let _ = data.set_len(keep);
                let _ = data.sync_all();
                return Err(cut(scheduler, pending, keep, e.to_string()));
            }
            data.write_all(&bytes).map_err(io("writing", &data_path))?;
            received += bytes.len() as u64;
        }
        if ended {
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
                // The connection broke: keep what was verified for a resume.
                let _ = data.sync_data();
                return Err(CommanderError::Aborted(format!(
                    "upload of run {run} interrupted at byte {received} of {}; {} verified bytes kept for resume",
                    v.size,
                    verifier.verified_bytes()
                )));
            }
        }
    }
    if let Err(e) = verifier.finish() {
        return Err(cut(scheduler, pending, received, e.to_string()));
    }
    let now = ark_core::unix_ms();
    data.sync_all().map_err(io("syncing", &data_path))?;
    drop(data);
    let refused = |reason| refuse(scheduler, pending, &data_path, &outboard_path, reason, now);
    if let Some(reason) = content_problem(v, &data_path)? {
        return Err(refused(reason));
    }
    // The kind's own check on the commander's copy (and what it moves once
    // the check passes: a git mirror's refs).
    let ctx = crate::kinds::CheckCtx {
        archive,
        store: &scheduler.store,
        version: v,
        data: &data_path,
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
    let version = land(scheduler, archive, v, source, now)?;
    tracing::info!(run, path = %version.path, size = v.size, deduplicated, "landed");
    Ok(UploadResponse {
        path: version.path,
        size: version.size,
        blake3: version.blake3,
        deduplicated,
    })
}

/// The bytes are what the agent claimed; are they also what the origin
/// published (recomputed here, on the commander's own copy)? Some(reason)
/// when not. (What the kind promises is [`crate::kinds::KindSpec::check`].)
fn content_problem(v: &NewVersion, data: &std::path::Path) -> Result<Option<String>> {
    let io = |what| CommanderError::io(what, data.to_path_buf());
    let claimed: Manifest = serde_json::from_slice(&v.manifest).unwrap_or_default();
    for (algorithm, hex) in &claimed.digests {
        let ours = ark_core::digest::digest_file(data, algorithm).map_err(io("hashing"))?;
        if &ours != hex {
            return Ok(Some(format!(
                "{} of the upload is {ours}, the agent reported {hex} from {}",
                algorithm.to_uppercase(),
                claimed.digest_source
            )));
        }
    }
    Ok(None)
}

/// The commander's own check refused a complete upload: nothing lands, the
/// quarantined copy goes, the run fails with `reason`, and the agent is told
/// to drop the job.
fn refuse(
    scheduler: &Scheduler,
    pending: &Pending,
    data: &std::path::Path,
    outboard: &std::path::Path,
    reason: String,
    now: i64,
) -> CommanderError {
    let v = &pending.version;
    tracing::warn!(run = v.run_id, "{reason}");
    let _ = std::fs::remove_file(data);
    let _ = std::fs::remove_file(outboard);
    let recorded = scheduler.store.tx(|tx| {
        tx.execute("DELETE FROM uploads WHERE run_id = ?1", [v.run_id])?;
        scheduler.refuse_delivery(tx, v.run_id, &v.agent, &reason, now)
    });
    if let Err(e) = recorded {
        return e;
    }
    CommanderError::StaleLease(format!(
        "{reason}; nothing landed and the run has failed: drop the job"
    ))
}

/// Records a cut upload and returns the error the agent gets.
fn cut(scheduler: &Scheduler, pending: &Pending, at: u64, why: String) -> CommanderError {
    let v = &pending.version;
    let message = format!(
        "upload from {} cut at byte {at} of {}: {why}; nothing landed, {at} verified bytes kept",
        v.agent, v.size
    );
    tracing::warn!(run = v.run_id, "{message}");
    let now = ark_core::unix_ms();
    let _ = scheduler.store.tx(|tx| {
        event(
            tx,
            now,
            Some(v.run_id),
            Some(&v.agent),
            "upload_cut",
            &message,
        )?;
        tx.execute(
            "UPDATE runs SET reason = ?2 WHERE id = ?1",
            params![v.run_id, message],
        )?;
        Ok(())
    });
    CommanderError::Cut(message)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ark_core::tree::TreeHasher;
    use tokio::sync::mpsc;

    use super::*;
    use crate::config::CommanderConfig;
    use crate::state::{self, Store};

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn outboard(data: &[u8]) -> Vec<u8> {
        let mut tree = TreeHasher::new();
        tree.update(data);
        let mut cvs = tree.take_cvs().concat();
        let (_, last) = tree.finalize();
        cvs.extend(last.unwrap_or_default());
        cvs
    }

    /// The upload of `data` for `run` of a `file` target at `url`.
    fn pending(run: i64, target: &str, url: &str, data: &[u8]) -> Pending {
        Pending {
            generation: 1,
            version: NewVersion {
                target: target.into(),
                kind: "file".into(),
                run_id: run,
                agent: "pi".into(),
                cert_sha256: "fp".into(),
                manifest: b"{}".to_vec(),
                signature: vec![1, 2, 3],
                url: url.into(),
                etag: String::new(),
                last_modified: String::new(),
                size: data.len() as u64,
                blake3: blake3::hash(data).to_hex().to_string(),
            },
        }
    }

    /// Queues the pieces of one upload attempt; `end` says whether the
    /// stream ends cleanly or breaks.
    fn attempt(outboard: &[u8], data: &[u8], end: bool) -> mpsc::Receiver<Piece> {
        let (tx, rx) = mpsc::channel(1024);
        for part in outboard.chunks(1000) {
            let _ = tx.try_send(Piece::Part(upload_chunk::Part::Outboard(part.to_vec())));
        }
        for part in data.chunks(30_000) {
            let _ = tx.try_send(Piece::Part(upload_chunk::Part::Data(part.to_vec())));
        }
        if end {
            let _ = tx.try_send(Piece::End);
        }
        rx
    }

    #[test]
    fn an_interrupted_upload_resumes_from_the_last_verified_group_and_lands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("state.sqlite")).expect("store"));
        let scheduler = Scheduler::new(store.clone(), CommanderConfig::default());
        let archive = Archive::new(dir.path().join("archive"), 3);
        store
            .tx(|tx| {
                let target = ark_proto::AddTargetRequest {
                    kind: "file".into(),
                    url: "http://origin/disk.img".into(),
                    name: "disk".into(),
                    ..Default::default()
                };
                state::add_target(tx, &target, 1).map(drop)
            })
            .expect("target");
        let run = scheduler.run_now("disk", 1).expect("run").id;
        let data = bytes(200_000);
        let cvs = outboard(&data);
        let pending = pending(run, "disk", "http://origin/disk.img", &data);
        // The link breaks 70,000 bytes in.
        let err = receive(
            &scheduler,
            &archive,
            &pending,
            0,
            attempt(&cvs, &data[..70_000], false),
        )
        .expect_err("a broken stream landed");
        assert!(matches!(err, CommanderError::Aborted(_)), "{err}");
        let resume = resumable(&archive, run, data.len() as u64);
        assert_eq!(
            resume,
            4 * GROUP_LEN as u64,
            "resume from the last whole group"
        );
        let rest = &data[resume as usize..];
        let landed = receive(
            &scheduler,
            &archive,
            &pending,
            resume,
            attempt(&cvs, rest, true),
        )
        .expect("the resumed upload lands");
        assert!(!landed.deduplicated);
        let on_disk = std::fs::read(archive.absolute(&landed.path)).expect("landed file");
        assert_eq!(on_disk, data);
        assert!(landed.path.starts_with("file/disk/") && landed.path.ends_with("/disk.img"));
        let report = archive.verify(&store, |_| {}).expect("verify");
        assert!(report.clean() && report.ok == 1, "{report:?}");
        let run = store.read(|c| state::run(c, run)).expect("run");
        assert_eq!(run.state, "succeeded");
        assert!(
            !archive.quarantined(run.id).1.exists(),
            "outboard left in quarantine"
        );
    }

    #[test]
    fn a_forged_outboard_is_cut_before_any_data_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("state.sqlite")).expect("store"));
        let scheduler = Scheduler::new(store, CommanderConfig::default());
        let archive = Archive::new(dir.path().join("archive"), 3);
        let data = bytes(100_000);
        let mut cvs = outboard(&data);
        cvs[40] ^= 1;
        let pending = pending(9, "t", "http://o/x", &data);
        let err = receive(
            &scheduler,
            &archive,
            &pending,
            0,
            attempt(&cvs, &data, true),
        )
        .expect_err("forged outboard accepted");
        assert!(
            matches!(&err, CommanderError::Cut(m) if m.contains("outboard does not hash")),
            "{err}"
        );
        assert!(
            !archive.quarantined(9).0.exists(),
            "data written for a forged tree"
        );
    }
}
