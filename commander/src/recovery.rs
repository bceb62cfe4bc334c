//! Recovery: what a crash left half-done is finished or rolled back, at
//! every start and in `ingest`, so the archive and the ledger always agree —
//! no file without its row, no landed row without its file — and what the
//! quarantine holds for runs that have ended is reclaimed.
//!
//! A `landing` row whose file is in place and hashes right is finished (the
//! kind derives again, the row is recorded); any other is rolled back (its
//! version directory removed, the row deleted), leaving the quarantined
//! upload for the agent to resume. Each kind then finishes what a crash
//! interrupted after the ledger committed (see `KindSpec::recover`).

use rusqlite::{params, Connection};

use crate::archive::{Archive, Version};
use crate::backend::manifest_key;
use crate::state::{event, run_state, Store};
use crate::Result;

impl Archive {
    /// Finishes or rolls back every half-landed version, and finishes
    /// interrupted prunes. `finish` completes a run whose version is
    /// finished here. Returns (finished, rolled back).
    pub fn recover<D>(
        &self,
        store: &Store,
        now: i64,
        derive: impl Fn(&Version) -> Result<D>,
        finish: impl Fn(&Connection, &Version, D) -> Result<()>,
    ) -> Result<(usize, usize)> {
        self.create()?;
        // A store that does not answer is said at once, before anything
        // else reads it (the caller waits for it).
        self.backend.ping()?;
        self.finish_undoing(store)?;
        let half = store.read(crate::archive::landing)?;
        let (mut finished, mut rolled_back) = (0, 0);
        for v in half {
            let intact = self
                .backend
                .hash(&v.path)
                .map(|(size, root)| size == v.size && root.to_hex().as_str() == v.blake3)
                .unwrap_or(false)
                && self.backend.size(&manifest_key(&v.path)).is_ok();
            let derived = if intact {
                match derive(&v) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(path = %v.path, "cannot derive from a half-landed version yet (left for the next pass): {e}");
                        continue;
                    }
                }
            } else {
                None
            };
            if let Some(derived) = derived {
                store.tx(|tx| {
                    tx.execute(
                        "UPDATE versions SET state = 'landed', landed_at = ?2 WHERE id = ?1",
                        params![v.id, now],
                    )?;
                    tx.execute("DELETE FROM uploads WHERE run_id = ?1", [v.run_id])?;
                    event(
                        tx,
                        now,
                        Some(v.run_id),
                        None,
                        "landing_recovered",
                        &format!(
                            "finished landing {} after a restart (file in place, hash checked)",
                            v.path
                        ),
                    )?;
                    finish(tx, &v, derived)
                })?;
                let (data, outboard) = self.quarantined(v.run_id);
                let _ = std::fs::remove_file(outboard);
                if !self.backend.moves_upload() {
                    let _ = std::fs::remove_file(data);
                }
                tracing::info!(path = %v.path, "finished a half-landed version");
                finished += 1;
            } else {
                let multipart: Option<String> = store.read(|c| {
                    Ok(c.query_row(
                        "SELECT multipart FROM versions WHERE id = ?1",
                        [v.id],
                        |r| r.get(0),
                    )?)
                })?;
                // The row goes only once the store let go of the version:
                // no row may point at an object that is not there, and no
                // object may outlive its row.
                self.remove_version(&v.kind, &v.path, multipart.as_deref())?;
                crate::kinds::of(&v.kind).rolled_back(self, store, &v.target)?;
                store.tx(|tx| {
                    tx.execute("DELETE FROM versions WHERE id = ?1", [v.id])?;
                    event(
                        tx,
                        now,
                        Some(v.run_id),
                        None,
                        "landing_rolled_back",
                        &format!(
                            "rolled back half-landed {} after a restart; the upload stays in quarantine to resume",
                            v.path
                        ),
                    )
                })?;
                tracing::warn!(path = %v.path, "rolled back a half-landed version");
                rolled_back += 1;
            }
        }
        self.clean_after_crash(store, now)?;
        Ok((finished, rolled_back))
    }

    /// What a crash leaves besides half-landed versions: quarantined files
    /// no upload claims, prunes committed but not carried out, and what each
    /// kind builds from the ledger or finishes after the ledger committed.
    fn clean_after_crash(&self, store: &Store, now: i64) -> Result<()> {
        // Quarantined files no upload claims any more (landed just before a
        // crash, or from a run that ended otherwise).
        let claimed: std::collections::HashSet<i64> = store.read(|c| {
            let mut stmt = c.prepare("SELECT run_id FROM uploads")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })?;
        if let Ok(entries) = std::fs::read_dir(self.quarantine()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let run = crate::archive::quarantine_run(&name);
                if run.is_some_and(|run| !claimed.contains(&run)) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        // Prunes committed but not carried out.
        let pruned: Vec<(String, String)> = store.read(|c| {
            let mut stmt = c.prepare("SELECT kind, path FROM versions WHERE state = 'pruned'")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        for (kind, path) in pruned {
            if self.backend.exists(&path)? || self.backend.exists(&manifest_key(&path))? {
                self.remove_version(&kind, &path, None)?;
            }
        }
        if self.backend.local_root().is_none() {
            self.remove_unledgered(store, now)?;
        }
        for spec in crate::kinds::all() {
            spec.after_landing(self, store)?;
        }
        // What each kind finishes after a crash (a mirror whose newest
        // bundle landed just before it, a feed's entries).
        for spec in crate::kinds::all() {
            spec.recover(self, store, now)?;
        }
        Ok(())
    }

    /// On an object store: removes every landing the ledger has no row for
    /// (a version key beside an Ark manifest), so no object outlives its
    /// row. Such a landing is newer than the ledger: a commander restored
    /// from a replica a moment behind the store (its run lands again), or
    /// an undo that could not reach the store. Objects without an Ark
    /// manifest are not Ark's: `archive verify` reports them, nothing
    /// deletes them.
    fn remove_unledgered(&self, store: &Store, now: i64) -> Result<usize> {
        let stored = self.backend.list()?;
        let keys: std::collections::HashSet<&str> = stored.iter().map(|s| s.key.as_str()).collect();
        let mut removed = 0;
        for manifest in stored.iter().filter(|s| s.key.ends_with(".manifest.json")) {
            let key = manifest.key.trim_end_matches(".manifest.json");
            let known: bool = store.read(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) > 0 FROM versions WHERE path = ?1",
                    [key],
                    |r| r.get(0),
                )?)
            })?;
            if known {
                continue;
            }
            let ours = self
                .backend
                .read(&manifest.key)
                .ok()
                .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
                .is_some_and(|json| json.get("ark_version").is_some());
            if !ours {
                continue;
            }
            self.backend.remove(key, true, None)?;
            store.tx(|tx| {
                event(
                    tx,
                    now,
                    None,
                    None,
                    "landing_unledgered",
                    &format!(
                        "removed {} from the store: landed after the ledger's last record of it \
                         (a standby restored from a replica, or a landing undone while the store \
                         was down){}",
                        self.locate(key),
                        if keys.contains(key) {
                            ""
                        } else {
                            " (its manifest only)"
                        }
                    ),
                )
            })?;
            tracing::warn!(key, "removed a landing the ledger has no row for");
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes what the quarantine holds for runs that will not land it: a
    /// run that ended (failed, succeeded, unchanged) or no longer exists.
    /// Queued and leased runs keep theirs (a retry resumes from it). Run by
    /// the commander's sweep, so a failed or abandoned upload never keeps the
    /// disk full. Returns the entries removed.
    pub fn reclaim_quarantine(&self, store: &Store) -> Result<usize> {
        let Ok(entries) = std::fs::read_dir(self.quarantine()) else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(run) = crate::archive::quarantine_run(&name) else {
                continue;
            };
            if store.read(|c| crate::state::run_active(c, run))? {
                continue;
            }
            let path = entry.path();
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if gone.is_ok() {
                tracing::info!(run, file = %name, "reclaimed the quarantine of a run that has ended");
                removed += 1;
            }
            store.tx(|tx| {
                tx.execute(
                    &format!(
                        "DELETE FROM uploads WHERE run_id = ?1 AND NOT EXISTS \
                         (SELECT 1 FROM runs WHERE id = ?1 AND state IN {})",
                        run_state::ACTIVE_SQL
                    ),
                    [run],
                )?;
                Ok(())
            })?;
        }
        Ok(removed)
    }
}
