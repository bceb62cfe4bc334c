//! The landing protocol: a verified upload (or bytes the archive already
//! holds) becomes a version of its target, durably and atomically, and
//! retention prunes only after the new version is durable.
//!
//! Landing, in order, each step durable before the next:
//! 1. the ledger row is written in state `landing` (the intent);
//! 2. the version directory and `.manifest.json` are written (atomically);
//! 3. the quarantined file is fsynced and renamed into place (or, for bytes
//!    the archive already holds, hard-linked from the landed copy), and the
//!    directory is fsynced — on S3, uploaded (multipart, hashed again on
//!    the way, the upload's id in the ledger row first) or copied server-side;
//! 4. the kind derives what it derives from the file in place (a feed's
//!    entries), durable;
//! 5. the row becomes `landed` in the same transaction that completes the
//!    run and records what was derived.
//!
//! A failure after step 3 is undone (the upload goes back to quarantine);
//! a crash anywhere is finished or rolled back by [`crate::recovery`].
//! The steps go through [`crate::backend::Backend`], so they are the same
//! on the filesystem and on S3; with S3 the quarantined file stays until
//! step 5 committed (the store copied it), so an undo only deletes.
//!
//! Archive-wide dedupe uses hard links: a root already landed under another
//! target is linked into the new version's place. Every target's directory
//! stays complete and self-describing (kiwix-serve, rsync and a person with
//! `ls` see real files), the bytes are stored once, and pruning one version
//! never touches another (the link count does the bookkeeping). A filesystem
//! that refuses hard links falls back to landing the uploaded copy. On S3
//! the link is a server-side copy: Garage stores blocks by content hash and
//! counts references, so the copy costs metadata, and each version is again
//! a whole object its retention deletes on its own.

use rusqlite::{params, Connection};

use crate::archive::{crash_point, landed, version_by_id, Archive, NewVersion, Source, Version};
use crate::backend::Expected;
use crate::state::{event, Store};
use crate::{CommanderError, Result};

impl Archive {
    /// Picks the relative path of a new version: the kind says where.
    pub(crate) fn new_version_path(
        &self,
        conn: &Connection,
        v: &NewVersion,
        now: i64,
    ) -> Result<String> {
        crate::kinds::of(&v.kind).version_path(self, conn, v, now)
    }

    /// Lands `v` from `source` (see the module notes for the steps).
    /// `derive` runs once the file is in place, before the ledger says
    /// landed: what the kind derives from the version on disk (a feed's
    /// entry files), made durable. `finish` runs inside the transaction that
    /// marks the version landed, with what `derive` returned (the scheduler
    /// completes the run there, a feed records its entries), so a reader
    /// sees the version, its run's completion and everything derived from
    /// it at once, or none of them. Returns the version.
    pub fn land<D>(
        &self,
        store: &Store,
        v: &NewVersion,
        source: &Source,
        now: i64,
        derive: impl FnOnce(&Version) -> Result<D>,
        finish: impl FnOnce(&Connection, &Version, D) -> Result<()>,
    ) -> Result<Version> {
        if let Some(why) = self.recovery_pending() {
            return Err(CommanderError::StoreUnavailable(format!(
                "{} is not recovered since the commander started, so nothing lands there yet \
                 (the verified upload stays in quarantine and lands once it is): {why}",
                self.location()
            )));
        }
        let (_, outboard) = self.quarantined(v.run_id);
        // 1. The intent.
        let (id, relative) = store.tx(|tx| {
            let relative = self.new_version_path(tx, v, now)?;
            let (source_name, linked_from) = match source {
                Source::Quarantine => ("upload", None),
                Source::Link { version, .. } => ("link", Some(*version)),
            };
            tx.execute(
                "INSERT INTO versions (target, kind, run_id, path, blake3, size, state, agent, cert_sha256,
                   url, etag, last_modified, manifest, signature, source, linked_from, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'landing', ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                params![
                    v.target, v.kind, v.run_id, relative, v.blake3, v.size as i64, v.agent,
                    v.cert_sha256, v.url, v.etag, v.last_modified, v.manifest, v.signature,
                    source_name, linked_from, now
                ],
            )?;
            Ok((tx.last_insert_rowid(), relative))
        })?;
        // Steps 2 and 3 leave nothing behind when they fail: the version
        // directory and the row go, the upload stays in quarantine.
        let placed = self.place(store, v, id, source, &relative);
        if let Err(e) = placed {
            self.undo_landing(store, id, v, &relative, source);
            return Err(e);
        }
        crash_point("after-rename");
        // 4. What the kind derives from the file in place, durable.
        let committed = store
            .read(|c| version_by_id(c, id))
            .and_then(|landing| derive(&landing))
            .and_then(|derived| {
                crash_point("after-derive");
                // 5. The ledger says landed, the run completes and the
                // derived rows are recorded, in one step.
                store.tx(|tx| {
                    tx.execute(
                        "UPDATE versions SET state = 'landed', landed_at = ?2 WHERE id = ?1",
                        params![id, now],
                    )?;
                    tx.execute("DELETE FROM uploads WHERE run_id = ?1", [v.run_id])?;
                    let version = version_by_id(tx, id)?;
                    finish(tx, &version, derived)?;
                    Ok(version)
                })
            });
        let version = match committed {
            Ok(version) => version,
            Err(e) => {
                // Leave nothing behind: the upload goes back to quarantine
                // (a retry resumes from it), the version directory and row go.
                self.undo_landing(store, id, v, &relative, source);
                return Err(e);
            }
        };
        crash_point("after-ledger");
        let _ = std::fs::remove_file(&outboard);
        if !self.backend.moves_upload() {
            let _ = std::fs::remove_file(self.quarantined(v.run_id).0);
        }
        self.prune(store, &v.target, now)?;
        crate::kinds::of(&v.kind).after_landing(self, store)?;
        Ok(version)
    }

    /// Steps 2 and 3 of landing: the version's manifest (and directory),
    /// then its bytes, each durable, through the backend.
    fn place(
        &self,
        store: &Store,
        v: &NewVersion,
        id: i64,
        source: &Source,
        key: &str,
    ) -> Result<()> {
        let (quarantined, _) = self.quarantined(v.run_id);
        // 2. The version directory and its manifest.
        let shared_dir = crate::kinds::of(&v.kind).shared_dir();
        let manifest = self.manifest_json(v, id, source)?;
        self.backend.put_manifest(key, &manifest, shared_dir)?;
        // 3. The bytes.
        crash_point("before-rename");
        let upload = |why: Option<String>| {
            if let Some(why) = why {
                tracing::warn!("{why}; landing the uploaded copy instead");
            }
            let expected = Expected {
                size: v.size,
                root: blake3::Hash::from_hex(&v.blake3)
                    .map_err(|e| CommanderError::Invalid(format!("BLAKE3 root: {e}")))?,
            };
            // A multipart upload's id is in the ledger before its first
            // part, so a recovery can abort what a crash left of it.
            let started = |upload_id: &str| {
                store.tx(|tx| {
                    tx.execute(
                        "UPDATE versions SET multipart = ?2 WHERE id = ?1",
                        params![id, upload_id],
                    )?;
                    Ok(())
                })
            };
            self.backend
                .put_upload(key, &quarantined, expected, &started)
        };
        match source {
            Source::Quarantine => upload(None)?,
            Source::Link { path, .. } => {
                if let Err(e) = self.backend.put_reference(key, path) {
                    if !quarantined.exists() {
                        return Err(e);
                    }
                    upload(Some(format!("cannot reference {path} ({e})")))?;
                }
                if self.backend.moves_upload() {
                    let _ = std::fs::remove_file(&quarantined);
                }
            }
        }
        Ok(())
    }

    /// Takes back a landing that failed after its file was put in place.
    /// The ledger row goes only once the store let go of the version: a
    /// store that cannot be reached now leaves the row `undoing`, for the
    /// sweep (or the next recovery) to remove what is left, then the row.
    fn undo_landing(&self, store: &Store, id: i64, v: &NewVersion, key: &str, source: &Source) {
        let (quarantined, _) = self.quarantined(v.run_id);
        if *source == Source::Quarantine {
            self.backend.take_back(key, &quarantined);
        }
        let multipart = store
            .read(|c| {
                Ok(
                    c.query_row("SELECT multipart FROM versions WHERE id = ?1", [id], |r| {
                        r.get::<_, Option<String>>(0)
                    })?,
                )
            })
            .ok()
            .flatten();
        if let Err(e) = self.remove_version(&v.kind, key, multipart.as_deref()) {
            tracing::warn!(
                path = key,
                "cannot remove a failed landing now (the sweep will): {e}"
            );
            let _ = store.tx(|tx| {
                tx.execute(
                    "UPDATE versions SET state = 'undoing' WHERE id = ?1 AND state = 'landing'",
                    [id],
                )?;
                Ok(())
            });
            return;
        }
        if let Err(e) = crate::kinds::of(&v.kind).rolled_back(self, store, &v.target) {
            tracing::warn!(target = %v.target, "cleaning up after a failed landing: {e}");
        }
        if let Err(e) = store.tx(|tx| {
            tx.execute(
                "DELETE FROM versions WHERE id = ?1 AND state = 'landing'",
                [id],
            )?;
            Ok(())
        }) {
            tracing::warn!(
                id,
                "cannot remove the ledger row of a failed landing (recovery will): {e}"
            );
        }
    }

    fn manifest_json(&self, v: &NewVersion, id: i64, source: &Source) -> Result<Vec<u8>> {
        let agent_manifest: serde_json::Value =
            serde_json::from_slice(&v.manifest).unwrap_or(serde_json::Value::Null);
        let json = serde_json::json!({
            "ark_version": 1,
            "version_id": id,
            "target": v.target,
            "kind": v.kind,
            "url": v.url,
            "original_name": ark_core::path::original_name(&v.url),
            "size": v.size,
            "blake3": v.blake3,
            "verified_by": "commander (every chunk group hashed on arrival)",
            "etag": v.etag,
            "last_modified": v.last_modified,
            "agent": v.agent,
            "agent_cert_sha256": v.cert_sha256,
            "source": match source { Source::Quarantine => "upload".to_string(), Source::Link { path, .. } => format!("link to {path}") },
            "agent_manifest": agent_manifest,
            "agent_manifest_bytes_hex": hex::encode(&v.manifest),
            "agent_signature_hex": hex::encode(&v.signature),
            "signature_algorithm": "ECDSA P-256 SHA-256 (ASN.1 DER) over agent_manifest_bytes",
        });
        serde_json::to_vec_pretty(&json).map_err(|e| CommanderError::Invalid(e.to_string()))
    }

    /// Applies retention: the newest `keep` landed versions of `target`
    /// stay; older ones are marked pruned (committed first), then deleted.
    pub fn prune(&self, store: &Store, target: &str, now: i64) -> Result<usize> {
        let doomed: Vec<Version> = store.tx(|tx| {
            let keep = match crate::state::target_keep(tx, target)? {
                0 => self.keep,
                n => n,
            };
            // Only what the kind retains counts (a feed's media are its
            // history, kept).
            let versions = landed(tx, Some(target))?
                .into_iter()
                .filter(|v| crate::kinds::of(&v.kind).retained());
            let mut doomed: Vec<Version> = versions.skip(keep as usize).collect();
            // A feed's media are kept apart (`--keep-media`, 0 = all); a
            // pruned enclosure stays in feed_media, so it is never fetched
            // again.
            let (_, keep_media) = crate::state::target_media(tx, target)?;
            if keep_media > 0 {
                let media = landed(tx, Some(target))?
                    .into_iter()
                    .filter(|v| v.kind == ark_core::Kind::Media.as_str());
                for v in media.skip(keep_media as usize) {
                    tx.execute(
                        "UPDATE feed_media SET state = 'pruned' WHERE target = ?1 AND url = ?2",
                        params![target, v.url],
                    )?;
                    doomed.push(v);
                }
            }
            for v in &doomed {
                tx.execute(
                    "UPDATE versions SET state = 'pruned', pruned_at = ?2 WHERE id = ?1",
                    params![v.id, now],
                )?;
                event(
                    tx,
                    now,
                    Some(v.run_id),
                    None,
                    "pruned",
                    &format!(
                        "version {} of {target} pruned (retention keeps {keep}{})",
                        v.path,
                        if v.kind == ark_core::Kind::Media.as_str() {
                            " snapshots; --keep-media for media"
                        } else {
                            ""
                        }
                    ),
                )?;
            }
            Ok(doomed)
        })?;
        // Committed as pruned: a store that cannot delete now is retried
        // by recovery (a pruned row whose object is still there).
        for v in &doomed {
            if let Err(e) = self.remove_version(&v.kind, &v.path, None) {
                tracing::warn!(path = %v.path, "cannot delete a pruned version now (the next recovery pass will): {e}");
            }
        }
        Ok(doomed.len())
    }

    /// Finishes taking back the landings the store did not let go of when
    /// they failed (state `undoing`): their objects and uploads removed,
    /// then their rows. Run by the sweep and by recovery; a store still
    /// down leaves them for the next pass. Returns the rows removed.
    pub fn finish_undoing(&self, store: &Store) -> Result<usize> {
        let undoing: Vec<(i64, String, String, Option<String>)> = store.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, kind, path, multipart FROM versions WHERE state = 'undoing'",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })?;
        let mut removed = 0;
        for (id, kind, path, multipart) in undoing {
            // A store still down: the next pass (its deferral is on record).
            if let Err(e) = self.remove_version(&kind, &path, multipart.as_deref()) {
                tracing::debug!(path, "a failed landing is not taken back yet: {e}");
                continue;
            }
            store.tx(|tx| {
                tx.execute(
                    "DELETE FROM versions WHERE id = ?1 AND state = 'undoing'",
                    [id],
                )?;
                Ok(())
            })?;
            tracing::info!(path, "removed a failed landing the store let go of");
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes a version from the store: its object and manifest (and
    /// its directory, unless the kind shares one), and what a crash left
    /// of its multipart upload.
    pub(crate) fn remove_version(
        &self,
        kind: &str,
        relative: &str,
        multipart: Option<&str>,
    ) -> Result<()> {
        self.backend
            .remove(relative, crate::kinds::of(kind).shared_dir(), multipart)
    }
}
