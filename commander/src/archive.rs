//! The archive on the NAS and the landing protocol.
//!
//! Layout (human-readable, one directory per target, versions side by side):
//!
//! ```text
//! archive/
//!   <kind>/<target>/<YYYYMMDDTHHMMSSZ>/<file>                (the bytes)
//!   <kind>/<target>/<YYYYMMDDTHHMMSSZ>/<file>.manifest.json  (provenance)
//!   .ark/quarantine/run-<id>.data, run-<id>.outboard     (uploads in flight)
//!   index.json                                               (every landed version, by `ingest`)
//! ```
//!
//! Quarantine lives on the archive's own filesystem, so landing is a rename.
//! Landing, in order, each step durable before the next:
//! 1. the ledger row is written in state `landing` (the intent);
//! 2. the version directory and `.manifest.json` are written (atomically);
//! 3. the quarantined file is fsynced and renamed into place (or, for bytes
//!    the archive already holds, hard-linked from the landed copy), and the
//!    directory is fsynced;
//! 4. the row becomes `landed` in the same transaction that completes the run.
//!
//! [`Archive::recover`] runs at every start (and in `ingest`): a `landing`
//! row whose file is in place and hashes right is finished; any other is
//! rolled back (its version directory removed, the row deleted), leaving the
//! quarantined upload for the agent to resume. So the archive and the ledger
//! always agree: no file without its row, no landed row without its file.
//!
//! Archive-wide dedupe uses hard links: a root already landed under another
//! target is linked into the new version's place. Every target's directory
//! stays complete and self-describing (kiwix-serve, rsync and a person with
//! `ls` see real files), the bytes are stored once, and pruning one version
//! never touches another (the link count does the bookkeeping). A filesystem
//! that refuses hard links falls back to landing the uploaded copy.

use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::state::{event, Store};
use crate::{CommanderError, Result};

/// Versions a target keeps when neither it nor the config says otherwise.
pub const DEFAULT_KEEP: u32 = 3;

/// Environment variable that makes the commander abort at one step of
/// landing (`before-rename`, `after-rename`, `after-ledger`): the
/// fault-injection hook behind the crash-recovery tests.
pub const FAULT_CRASH_AT: &str = "ARK_FAULT_CRASH_AT";

/// The archive index `ingest` keeps at the archive root: every landed
/// version (kind, target, path, size, BLAKE3, landing time), so a person or
/// a script can read the archive without the commander's database.
pub const INDEX_FILE: &str = "index.json";

/// Version states in the ledger.
pub mod version_state {
    pub const LANDING: &str = "landing";
    pub const LANDED: &str = "landed";
    pub const PRUNED: &str = "pruned";
}

/// Where the bytes of a new version come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A verified upload in quarantine (renamed into place).
    Quarantine,
    /// A landed version holding the same bytes (hard-linked).
    Link { version: i64, path: String },
}

/// What the commander knows about a version it is about to land.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub target: String,
    pub kind: String,
    pub run_id: i64,
    pub agent: String,
    pub cert_sha256: String,
    pub manifest: Vec<u8>,
    pub signature: Vec<u8>,
    pub url: String,
    pub etag: String,
    pub last_modified: String,
    pub size: u64,
    pub blake3: String,
}

impl NewVersion {
    /// What the origin said about these bytes, for the target's next
    /// conditional request: an enclosure's validators are not its feed's.
    pub fn validators(&self) -> Option<(&str, &str)> {
        crate::kinds::of(&self.kind)
            .conditional()
            .then_some((&self.etag, &self.last_modified))
    }
}

/// A version in the ledger.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Version {
    pub id: i64,
    pub target: String,
    pub kind: String,
    pub run_id: i64,
    /// Relative to the archive root.
    pub path: String,
    pub blake3: String,
    pub size: u64,
    pub state: String,
    pub agent: String,
    pub url: String,
    pub etag: String,
    /// "upload" or "link" (archive-wide dedupe).
    pub source: String,
    pub linked_from: Option<i64>,
    pub created_at_ms: i64,
    pub landed_at_ms: Option<i64>,
}

const VERSION_COLUMNS: &str = "id, target, kind, run_id, path, blake3, size, state, agent, url, etag, source, linked_from, created_at, landed_at";

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Version> {
    Ok(Version {
        id: r.get(0)?,
        target: r.get(1)?,
        kind: r.get(2)?,
        run_id: r.get(3)?,
        path: r.get(4)?,
        blake3: r.get(5)?,
        size: r.get::<_, i64>(6)? as u64,
        state: r.get(7)?,
        agent: r.get(8)?,
        url: r.get(9)?,
        etag: r.get(10)?,
        source: r.get(11)?,
        linked_from: r.get(12)?,
        created_at_ms: r.get(13)?,
        landed_at_ms: r.get(14)?,
    })
}

/// One version by id, whatever its state.
fn version_by_id(conn: &Connection, id: i64) -> Result<Version> {
    Ok(conn.query_row(
        &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE id = ?1"),
        [id],
        version_row,
    )?)
}

/// The landed versions, newest first (optionally of one target).
pub fn landed(conn: &Connection, target: Option<&str>) -> Result<Vec<Version>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {VERSION_COLUMNS} FROM versions WHERE state = 'landed' AND (?1 IS NULL OR target = ?1)
         ORDER BY id DESC"
    ))?;
    let rows = stmt.query_map([target], version_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The newest landed version holding `blake3` (any target).
pub fn landed_root(conn: &Connection, blake3: &str, size: u64) -> Result<Option<Version>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE state = 'landed' AND blake3 = ?1 AND size = ?2
                 ORDER BY id DESC LIMIT 1"
            ),
            params![blake3, size as i64],
            version_row,
        )
        .optional()?)
}

pub use ark_core::path::{file_name_from_url, safe_segment};

/// The archive root and its quarantine.
#[derive(Debug, Clone)]
pub struct Archive {
    root: PathBuf,
    /// Versions a target keeps unless it says otherwise.
    keep: u32,
}

/// Where the bare mirror of git repository `url` lives, relative to the
/// archive root: `git/<host>/<path>.git` (the port, if any, joins the host
/// as `host_port`; every segment sanitised, so no URL can escape `git/`).
pub fn git_mirror_path(url: &str) -> String {
    let (stem, _) = git_stem(url);
    format!("{stem}.git")
}

/// `git/<host>/<path>` without `.git`, and the repository's own name.
pub(crate) fn git_stem(url: &str) -> (String, String) {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let after_scheme = path.split("://").nth(1).unwrap_or(path);
    let mut parts = after_scheme.split('/').filter(|p| !p.is_empty());
    let host = safe_segment(parts.next().unwrap_or(""), "host");
    let mut segments: Vec<String> = parts
        .map(|p| safe_segment(&ark_core::path::percent_decode(p), "repo"))
        .collect();
    if segments.is_empty() {
        segments.push("repo".into());
    }
    if let Some(last) = segments.last_mut() {
        if let Some(stem) = last.strip_suffix(".git").filter(|s| !s.is_empty()) {
            *last = stem.to_string();
        }
    }
    let name = segments.last().cloned().unwrap_or_default();
    (
        format!("{}/{host}/{}", ark_core::Kind::Git, segments.join("/")),
        name,
    )
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time in ms (UTC).
pub fn stamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// fsyncs a directory, so a rename or a new entry in it is durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The fault-injection hook: aborts the process at `step` when asked to.
fn crash_point(step: &str) {
    if std::env::var(FAULT_CRASH_AT).is_ok_and(|at| at == step) {
        tracing::error!("fault injection: aborting at landing step {step:?} ({FAULT_CRASH_AT})");
        std::process::abort();
    }
}

/// Hashes a file with BLAKE3 in 1 MiB reads.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, blake3::Hash)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hasher.finalize()))
}

impl Archive {
    pub fn new(root: impl Into<PathBuf>, keep: u32) -> Self {
        Self {
            root: root.into(),
            keep: keep.max(1),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn quarantine(&self) -> PathBuf {
        self.root.join(".ark").join("quarantine")
    }

    /// Quarantined data and outboard of run `run`'s upload.
    pub fn quarantined(&self, run: i64) -> (PathBuf, PathBuf) {
        let q = self.quarantine();
        (
            q.join(format!("run-{run}.data")),
            q.join(format!("run-{run}.outboard")),
        )
    }

    /// Creates the archive and its quarantine.
    pub fn create(&self) -> Result<()> {
        let q = self.quarantine();
        std::fs::create_dir_all(&q).map_err(CommanderError::io("creating quarantine", &q))
    }

    pub fn absolute(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn manifest_path(file: &Path) -> PathBuf {
        let mut name = file.as_os_str().to_owned();
        name.push(".manifest.json");
        PathBuf::from(name)
    }

    /// Picks the relative path of a new version: the kind says where.
    fn new_version_path(&self, conn: &Connection, v: &NewVersion, now: i64) -> Result<String> {
        crate::kinds::of(&v.kind).version_path(self, conn, v, now)
    }

    /// A fresh directory per version, named by time, so no landing ever
    /// overwrites anything: `<versions_dir>/<stamp>[-n]/<file>`, where
    /// `versions_dir` defaults to `<kind>/<target>`.
    pub fn stamped_version_path(
        &self,
        conn: &Connection,
        v: &NewVersion,
        file: &str,
        versions_dir: Option<&str>,
        now: i64,
    ) -> Result<String> {
        let target = safe_segment(&v.target, "target");
        let versions_dir = match versions_dir {
            Some(dir) => dir.to_string(),
            None => format!("{}/{target}", safe_segment(&v.kind, "file")),
        };
        let base = stamp(now);
        for n in 1..1000 {
            let dir = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let relative = format!("{versions_dir}/{dir}/{file}");
            let taken: bool = conn.query_row(
                "SELECT COUNT(*) > 0 FROM versions WHERE path = ?1",
                [&relative],
                |r| r.get(0),
            )?;
            if !taken && !self.root.join(format!("{versions_dir}/{dir}")).exists() {
                return Ok(relative);
            }
        }
        Err(CommanderError::Invalid(format!(
            "no free version directory for {target} at {base}"
        )))
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
        let (quarantined, outboard) = self.quarantined(v.run_id);
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
        let file = self.root.join(&relative);
        let dir = file.parent().unwrap_or(&self.root).to_path_buf();
        // 2. The version directory and its manifest.
        let io = |what| CommanderError::io(what, &file);
        std::fs::create_dir_all(dir.parent().unwrap_or(&self.root))
            .map_err(io("creating target dir for"))?;
        if crate::kinds::of(&v.kind).shared_dir() {
            std::fs::create_dir_all(&dir).map_err(io("creating the shared dir for"))?;
        } else {
            std::fs::create_dir(&dir).map_err(io("creating version dir for"))?;
        }
        sync_dir(dir.parent().unwrap_or(&self.root)).map_err(io("syncing target dir of"))?;
        let manifest = self.manifest_json(v, id, source)?;
        ark_core::write_atomic(&Self::manifest_path(&file), &manifest, 0o644)
            .map_err(io("writing manifest of"))?;
        // 3. The bytes.
        crash_point("before-rename");
        match source {
            Source::Quarantine => {
                std::fs::File::open(&quarantined)
                    .and_then(|f| f.sync_all())
                    .map_err(CommanderError::io("syncing", &quarantined))?;
                std::fs::rename(&quarantined, &file).map_err(io("renaming upload into"))?;
            }
            Source::Link { path, .. } => {
                let from = self.root.join(path);
                if let Err(e) = std::fs::hard_link(&from, &file) {
                    if !quarantined.exists() {
                        return Err(CommanderError::io("hard-linking into", &file)(e));
                    }
                    tracing::warn!(
                        "cannot hard-link {} ({e}); landing the uploaded copy instead",
                        from.display()
                    );
                    std::fs::rename(&quarantined, &file).map_err(io("renaming upload into"))?;
                }
                let _ = std::fs::remove_file(&quarantined);
            }
        }
        sync_dir(&dir).map_err(io("syncing version dir of"))?;
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
                self.undo_landing(store, id, v, &file, source);
                return Err(e);
            }
        };
        crash_point("after-ledger");
        let _ = std::fs::remove_file(&outboard);
        self.prune(store, &v.target, now)?;
        crate::kinds::of(&v.kind).after_landing(self, store)?;
        Ok(version)
    }

    /// Takes back a landing that failed after its file was put in place.
    fn undo_landing(&self, store: &Store, id: i64, v: &NewVersion, file: &Path, source: &Source) {
        let (quarantined, _) = self.quarantined(v.run_id);
        if *source == Source::Quarantine {
            if let Err(e) = std::fs::rename(file, &quarantined) {
                tracing::warn!(file = %file.display(), "cannot move a failed landing back to quarantine: {e}");
            }
        }
        let relative = file
            .strip_prefix(&self.root)
            .unwrap_or(file)
            .to_string_lossy()
            .into_owned();
        self.remove_version(&v.kind, &relative);
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
            let doomed: Vec<Version> = versions.skip(keep as usize).collect();
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
                        "version {} of {target} pruned (retention keeps {keep})",
                        v.path
                    ),
                )?;
            }
            Ok(doomed)
        })?;
        for v in &doomed {
            self.remove_version(&v.kind, &v.path);
        }
        Ok(doomed.len())
    }

    /// Removes a version: its directory (file and manifest), or for media,
    /// which share their feed's media directory, the file and manifest.
    fn remove_version(&self, kind: &str, relative: &str) {
        let file = self.root.join(relative);
        if crate::kinds::of(kind).shared_dir() {
            let _ = std::fs::remove_file(Self::manifest_path(&file));
            let _ = std::fs::remove_file(&file);
            if let Some(dir) = file.parent() {
                let _ = sync_dir(dir);
            }
            return;
        }
        if let Some(dir) = file.parent() {
            if dir.starts_with(&self.root) && dir != self.root {
                let _ = std::fs::remove_dir_all(dir);
                if let Some(parent) = dir.parent() {
                    let _ = sync_dir(parent);
                }
            }
        }
    }

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
        let half: Vec<Version> = store.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE state = 'landing' ORDER BY id"
            ))?;
            let rows = stmt.query_map([], version_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        let (mut finished, mut rolled_back) = (0, 0);
        for v in half {
            let file = self.root.join(&v.path);
            let intact = hash_file(&file)
                .map(|(size, root)| size == v.size && root.to_hex().as_str() == v.blake3)
                .unwrap_or(false)
                && Self::manifest_path(&file).exists();
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
                let _ = std::fs::remove_file(self.quarantined(v.run_id).1);
                tracing::info!(path = %v.path, "finished a half-landed version");
                finished += 1;
            } else {
                self.remove_version(&v.kind, &v.path);
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
                let run = name
                    .strip_prefix("run-")
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|n| n.parse::<i64>().ok());
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
            if self.root.join(&path).exists() {
                self.remove_version(&kind, &path);
            }
        }
        self.write_zim_library(store)?;
        // What each kind finishes after a crash (a mirror whose newest
        // bundle landed just before it, a feed's entries).
        for spec in crate::kinds::all() {
            spec.recover(self, store, now)?;
        }
        Ok((finished, rolled_back))
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
            let run = name
                .strip_prefix("run-")
                .or_else(|| name.strip_prefix("recover-"))
                .and_then(|rest| rest.split('.').next())
                .and_then(|n| n.parse::<i64>().ok());
            let Some(run) = run else { continue };
            let state: Option<String> = store.read(|c| {
                Ok(
                    c.query_row("SELECT state FROM runs WHERE id = ?1", [run], |r| r.get(0))
                        .optional()?,
                )
            })?;
            let active = state.as_deref().is_some_and(|s| {
                s == crate::state::run_state::QUEUED || s == crate::state::run_state::LEASED
            });
            if active {
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
                    "DELETE FROM uploads WHERE run_id = ?1 AND NOT EXISTS \
                     (SELECT 1 FROM runs WHERE id = ?1 AND state IN ('queued', 'leased'))",
                    [run],
                )?;
                Ok(())
            })?;
        }
        Ok(removed)
    }

    /// Applies the newest landed bundle of every git target whose mirror
    /// does not hold its refs yet (a crash between landing and applying).
    pub(crate) fn catch_up_mirrors(&self, store: &Store, now: i64) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        let newest: Vec<Version> = store.read(|c| {
            Ok(landed(c, None)?
                .into_iter()
                .filter(|v| v.kind == ark_core::Kind::Git && seen.insert(v.target.clone()))
                .collect())
        })?;
        for v in newest {
            let (bundle, mirror) = (
                self.root.join(&v.path),
                self.root.join(git_mirror_path(&v.url)),
            );
            let behind = crate::git_check::bundle_refs(&bundle)
                .ok()
                .zip(crate::git_check::landed_refs(&mirror).ok())
                .is_some_and(|(want, have)| want != have);
            if !behind {
                continue;
            }
            let scratch = self
                .quarantine()
                .join(format!("recover-{}.git-check", v.run_id));
            let checked = crate::git_check::check_bundle(&bundle, &mirror, &scratch);
            let applied = match checked {
                Ok(checked) => crate::upload::apply_bundle(
                    store,
                    &crate::upload::BundleOf::landed(&v),
                    &checked,
                    &mirror,
                    now,
                ),
                Err(e) => Err(CommanderError::Invalid(e.to_string())),
            };
            let _ = std::fs::remove_dir_all(&scratch);
            match applied {
                Ok(()) => {
                    tracing::info!(mirror = %mirror.display(), "mirror caught up with its newest bundle")
                }
                Err(e) => {
                    tracing::warn!(mirror = %mirror.display(), "cannot catch the mirror up: {e}")
                }
            }
        }
        Ok(())
    }

    /// Rewrites `zim/library.xml` (atomically) from the ledger: the newest
    /// landed version of every ZIM target, so `kiwix-serve --library
    /// archive/zim/library.xml` serves the archive as it is.
    /// Returns whether the file changed (it is written only then, so an
    /// idle archive keeps its mtimes).
    pub fn write_zim_library(&self, store: &Store) -> Result<bool> {
        let versions = store.read(|c| landed(c, None))?;
        let mut seen = std::collections::HashSet::new();
        let mut books = String::new();
        for v in versions.iter().filter(|v| v.kind == ark_core::Kind::Zim) {
            if !seen.insert(v.target.clone()) {
                continue; // an older version of a target already listed
            }
            let file = self.root.join(&v.path);
            let mut head = [0u8; 24];
            let Ok(()) = std::fs::File::open(&file).and_then(|f| {
                use std::os::unix::fs::FileExt;
                f.read_exact_at(&mut head, 0)
            }) else {
                continue;
            };
            let u = &head[8..24];
            let id = format!(
                "{}-{}-{}-{}-{}",
                hex::encode(&u[0..4]),
                hex::encode(&u[4..6]),
                hex::encode(&u[6..8]),
                hex::encode(&u[8..10]),
                hex::encode(&u[10..16])
            );
            let relative = v.path.strip_prefix("zim/").unwrap_or(&v.path);
            books.push_str(&format!(
                "  <book id=\"{id}\" path=\"{}\" name=\"{}\" title=\"{}\" size=\"{}\"/>\n",
                xml_escape(relative),
                xml_escape(&v.target),
                xml_escape(&v.target),
                v.size.div_ceil(1024)
            ));
        }
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- written by ark-commander from its ledger; do not edit -->\n<library version=\"20110515\">\n{books}</library>\n"
        );
        let path = self.root.join("zim").join("library.xml");
        if books.is_empty() && !path.exists() {
            return Ok(false);
        }
        write_if_changed(&path, xml.as_bytes()).map_err(CommanderError::io("writing", &path))
    }

    /// Rewrites [`INDEX_FILE`] (atomically, and only when its content
    /// changes) from the ledger: every landed version, oldest first.
    /// Returns whether the file changed.
    pub fn write_index(&self, store: &Store) -> Result<bool> {
        let mut versions = store.read(|c| landed(c, None))?;
        versions.reverse();
        let list: Vec<serde_json::Value> = versions
            .iter()
            .map(|v| {
                serde_json::json!({
                    "id": v.id, "kind": v.kind, "target": v.target, "path": v.path,
                    "size": v.size, "blake3": v.blake3, "landed_at_ms": v.landed_at_ms,
                })
            })
            .collect();
        let json = serde_json::json!({
            "ark_index": 1,
            "written_by": "ark-commander ingest, from its ledger; do not edit",
            "versions": list,
        });
        let mut text =
            serde_json::to_vec_pretty(&json).map_err(|e| CommanderError::Invalid(e.to_string()))?;
        text.push(b'\n');
        let path = self.root.join(INDEX_FILE);
        write_if_changed(&path, &text).map_err(CommanderError::io("writing", &path))
    }

    /// Re-hashes every landed version and compares with the ledger and the
    /// manifest beside it; finds files the ledger does not know.
    pub fn verify(&self, store: &Store, each: impl FnMut(&Checked)) -> Result<VerifyReport> {
        self.verify_since(store, None, each)
    }

    /// Like [`Archive::verify`], but only versions landed after `since`
    /// (ms) are re-hashed (and only the mirrors they update are checked);
    /// older ones are checked for presence and size, which costs a `stat`
    /// rather than a read of the whole archive. Strays and missing feed
    /// entries are looked for everywhere either way.
    pub fn verify_since(
        &self,
        store: &Store,
        since: Option<i64>,
        mut each: impl FnMut(&Checked),
    ) -> Result<VerifyReport> {
        use std::collections::{HashMap, HashSet};
        use std::os::unix::fs::MetadataExt;
        let versions = store.read(|c| landed(c, None))?;
        let mut report = VerifyReport::default();
        // Hard-linked versions share an inode: hash it once, report each.
        let mut hashed: HashMap<(u64, u64), std::result::Result<(u64, blake3::Hash), String>> =
            HashMap::new();
        let mut known: HashSet<PathBuf> = HashSet::new();
        // Written by the commander from the ledger, not a landed file.
        known.insert(self.root.join("zim").join("library.xml"));
        known.insert(self.root.join(INDEX_FILE));
        // The entry files of a feed landing right now are being derived,
        // not strays. (The landing file itself shows as a stray until its
        // ledger row says landed, as a half-landed file after a crash does.)
        let landing: Vec<Version> = store.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE state = 'landing'"
            ))?;
            let rows = stmt.query_map([], version_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        let in_flight: Vec<PathBuf> = landing
            .iter()
            .filter(|v| v.kind == ark_core::Kind::Rss)
            .map(|v| {
                self.root
                    .join(crate::feed::feed_dir(&v.target))
                    .join("entries")
            })
            .collect();
        // Derived by the commander from verified snapshots.
        for entry in crate::feed::entry_files(store)? {
            let file = self.root.join(&entry);
            if !file.exists() {
                report.missing.push(entry);
            }
            known.insert(file);
        }
        let recent = |v: &Version| since.is_none_or(|since| v.landed_at_ms.unwrap_or(0) > since);
        for v in versions {
            let file = self.root.join(&v.path);
            known.insert(file.clone());
            known.insert(Self::manifest_path(&file));
            let rehash = recent(&v);
            let problem = match std::fs::metadata(&file) {
                Err(e) => Some(format!("missing: {e}")),
                Ok(meta) if !rehash => (meta.len() != v.size)
                    .then(|| format!("{} bytes on disk, {} in the ledger", meta.len(), v.size)),
                Ok(meta) => {
                    let got = hashed
                        .entry((meta.dev(), meta.ino()))
                        .or_insert_with(|| hash_file(&file).map_err(|e| e.to_string()))
                        .clone();
                    match got {
                        Err(e) => Some(format!("unreadable: {e}")),
                        Ok((size, _)) if size != v.size => {
                            Some(format!("{size} bytes on disk, {} in the ledger", v.size))
                        }
                        Ok((_, root)) if root.to_hex().as_str() != v.blake3 => Some(format!(
                            "BLAKE3 on disk {} differs from the ledger's {}",
                            root.to_hex(),
                            v.blake3
                        )),
                        Ok(_) => manifest_problem(&Self::manifest_path(&file), &v),
                    }
                }
            };
            if rehash {
                report.bytes += v.size;
            }
            let checked = Checked {
                version: v,
                problem,
            };
            each(&checked);
            if checked.problem.is_some() {
                report.bad.push(checked);
            } else if rehash {
                report.ok += 1;
            } else {
                report.sized += 1;
            }
        }
        // Git mirrors: checked whole (every object hashed, every ref
        // connected); their files are the mirror's, not strays.
        let git: Vec<Version> = store
            .read(|c| landed(c, None))?
            .into_iter()
            .filter(|v| v.kind == ark_core::Kind::Git)
            .collect();
        let mirrors: std::collections::BTreeSet<String> =
            git.iter().map(|v| git_mirror_path(&v.url)).collect();
        let to_check: std::collections::BTreeSet<String> = git
            .iter()
            .filter(|v| recent(v))
            .map(|v| git_mirror_path(&v.url))
            .collect();
        for mirror in &to_check {
            let dir = self.root.join(mirror);
            if let Err(e) = crate::git_check::check_repo(&dir) {
                report.bad_mirrors.push(format!("{mirror}: {e}"));
            }
        }
        for stray in walk_files(&self.root) {
            let in_mirror = mirrors.iter().any(|m| stray.starts_with(self.root.join(m)));
            let deriving = in_flight.iter().any(|dir| stray.starts_with(dir));
            if !known.contains(&stray) && !in_mirror && !deriving {
                report.stray.push(
                    stray
                        .strip_prefix(&self.root)
                        .unwrap_or(&stray)
                        .display()
                        .to_string(),
                );
            }
        }
        Ok(report)
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn manifest_problem(path: &Path, v: &Version) -> Option<String> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) => return Some(format!("manifest {}: {e}", path.display())),
    };
    let json: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(json) => json,
        Err(e) => return Some(format!("manifest {} is not JSON: {e}", path.display())),
    };
    (json["blake3"] != v.blake3.as_str() || json["size"] != v.size)
        .then(|| format!("manifest {} disagrees with the ledger", path.display()))
}

/// Writes `bytes` to `path` atomically unless it already holds exactly
/// them; returns whether it wrote. Files the commander derives from its
/// ledger go through here, so re-deriving them leaves an unchanged archive
/// untouched (mtimes included) and rsync or a backup sees no change.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    ark_core::write_atomic(path, bytes, 0o644)?;
    Ok(true)
}

/// Count, bytes and newest landing time of the landed versions (bytes
/// counted once per version, hard links included, as `archive ls` does).
pub fn totals(conn: &Connection) -> Result<(u64, u64, Option<i64>)> {
    Ok(conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), MAX(landed_at) FROM versions WHERE state = 'landed'",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get(2)?)),
    )?)
}

/// Every file under `root` (sorted), outside `root/.ark`.
pub fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if dir == root && entry.file_name() == ".ark" {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// One version as `archive verify` found it.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub version: Version,
    /// None when the bytes, the ledger and the manifest agree.
    pub problem: Option<String>,
}

/// What `archive verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Versions re-hashed and found to match.
    pub ok: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Versions landed before the `since` of [`Archive::verify_since`],
    /// found present with the right size (not re-hashed).
    pub sized: usize,
    pub bad: Vec<Checked>,
    /// Files under the archive that no landed version accounts for.
    pub stray: Vec<String>,
    /// Feed entries the ledger knows whose file is gone.
    pub missing: Vec<String>,
    /// Git mirrors that fail their check, with the reason.
    pub bad_mirrors: Vec<String>,
}

impl VerifyReport {
    pub fn clean(&self) -> bool {
        self.bad.is_empty()
            && self.stray.is_empty()
            && self.missing.is_empty()
            && self.bad_mirrors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_origins_cannot_escape_their_directory() {
        for (url, want) in [
            ("http://h/a/b/wiki.zim", "wiki.zim"),
            ("http://h/a/b/wiki.zim?x=1#f", "wiki.zim"),
            ("http://h/", "download"),
            ("http://h", "download"),
            ("http://h/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "_._etc_passwd"),
            ("http://h/..", "download"),
            ("http://h/.hidden", "hidden"),
            ("http://h/a%00b", "a_b"),
            ("http://h/caf%C3%A9.txt", "café.txt"),
            ("http://h/%é%", "_é_"),
        ] {
            let got = file_name_from_url(url);
            assert_eq!(got, want, "{url}");
            assert!(
                !got.contains('/')
                    && !got.contains('\0')
                    && !got.contains("..")
                    && !got.starts_with('.')
            );
        }
    }

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(stamp(0), "19700101T000000Z");
        // 2026-11-22T05:30:41Z
        assert_eq!(stamp(1_795_325_441_000), "20261122T053041Z");
        assert_eq!(stamp(951_782_400_000), "20000229T000000Z");
    }
}
