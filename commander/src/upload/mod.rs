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

mod have;
pub mod quorum;
mod receive;
pub mod spot;

pub use have::have;
pub use receive::{begin, receive, Piece};

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

/// The target's latest version when it already holds exactly `v`'s bytes
/// and the kind counts that as unchanged.
fn latest_with(conn: &Connection, v: &NewVersion) -> Result<Option<Version>> {
    if !crate::kinds::of(&v.kind).unchanged_when_latest() {
        return Ok(None);
    }
    Ok(archive::landed(conn, Some(&v.target))?
        .into_iter()
        .find(|l| l.kind == v.kind)
        .filter(|l| l.blake3 == v.blake3 && l.size == v.size))
}

/// What else a landing records in its ledger step (a quorum group's close).
type Also<'a> = &'a dyn Fn(&Connection, &Version) -> Result<()>;

/// Lands a verified version and completes its run in the same step, with
/// the agent that harvested it recorded as its voucher (and `also`).
fn land(
    scheduler: &Scheduler,
    archive: &Archive,
    v: &NewVersion,
    source: Source,
    also: Also<'_>,
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
            // Nothing a revoked agent sent lands, however far it got.
            if !crate::state::still_trusted(tx, &v.agent, &v.cert_sha256)? {
                return Err(CommanderError::StaleLease(format!(
                    "agent {} was revoked: what it sent does not land; drop the job",
                    v.agent
                )));
            }
            record_derived(tx, version, derived, now)?;
            tx.execute(
                "INSERT OR IGNORE INTO vouchers (version_id, agent, cert_sha256, run_id, role, manifest, signature)
                 VALUES (?1, ?2, ?3, ?4, 'harvested', ?5, ?6)",
                params![version.id, v.agent, v.cert_sha256, v.run_id, v.manifest, v.signature],
            )?;
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
            )?;
            also(tx, version)
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

/// The bytes are what the agent claimed; are they also what the origin
/// published (recomputed here, on the commander's own copy)? And a release
/// the commander resolved itself (a Kiwix book's) must have the SHA-256 the
/// origin published for it: the commander's word, not the agent's, so no
/// agent can land another file under the release's name. Each algorithm
/// reads the file once, whichever check asks for it. Some(reason) when a
/// digest differs. (What the kind promises is
/// [`crate::kinds::KindSpec::check`].)
fn content_problem(
    scheduler: &Scheduler,
    v: &NewVersion,
    data: &std::path::Path,
) -> Result<Option<String>> {
    let mut hashed: std::collections::HashMap<String, String> = Default::default();
    let mut ours = |algorithm: &str| -> Result<String> {
        if let Some(hex) = hashed.get(algorithm) {
            return Ok(hex.clone());
        }
        let hex = ark_core::digest::digest_file(data, algorithm)
            .map_err(CommanderError::io("hashing", data.to_path_buf()))?;
        hashed.insert(algorithm.to_string(), hex.clone());
        Ok(hex)
    };
    let claimed: Manifest = serde_json::from_slice(&v.manifest).unwrap_or_default();
    for (algorithm, hex) in &claimed.digests {
        let ours = ours(algorithm)?;
        if &ours != hex {
            return Ok(Some(format!(
                "{} of the upload is {ours}, the agent reported {hex} from {}",
                algorithm.to_uppercase(),
                claimed.digest_source
            )));
        }
    }
    let (expected, source): (String, String) = scheduler.store.read(|c| {
        Ok(c.query_row(
            "SELECT expected_sha256, expected_source FROM runs WHERE id = ?1",
            [v.run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    })?;
    if expected.is_empty() {
        return Ok(None);
    }
    let ours = ours("sha256")?;
    Ok((ours != expected).then(|| {
        format!(
            "the upload's SHA-256 is {ours}, the expected SHA-256 is {expected} ({source}): \
             not those bytes; nothing landed and what landed before stays current"
        )
    }))
}

/// The commander's own check refused a complete upload: nothing lands, the
/// quarantined copy goes, the run fails with `reason`, and the agent is told
/// to drop the job.
pub(super) fn refuse(
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
    record_upload_event(scheduler, v, "upload_cut", &message, true);
    CommanderError::Cut(message)
}

/// Records `kind` for the upload's run (and, with `as_reason`, makes the
/// message the run's reason); a failure to record is not the upload's.
fn record_upload_event(
    scheduler: &Scheduler,
    v: &NewVersion,
    kind: &str,
    message: &str,
    as_reason: bool,
) {
    let now = ark_core::unix_ms();
    let _ = scheduler.store.tx(|tx| {
        event(tx, now, Some(v.run_id), Some(&v.agent), kind, message)?;
        if as_reason {
            tx.execute(
                "UPDATE runs SET reason = ?2 WHERE id = ?1",
                params![v.run_id, message],
            )?;
        }
        Ok(())
    });
}

/// Records an upload whose stream broke (the agent vanished, or the link
/// did) and returns the error: nothing is wrong with its bytes, the
/// verified ones are kept for the resume.
fn interrupted(scheduler: &Scheduler, pending: &Pending, at: u64, kept: u64) -> CommanderError {
    let v = &pending.version;
    let message = format!(
        "upload from {} of run {} interrupted at byte {at} of {}, {kept} verified bytes kept for the resume",
        v.agent, v.run_id, v.size
    );
    tracing::info!(run = v.run_id, "{message}");
    record_upload_event(scheduler, v, "upload_interrupted", &message, false);
    CommanderError::Aborted(message)
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
            let _ = tx.try_send(Piece::Part(upload_chunk::Part::Outboard(
                bytes::Bytes::copy_from_slice(part),
            )));
        }
        for part in data.chunks(30_000) {
            let _ = tx.try_send(Piece::Part(upload_chunk::Part::Data(
                bytes::Bytes::copy_from_slice(part),
            )));
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
                state::enroll_agent(tx, "pi", "fp", 1)?;
                state::add_target(tx, &target, 1).map(drop)
            })
            .expect("target");
        let run = scheduler.run_now("disk", 1).expect("run").id;
        let data = bytes(200_000);
        let cvs = outboard(&data);
        let pending = pending(run, "disk", "http://origin/disk.img", &data);
        // The link breaks 70,000 bytes in: once as a broken stream, once as
        // one that ends like a finished one (how tonic reports a request
        // stream whose connection its keepalive closed). Neither is a cut.
        for ends in [false, true] {
            let err = receive(
                &scheduler,
                &archive,
                &pending,
                0,
                attempt(&cvs, &data[..70_000], ends),
            )
            .expect_err("a broken stream landed");
            assert!(matches!(err, CommanderError::Aborted(_)), "{err}");
        }
        let cuts: i64 = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM events WHERE kind = 'upload_cut'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .expect("events");
        assert_eq!(cuts, 0, "an interrupted upload was recorded as a cut");
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
