//! `archive migrate --to s3://…`: a filesystem archive copied into an
//! object store, every object read back and hashed there after the copy.
//!
//! Resumable and idempotent: each version's progress is a row of the
//! `migrated` table (`copying` with its multipart upload's id, then
//! `verified`), so a run that was stopped resumes with the first version
//! not verified — aborting the upload the stop left — and a second run
//! over a finished migration copies nothing. An object already in the
//! store (copied just before a crash) is hashed there and kept when it is
//! the version's bytes; a different object under a version's key is never
//! overwritten: it is reported, and the migration stops.
//!
//! Versions holding the same bytes (hard links) are copied once; the
//! others are server-side copies. The ledger is not changed: once the
//! migration is verified, pointing `archive` at the store is the switch.

use rusqlite::params;
use serde::Serialize;

use crate::archive::{landed, Archive, Version};
use crate::backend::{manifest_key, Backend, Expected};
use crate::state::Store;
use crate::{CommanderError, Result};

/// What a migration did.
#[derive(Debug, Default, Serialize)]
pub struct MigrateReport {
    pub dest: String,
    /// Versions copied (or found in the store) and verified by this run.
    pub copied: usize,
    /// Versions verified by an earlier run: skipped.
    pub already: usize,
    /// Bytes sent (server-side copies not counted).
    pub bytes: u64,
    /// Versions whose source file does not hash to its ledger entry: not
    /// copied (`archive verify` on the source says more).
    pub damaged: Vec<String>,
}

/// Copies every landed version of `from` (and its manifest) into `to`,
/// verifying each there. `each` is told every version as it is done.
pub fn migrate(
    store: &Store,
    from: &Archive,
    to: &dyn Backend,
    mut each: impl FnMut(&Version, u64),
) -> Result<MigrateReport> {
    let dest = to.locate("");
    let mut report = MigrateReport {
        dest: dest.clone(),
        ..Default::default()
    };
    let mut versions = store.read(|c| landed(c, None))?;
    versions.reverse(); // oldest first: the order they landed in
                        // The bytes of a root already in the store: copied server-side.
    let mut in_store: std::collections::HashMap<String, String> = Default::default();
    for v in versions {
        let state: Option<(String, Option<String>)> = store.read(|c| {
            Ok(rusqlite::OptionalExtension::optional(c.query_row(
                "SELECT state, multipart FROM migrated WHERE dest = ?1 AND path = ?2 AND blake3 = ?3",
                params![dest, v.path, v.blake3],
                |r| Ok((r.get(0)?, r.get(1)?)),
            ))?)
        })?;
        if let Some(("verified", _)) = state.as_ref().map(|(s, m)| (s.as_str(), m)) {
            in_store.entry(v.blake3.clone()).or_insert(v.path.clone());
            report.already += 1;
            each(&v, v.size);
            continue;
        }
        if let Some((_, Some(multipart))) = &state {
            // A stop in the middle of an upload: nothing of it is visible;
            // its parts go.
            to.remove_upload(&v.path, multipart)?;
        }
        match copy_version(store, from, to, &dest, &v, in_store.get(&v.blake3)) {
            Ok(sent) => report.bytes += sent,
            Err(CommanderError::Cut(why)) => {
                report.damaged.push(format!("{}: {why}", v.path));
                continue;
            }
            Err(e) => return Err(e),
        }
        crate::archive::crash_point("migrate-copied");
        store.tx(|tx| {
            tx.execute(
                "INSERT INTO migrated (dest, path, blake3, state, multipart, at) VALUES (?1, ?2, ?3, 'verified', NULL, ?4)
                 ON CONFLICT (dest, path) DO UPDATE SET blake3 = ?3, state = 'verified', multipart = NULL, at = ?4",
                params![dest, v.path, v.blake3, ark_core::unix_ms()],
            )?;
            Ok(())
        })?;
        in_store.entry(v.blake3.clone()).or_insert(v.path.clone());
        report.copied += 1;
        each(&v, v.size);
    }
    Ok(report)
}

/// Copies one version and its manifest, then reads the object back from
/// the store and hashes it. Returns the bytes sent. `Cut` when the source
/// is damaged (reported, not copied).
fn copy_version(
    store: &Store,
    from: &Archive,
    to: &dyn Backend,
    dest: &str,
    v: &Version,
    same_bytes: Option<&String>,
) -> Result<u64> {
    let expected = Expected {
        size: v.size,
        root: blake3::Hash::from_hex(&v.blake3)
            .map_err(|e| CommanderError::Invalid(format!("{}: BLAKE3 root: {e}", v.path)))?,
    };
    let matches = |got: (u64, blake3::Hash)| got == (expected.size, expected.root);
    let mut sent = 0;
    // An object already there (copied just before a stop) is kept when it
    // is the version's bytes; another is never overwritten.
    let present = match to.hash(&v.path) {
        Ok(got) if matches(got) => true,
        Ok((size, root)) => {
            return Err(CommanderError::AlreadyExists(format!(
                "{} holds other bytes ({size} bytes, BLAKE3 {root}) than version {} of {}: \
                 not overwritten; remove it from the store or migrate under another prefix",
                to.locate(&v.path),
                v.id,
                v.target
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(CommanderError::Aborted(format!(
                "reading {}: {e}",
                to.locate(&v.path)
            )))
        }
    };
    if !present {
        let file = from.root().join(&v.path);
        match same_bytes {
            Some(key) if to.put_reference(&v.path, key).is_ok() => {}
            _ => {
                let started = |id: &str| {
                    store.tx(|tx| {
                        tx.execute(
                            "INSERT INTO migrated (dest, path, blake3, state, multipart, at) VALUES (?1, ?2, ?3, 'copying', ?4, ?5)
                             ON CONFLICT (dest, path) DO UPDATE SET blake3 = ?3, state = 'copying', multipart = ?4, at = ?5",
                            params![dest, v.path, v.blake3, id, ark_core::unix_ms()],
                        )?;
                        Ok(())
                    })
                };
                match to.put_upload(&v.path, &file, expected, &started) {
                    Ok(()) => sent = v.size,
                    // The source does not hash to its ledger entry.
                    Err(CommanderError::Aborted(why)) if why.contains("changed after") => {
                        return Err(CommanderError::Cut(format!(
                            "the archived file does not match the ledger ({why}); run `archive verify`"
                        )))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    // Verified after the copy: read back from the store, every byte.
    let got = to.hash(&v.path).map_err(|e| {
        CommanderError::Aborted(format!("reading back {}: {e}", to.locate(&v.path)))
    })?;
    if !matches(got) {
        return Err(CommanderError::Aborted(format!(
            "{} read back as {} bytes hashing to {}, not the ledger's {} bytes {}: the store \
             damaged it; run the migration again",
            to.locate(&v.path),
            got.0,
            got.1,
            v.size,
            v.blake3
        )));
    }
    // The manifest beside it, byte for byte.
    let manifest = std::fs::read(from.root().join(manifest_key(&v.path))).map_err(
        CommanderError::io("reading manifest of", from.root().join(&v.path)),
    )?;
    match to.read(&manifest_key(&v.path)) {
        Ok(there) if there == manifest => {}
        Ok(_) => {
            return Err(CommanderError::AlreadyExists(format!(
                "{} holds another manifest: not overwritten",
                to.locate(&manifest_key(&v.path))
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            to.put_manifest(&v.path, &manifest, false)?
        }
        Err(e) => {
            return Err(CommanderError::Aborted(format!(
                "reading {}: {e}",
                to.locate(&manifest_key(&v.path))
            )))
        }
    }
    Ok(sent)
}
