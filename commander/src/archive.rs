//! The archive on the NAS: its layout and the ledger's versions.
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
//! With an S3 archive (`archive = "s3://…"`), the versions and their
//! manifests live in the object store under the same relative keys, and
//! the rest of this layout (quarantine, git mirrors, feed entries,
//! `zim/library.xml`, `index.json`) stays on the commander's local disk:
//! see [`crate::backend`].
//! This module is the layout and the ledger's view of versions, and nothing
//! that depends on a kind: the landing protocol is [`crate::landing`],
//! recovery [`crate::recovery`], `archive verify` [`crate::verify`], and what
//! is written from the ledger for readers [`crate::library`].

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::backend::{Backend, FsBackend};
use crate::{CommanderError, Result};

pub use crate::config::DEFAULT_KEEP;

/// Environment variable that makes the commander abort at one step of
/// landing (`before-rename`, on S3 `before-complete`, `after-rename`,
/// `after-derive`, `after-ledger`; `migrate-copied` in `archive migrate`): the
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
    /// A landing that failed and could not be taken back from the store
    /// (it did not answer): its objects are removed, then the row, by the
    /// sweep or the next recovery. Never in progress, never landed.
    pub const UNDOING: &str = "undoing";
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

pub(crate) const VERSION_COLUMNS: &str = "id, target, kind, run_id, path, blake3, size, state, agent, url, etag, source, linked_from, created_at, landed_at";

pub(crate) fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Version> {
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
pub(crate) fn version_by_id(conn: &Connection, id: i64) -> Result<Version> {
    Ok(conn.query_row(
        &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE id = ?1"),
        [id],
        version_row,
    )?)
}

/// The run a quarantine entry belongs to: `run-<id>.data`, `.outboard`,
/// `.git-check`, or a recovery's `recover-<id>.git-check`.
pub fn quarantine_run(name: &str) -> Option<i64> {
    name.strip_prefix("run-")
        .or_else(|| name.strip_prefix("recover-"))
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse().ok())
}

/// The versions half-way through landing (state `landing`), oldest first.
pub fn landing(conn: &Connection) -> Result<Vec<Version>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {VERSION_COLUMNS} FROM versions WHERE state = 'landing' ORDER BY id"
    ))?;
    let rows = stmt.query_map([], version_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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

/// The archive: where its versions are stored, and its local root.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The local side: quarantine, git mirrors, feed entries, the Kiwix
    /// library and the index (and, with the filesystem backend, the
    /// versions themselves).
    pub(crate) root: PathBuf,
    /// Versions a target keeps unless it says otherwise.
    pub(crate) keep: u32,
    /// Where the versions' bytes and manifests are stored.
    pub(crate) backend: std::sync::Arc<dyn Backend>,
    /// Where an object store's bucket is mounted, for kiwix-serve (the
    /// Kiwix library points there); None: the ZIMs are files beside it.
    pub(crate) zim_mount: Option<PathBuf>,
    /// Set while the store has not answered the start-up recovery (the
    /// NAS booting slower than the logic node): landings are deferred
    /// until the sweep's retry of the recovery succeeds; the store's last
    /// answer says why. Shared by clones.
    pub(crate) recovery_pending: std::sync::Arc<std::sync::Mutex<Option<String>>>,
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

/// The fault-injection hook: aborts the process at `step` when asked to.
pub(crate) fn crash_point(step: &str) {
    if std::env::var(FAULT_CRASH_AT).is_ok_and(|at| at == step) {
        tracing::error!("fault injection: aborting at landing step {step:?} ({FAULT_CRASH_AT})");
        std::process::abort();
    }
}

/// Hashes a file with BLAKE3: (size, root).
pub fn hash_file(path: &Path) -> std::io::Result<(u64, blake3::Hash)> {
    // Mapped, not read: hashing straight from the page cache saves a copy
    // of every byte (a fifth of verify's time). Landed files are written
    // once and never truncated while the commander runs.
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap(path)?;
    Ok((hasher.count(), hasher.finalize()))
}

impl Archive {
    /// An archive on the filesystem at `root` (the default backend).
    pub fn new(root: impl Into<PathBuf>, keep: u32) -> Self {
        let root = root.into();
        let backend = std::sync::Arc::new(FsBackend::new(root.clone()));
        Self::with_backend(root, keep, backend)
    }

    /// An archive whose versions live in `backend`, its local side at `root`.
    pub fn with_backend(
        root: impl Into<PathBuf>,
        keep: u32,
        backend: std::sync::Arc<dyn Backend>,
    ) -> Self {
        Self {
            root: root.into(),
            keep: keep.max(1),
            backend,
            zim_mount: None,
            recovery_pending: Default::default(),
        }
    }

    /// The archive `config` describes, for a commander with data dir `data`.
    pub fn open(config: &crate::config::CommanderConfig, data: &Path) -> Result<Self> {
        let root = config.archive_dir(data);
        if !config.archive_in_store() {
            return Ok(Self::new(root, config.keep));
        }
        let backend = crate::backend::s3::S3Backend::open(&config.archive, &config.s3, data)?;
        let mut archive = Self::with_backend(root, config.keep, std::sync::Arc::new(backend));
        if !config.s3.mount.is_empty() {
            archive.zim_mount = Some(PathBuf::from(&config.s3.mount));
        }
        Ok(archive)
    }

    /// The local root (see [`Archive::root`]'s field notes).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the versions are stored.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Why landings wait for a recovery the store has not answered yet;
    /// None when they do not.
    pub fn recovery_pending(&self) -> Option<String> {
        self.recovery_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets (Some(why)) or clears (None) the pending recovery.
    pub fn set_recovery_pending(&self, why: Option<String>) {
        *self
            .recovery_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Where the archive is, for people: its directory or its `s3://` URL.
    pub fn location(&self) -> String {
        match self.backend.local_root() {
            Some(root) => root.display().to_string(),
            None => self.backend.locate(""),
        }
    }

    /// Where a version's file is, for people: a path or an `s3://` URL.
    pub fn locate(&self, relative: &str) -> String {
        self.backend.locate(relative)
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

    pub(crate) fn manifest_path(file: &Path) -> PathBuf {
        let mut name = file.as_os_str().to_owned();
        name.push(".manifest.json");
        PathBuf::from(name)
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
            if !taken && !self.backend.exists(&format!("{versions_dir}/{dir}"))? {
                return Ok(relative);
            }
        }
        Err(CommanderError::Invalid(format!(
            "no free version directory for {target} at {base}"
        )))
    }
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
