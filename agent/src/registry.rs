//! The agent's local dedupe registry: one SQLite file (`registry.sqlite` in
//! the data dir) remembering every body this agent harvested — BLAKE3 root,
//! size, target, URL, validators, when — and whether the commander landed it.
//!
//! A fresh download whose root is already here and was landed is a duplicate:
//! the agent says so when it asks the commander `Have`, and the commander
//! (which knows whether the archive still holds it) has the last word. The
//! registry outlives the staging copies: after a landing the bytes go, the
//! hash stays.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::{AgentError, Result};

/// File name inside the agent's data dir.
pub const FILE: &str = "registry.sqlite";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS harvests (
    blake3        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    target        TEXT NOT NULL,
    url           TEXT NOT NULL,
    etag          TEXT NOT NULL DEFAULT '',
    last_modified TEXT NOT NULL DEFAULT '',
    run_id        INTEGER NOT NULL,
    at            INTEGER NOT NULL,
    landed_path   TEXT,
    PRIMARY KEY (blake3, target, run_id)
);
CREATE INDEX IF NOT EXISTS harvests_by_root ON harvests(blake3);
"#;

/// One harvested body as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Harvest {
    pub blake3: String,
    pub size: u64,
    pub target: String,
    pub url: String,
    pub etag: String,
    pub last_modified: String,
    pub run_id: i64,
    pub at_ms: i64,
    /// Where the commander landed it, once it did.
    pub landed_path: Option<String>,
}

/// The registry; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Registry {
    /// None until it could be opened (see [`Registry::open_when_room`]).
    conn: Mutex<Option<Connection>>,
    /// The database file, named in its errors (a full disk says which).
    path: PathBuf,
}

/// A registry error naming the file; one caused by a full disk says so
/// (SQLite rolled the write back: the registry is as it was, and the same
/// write succeeds once there is room).
fn db(path: &Path) -> impl Fn(rusqlite::Error) -> AgentError + '_ {
    move |e| {
        let code = e.sqlite_error_code();
        let full = code == Some(rusqlite::ErrorCode::DiskFull);
        let io = code == Some(rusqlite::ErrorCode::SystemIoFailure);
        let source = if ark_core::fs::out_of_room(path, full, io) {
            std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "the disk is full ({} free there; {e}): nothing was written; free space \
                     in the agent's data dir and it carries on by itself",
                    ark_core::fs::free_space(path)
                        .map_or("unknown".into(), |n| format!("{n} bytes")),
                ),
            )
        } else {
            std::io::Error::other(e)
        };
        AgentError::Io {
            what: "dedupe registry",
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Opens (creating if needed) the registry database at `path`.
fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(db(path))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db(path))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db(path))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(db(path))?;
    conn.execute_batch(SCHEMA).map_err(db(path))?;
    Ok(conn)
}

impl Registry {
    /// Opens (creating if needed) the registry in `data`.
    pub fn open(data: &Path) -> Result<Self> {
        let path = data.join(FILE);
        std::fs::create_dir_all(data).map_err(AgentError::io("creating data dir", data))?;
        let conn = connect(&path)?;
        Ok(Self {
            conn: Mutex::new(Some(conn)),
            path,
        })
    }

    /// [`Self::open`] for the agent's session: on a disk too full to open
    /// the registry (SQLite cannot even create its journal) the agent still
    /// starts, and the registry is opened at its first use once there is
    /// room. Until then each use fails with the full-disk error, which a
    /// job only logs: the commander's `Have` is the dedupe that counts.
    pub fn open_when_room(data: &Path) -> Result<Self> {
        match Self::open(data) {
            Err(AgentError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                let path = data.join(FILE);
                tracing::warn!(path = %path.display(), "dedupe registry: {source}; the agent starts without it and opens it once there is room");
                Ok(Self {
                    conn: Mutex::new(None),
                    path,
                })
            }
            opened => opened,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let conn = match conn.as_mut() {
            Some(conn) => conn,
            None => conn.insert(connect(&self.path)?),
        };
        f(conn).map_err(db(&self.path))
    }

    /// Records a harvested body; returns the earlier landed harvest with the
    /// same root, if any (this one is then a duplicate).
    pub fn record(&self, harvest: &Harvest) -> Result<Option<Harvest>> {
        self.with(|c| {
            let earlier = c
                .query_row(
                    "SELECT blake3, size, target, url, etag, last_modified, run_id, at, landed_path
                     FROM harvests WHERE blake3 = ?1 AND size = ?2 AND landed_path IS NOT NULL
                     ORDER BY at DESC LIMIT 1",
                    params![harvest.blake3, harvest.size as i64],
                    row,
                )
                .optional()?;
            c.execute(
                "INSERT OR REPLACE INTO harvests
                 (blake3, size, target, url, etag, last_modified, run_id, at, landed_path)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    harvest.blake3,
                    harvest.size as i64,
                    harvest.target,
                    harvest.url,
                    harvest.etag,
                    harvest.last_modified,
                    harvest.run_id,
                    harvest.at_ms,
                    harvest.landed_path
                ],
            )?;
            Ok(earlier)
        })
    }

    /// Marks a run's harvest as landed at `path`.
    pub fn landed(&self, run_id: i64, blake3: &str, path: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE harvests SET landed_path = ?3 WHERE run_id = ?1 AND blake3 = ?2",
                params![run_id, blake3, path],
            )
            .map(drop)
        })
    }

    /// Every harvest, newest first.
    pub fn list(&self) -> Result<Vec<Harvest>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT blake3, size, target, url, etag, last_modified, run_id, at, landed_path
                 FROM harvests ORDER BY at DESC",
            )?;
            let rows = stmt.query_map([], row)?;
            rows.collect()
        })
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Harvest> {
    Ok(Harvest {
        blake3: r.get(0)?,
        size: r.get::<_, i64>(1)? as u64,
        target: r.get(2)?,
        url: r.get(3)?,
        etag: r.get(4)?,
        last_modified: r.get(5)?,
        run_id: r.get(6)?,
        at_ms: r.get(7)?,
        landed_path: r.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_landed_root_makes_the_next_harvest_a_duplicate_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let harvest = |run_id, target: &str| Harvest {
            blake3: blake3::hash(b"same").to_hex().to_string(),
            size: 4,
            target: target.into(),
            url: "http://o/x".into(),
            etag: String::new(),
            last_modified: String::new(),
            run_id,
            at_ms: run_id,
            landed_path: None,
        };
        let registry = Registry::open(dir.path()).expect("open");
        assert_eq!(registry.record(&harvest(1, "a")).expect("record"), None);
        // Not landed yet: still not a duplicate.
        assert_eq!(registry.record(&harvest(2, "b")).expect("record"), None);
        registry
            .landed(1, &harvest(1, "a").blake3, "file/a/x")
            .expect("landed");
        drop(registry);
        let registry = Registry::open(dir.path()).expect("reopen");
        let earlier = registry
            .record(&harvest(3, "c"))
            .expect("record")
            .expect("duplicate");
        assert_eq!(earlier.target, "a");
        assert_eq!(earlier.landed_path.as_deref(), Some("file/a/x"));
        assert_eq!(registry.list().expect("list").len(), 3);
    }
}
