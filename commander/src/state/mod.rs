//! The commander's durable state: one SQLite file (WAL) in the data dir with
//! agents, enrolment tokens, targets, runs, leases and events.
//!
//! Every change that must be atomic (a grant, a completion, an expiry) runs
//! inside one transaction through [`Store::tx`]; a `kill -9` at any moment
//! leaves the old state or the new one. Time is milliseconds since the Unix
//! epoch everywhere. This module owns the SQL for records; the lease policy
//! lives in [`crate::scheduler`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prost::Message;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::{CommanderError, Result};

mod accounts;
mod agents;
mod books;
mod targets;

pub use accounts::*;
pub use agents::*;
pub use books::*;
pub use targets::*;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS agents (
    name         TEXT PRIMARY KEY,
    cert_sha256  TEXT NOT NULL UNIQUE,
    enrolled_at  INTEGER NOT NULL,
    last_seen    INTEGER,
    paused       INTEGER NOT NULL DEFAULT 0,
    capabilities BLOB,
    telemetry    BLOB,
    bandwidth_cap INTEGER NOT NULL DEFAULT 0,
    window       TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tokens (
    secret_sha256 TEXT PRIMARY KEY,
    agent_name    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER
);
CREATE TABLE IF NOT EXISTS targets (
    name       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    url        TEXT NOT NULL,
    every_ms   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    next_due   INTEGER,
    etag          TEXT NOT NULL DEFAULT '',
    last_modified TEXT NOT NULL DEFAULT '',
    keep       INTEGER NOT NULL DEFAULT 0,
    bandwidth_cap INTEGER NOT NULL DEFAULT 0,
    max_size   INTEGER NOT NULL DEFAULT 0,
    window     TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    target      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    url         TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  INTEGER NOT NULL,
    generation  INTEGER NOT NULL DEFAULT 0,
    last_agent  TEXT,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER,
    bytes_done  INTEGER NOT NULL DEFAULT 0,
    size_bytes  INTEGER,
    reason      TEXT NOT NULL DEFAULT '',
    blake3      TEXT NOT NULL DEFAULT '',
    bytes_total INTEGER NOT NULL DEFAULT 0,
    bytes_per_second INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs(state, not_before);
CREATE TABLE IF NOT EXISTS leases (
    run_id     INTEGER NOT NULL REFERENCES runs(id),
    generation INTEGER NOT NULL,
    agent      TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ended_at   INTEGER,
    outcome    TEXT,
    PRIMARY KEY (run_id, generation)
);
CREATE INDEX IF NOT EXISTS leases_open ON leases(ended_at, expires_at);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    run_id  INTEGER,
    agent   TEXT,
    kind    TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events(run_id, kind);
CREATE TABLE IF NOT EXISTS uploads (
    run_id      INTEGER PRIMARY KEY REFERENCES runs(id),
    generation  INTEGER NOT NULL,
    agent       TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL,
    blake3      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    manifest    BLOB NOT NULL,
    signature   BLOB NOT NULL,
    started_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    target      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    run_id      INTEGER NOT NULL,
    path        TEXT NOT NULL UNIQUE,
    blake3      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    state       TEXT NOT NULL,
    agent       TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL,
    url         TEXT NOT NULL,
    etag        TEXT NOT NULL DEFAULT '',
    last_modified TEXT NOT NULL DEFAULT '',
    manifest    BLOB NOT NULL,
    signature   BLOB NOT NULL,
    source      TEXT NOT NULL,
    linked_from INTEGER,
    created_at  INTEGER NOT NULL,
    landed_at   INTEGER,
    pruned_at   INTEGER
);
CREATE INDEX IF NOT EXISTS versions_by_root ON versions(blake3, state);
CREATE INDEX IF NOT EXISTS versions_by_target ON versions(target, state);
-- The entries of every feed the archive holds, as the commander derived
-- them from landed snapshots: an entry is new when neither its id nor its
-- content hash was seen before for that feed (a republished entry is not).
CREATE TABLE IF NOT EXISTS feed_entries (
    target     TEXT NOT NULL,
    entry_id   TEXT NOT NULL,
    content_blake3 TEXT NOT NULL,
    file       TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    version_id INTEGER NOT NULL,
    PRIMARY KEY (target, entry_id)
);
CREATE INDEX IF NOT EXISTS feed_entries_by_content ON feed_entries(target, content_blake3);
-- Every enclosure of a feed, once: queued as a media run, landed, or
-- skipped with its reason.
CREATE TABLE IF NOT EXISTS feed_media (
    target     TEXT NOT NULL,
    url        TEXT NOT NULL,
    file       TEXT NOT NULL,
    declared_length INTEGER,
    run_id     INTEGER,
    state      TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (target, url)
);
-- Every Git LFS object a git target's mirror points at (`--lfs`), once:
-- queued as an `lfs` run, then landed beside the mirror.
CREATE TABLE IF NOT EXISTS lfs_objects (
    target  TEXT NOT NULL,
    oid     TEXT NOT NULL,
    size    INTEGER NOT NULL,
    run_id  INTEGER,
    state   TEXT NOT NULL,
    PRIMARY KEY (target, oid)
);
-- The tips of a git target whose history has been read for LFS pointers:
-- the next scan walks only what is new since.
CREATE TABLE IF NOT EXISTS lfs_scanned (
    target  TEXT NOT NULL,
    tip     TEXT NOT NULL,
    PRIMARY KEY (target, tip)
);
-- Quorum harvests: a group of runs of one target, each by a distinct
-- agent; the group's id is its first run's. A version lands when `need`
-- votes agree (see crate::quorum).
CREATE TABLE IF NOT EXISTS quorum_groups (
    id         INTEGER PRIMARY KEY,
    target     TEXT NOT NULL,
    need       INTEGER NOT NULL,
    state      TEXT NOT NULL,
    tie_breaks INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    deadline   INTEGER NOT NULL,
    reason     TEXT NOT NULL DEFAULT ''
);
-- A Kiwix book a zim target follows (its `url` is the listing): the
-- listing's validators for a conditional request, and the newest release
-- seen there with the digest it publishes, and when it was last checked.
CREATE TABLE IF NOT EXISTS books (
    target         TEXT PRIMARY KEY,
    book           TEXT NOT NULL,
    etag           TEXT NOT NULL DEFAULT '',
    last_modified  TEXT NOT NULL DEFAULT '',
    newest         TEXT NOT NULL DEFAULT '',
    newest_url     TEXT NOT NULL DEFAULT '',
    newest_sha256  TEXT NOT NULL DEFAULT '',
    newest_source  TEXT NOT NULL DEFAULT '',
    checked_at     INTEGER,
    reason         TEXT NOT NULL DEFAULT ''
);
-- A forge account a git-account target follows: how it is listed. Its
-- repositories are git targets whose `account` names it.
CREATE TABLE IF NOT EXISTS accounts (
    target      TEXT PRIMARY KEY,
    forge       TEXT NOT NULL,
    token_file  TEXT NOT NULL DEFAULT '',
    include     TEXT NOT NULL DEFAULT '[]',
    exclude     TEXT NOT NULL DEFAULT '[]',
    no_forks    INTEGER NOT NULL DEFAULT 0,
    no_archived INTEGER NOT NULL DEFAULT 0,
    no_wikis    INTEGER NOT NULL DEFAULT 0
);
-- What each agent achieved from each origin host, from its progress
-- reports (an exponentially weighted mean): placement's estimate of how
-- soon an agent would finish a job from that host.
CREATE TABLE IF NOT EXISTS throughput (
    agent            TEXT NOT NULL,
    host             TEXT NOT NULL,
    bytes_per_second INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (agent, host)
);
-- One agent's signed claim in a quorum group (one per member run).
CREATE TABLE IF NOT EXISTS votes (
    run_id      INTEGER PRIMARY KEY,
    group_id    INTEGER NOT NULL,
    agent       TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL,
    key         TEXT NOT NULL,
    blake3      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    etag        TEXT NOT NULL DEFAULT '',
    last_modified TEXT NOT NULL DEFAULT '',
    manifest    BLOB NOT NULL,
    signature   BLOB NOT NULL,
    verified    INTEGER NOT NULL DEFAULT 0,
    at          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS votes_by_group ON votes(group_id);
-- Who vouched for each landed version, with the signed manifest each sent.
CREATE TABLE IF NOT EXISTS vouchers (
    version_id  INTEGER NOT NULL,
    agent       TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL,
    run_id      INTEGER NOT NULL,
    role        TEXT NOT NULL,
    manifest    BLOB NOT NULL,
    signature   BLOB NOT NULL,
    PRIMARY KEY (version_id, agent)
);
-- Consecutive confirmed harvests of one agent for one kind (adaptive quorum).
CREATE TABLE IF NOT EXISTS streaks (
    agent  TEXT NOT NULL,
    kind   TEXT NOT NULL,
    streak INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (agent, kind)
);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- `archive migrate`: each landed version copied to an object store and
-- read back verified there (`state` 'verified'), or on its way ('copying',
-- with the multipart upload a crash may have left), so an interrupted
-- migration resumes where it stopped.
CREATE TABLE IF NOT EXISTS migrated (
    dest      TEXT NOT NULL,
    path      TEXT NOT NULL,
    blake3    TEXT NOT NULL,
    state     TEXT NOT NULL,
    multipart TEXT,
    at        INTEGER NOT NULL,
    PRIMARY KEY (dest, path)
);
-- The dashboard's history (see crate::history): one row per series and
-- key at each sample; pruned by age and row count as it is written.
CREATE TABLE IF NOT EXISTS history (
    at     INTEGER NOT NULL,
    series TEXT NOT NULL,
    key    TEXT NOT NULL DEFAULT '',
    value  REAL NOT NULL,
    PRIMARY KEY (at, series, key)
);
"#;

/// Run states as stored.
pub mod run_state {
    pub const QUEUED: &str = "queued";
    pub const LEASED: &str = "leased";
    pub const SUCCEEDED: &str = "succeeded";
    /// The origin had nothing new: one conditional request, no body.
    pub const UNCHANGED: &str = "unchanged";
    pub const FAILED: &str = "failed";
    /// A quorum member that reported: its vote waits for the others.
    pub const AWAITING_QUORUM: &str = "awaiting_quorum";
    /// A quorum member whose group disagreed: a tie-break is asked for.
    pub const DISPUTED: &str = "disputed";
    /// A quorum member that agreed with the version that landed.
    pub const CONFIRMED: &str = "confirmed";
    /// A quorum member outvoted by the version that landed.
    pub const REFUTED: &str = "refuted";
    /// A run of a source that moves (a Kiwix book) whose release the
    /// commander is still resolving: not leased until it knows the URL.
    pub const RESOLVING: &str = "resolving";
    /// States in which a run is still in play (its quarantine is kept, its
    /// target gets no second run), as an SQL list.
    pub const ACTIVE_SQL: &str = "('queued', 'leased', 'awaiting_quorum', 'disputed', 'resolving')";
}

/// The state database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    /// A second connection that only checkpoints the WAL. SQLite's automatic
    /// checkpoint would run inside whichever write crossed the threshold,
    /// holding `conn`'s lock through its fsyncs (measured: a 10-30 ms stall
    /// every ~1000 heartbeats); a PASSIVE checkpoint on its own connection
    /// runs beside the writers instead.
    checkpointer: Mutex<Connection>,
    /// A connection for reads that need not see uncommitted work and must
    /// not wait for (or hold up) the writers: the scheduler's background
    /// read of the whole swarm. WAL lets it read beside them.
    reader: Mutex<Connection>,
    /// The database file, named in its errors (a full disk says which).
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_at(path).map_err(|e| e.on_database(path))
    }

    fn open_at(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode survives a process crash (kill -9) intact; only
        // an OS crash may lose the last commits, never consistency.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(5))?;
        let reader = Connection::open(path)?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self {
            conn: Mutex::new(conn),
            checkpointer: Mutex::new(checkpointer),
            reader: Mutex::new(reader),
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every call's error, named (see [`CommanderError::on_database`]).
    fn named<T>(&self, result: Result<T>) -> Result<T> {
        result.map_err(|e| e.on_database(&self.path))
    }

    /// Copies committed WAL pages into the database without blocking
    /// writers. Called periodically by the commander's sweep task.
    /// Returns (frames in the WAL, frames checkpointed).
    pub fn checkpoint(&self) -> Result<(i64, i64)> {
        let conn = self.checkpointer.lock().unwrap_or_else(|p| p.into_inner());
        self.named(
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .map_err(CommanderError::from),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (the transaction rolls back on drop), so a poisoned lock is safe.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one transaction, committed when it returns Ok.
    pub fn tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        self.named((|| {
            let tx = conn.transaction()?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })())
    }

    /// Runs `f` in one transaction, committed when it returns Ok and
    /// `commit` is true, rolled back otherwise (a dry run sees what would
    /// happen and leaves nothing).
    pub fn tx_or_dry<T>(
        &self,
        commit: bool,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.lock();
        self.named((|| {
            let tx = conn.transaction()?;
            let value = f(&tx)?;
            if commit {
                tx.commit()?;
            }
            Ok(value)
        })())
    }

    /// Runs a read (or a single statement) outside an explicit transaction.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.named(f(&self.lock()))
    }

    /// Runs `f` on the reader connection in one read transaction: a
    /// consistent view of what was committed, taken beside the writers.
    pub fn snapshot<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        self.named((|| {
            let tx = conn.transaction()?;
            f(&tx)
        })())
    }
}

/// Columns added after a table was first created: `CREATE TABLE IF NOT
/// EXISTS` leaves an older database's table as it was, so they are added
/// here, each once.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("targets", "etag", "TEXT NOT NULL DEFAULT ''"),
    ("targets", "last_modified", "TEXT NOT NULL DEFAULT ''"),
    ("runs", "blake3", "TEXT NOT NULL DEFAULT ''"),
    ("runs", "bytes_total", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "bytes_per_second", "INTEGER NOT NULL DEFAULT 0"),
    ("targets", "keep", "INTEGER NOT NULL DEFAULT 0"),
    ("targets", "bandwidth_cap", "INTEGER NOT NULL DEFAULT 0"),
    ("targets", "max_size", "INTEGER NOT NULL DEFAULT 0"),
    ("targets", "window", "TEXT NOT NULL DEFAULT ''"),
    ("agents", "bandwidth_cap", "INTEGER NOT NULL DEFAULT 0"),
    ("agents", "window", "TEXT NOT NULL DEFAULT ''"),
    ("targets", "quorum", "TEXT NOT NULL DEFAULT ''"),
    ("targets", "spot_check", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "quorum_group", "INTEGER"),
    ("agents", "revoked_at", "INTEGER"),
    ("agents", "confirmed", "INTEGER NOT NULL DEFAULT 0"),
    ("agents", "disputes_lost", "INTEGER NOT NULL DEFAULT 0"),
    ("agents", "spot_failed", "INTEGER NOT NULL DEFAULT 0"),
    ("agents", "suspect", "TEXT NOT NULL DEFAULT ''"),
    ("runs", "expected_sha256", "TEXT NOT NULL DEFAULT ''"),
    ("runs", "expected_source", "TEXT NOT NULL DEFAULT ''"),
    ("targets", "max_age_ms", "INTEGER NOT NULL DEFAULT 0"),
    ("targets", "media", "TEXT NOT NULL DEFAULT ''"),
    ("targets", "keep_media", "INTEGER NOT NULL DEFAULT 0"),
    ("targets", "category", "TEXT NOT NULL DEFAULT ''"),
    ("targets", "account", "TEXT NOT NULL DEFAULT ''"),
    ("targets", "gone", "TEXT NOT NULL DEFAULT ''"),
    ("targets", "max_temp", "REAL NOT NULL DEFAULT 0"),
    ("agents", "on_battery", "TEXT NOT NULL DEFAULT ''"),
    ("agents", "max_temp", "REAL NOT NULL DEFAULT 0"),
    ("agents", "hot_since", "INTEGER"),
    ("agents", "self_yield", "INTEGER NOT NULL DEFAULT 1"),
    ("targets", "lfs", "INTEGER NOT NULL DEFAULT 0"),
    // The id of a landing's multipart upload to an S3 archive, so a
    // recovery after a crash can abort what it left.
    ("versions", "multipart", "TEXT"),
];

fn migrate(conn: &Connection) -> Result<()> {
    for (table, column, decl) in ADDED_COLUMNS {
        let present: bool = conn.query_row(
            &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
            [column],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    Ok(())
}

/// Whether run `run` may still use what it has in quarantine (it is queued,
/// leased, or a quorum member waiting for the others).
pub fn run_active(conn: &Connection, run: i64) -> Result<bool> {
    let state: Option<String> = conn
        .query_row("SELECT state FROM runs WHERE id = ?1", [run], |r| r.get(0))
        .optional()?;
    Ok(matches!(
        state.as_deref(),
        Some(
            run_state::QUEUED
                | run_state::LEASED
                | run_state::AWAITING_QUORUM
                | run_state::DISPUTED
        )
    ))
}

/// Appends to the event log.
pub fn event(
    conn: &Connection,
    at: i64,
    run: Option<i64>,
    agent: Option<&str>,
    kind: &str,
    message: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO events (at, run_id, agent, kind, message) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, run, agent, kind, message],
    )?;
    Ok(())
}

pub fn setting(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?)
}

pub fn set_setting(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// The swarm-wide pause flag.
pub const SWARM_PAUSED: &str = "swarm_paused";

pub fn swarm_paused(conn: &Connection) -> Result<bool> {
    Ok(setting(conn, SWARM_PAUSED)?.as_deref() == Some("1"))
}

/// Pauses or resumes the whole swarm (`agent` empty) or one agent, with its
/// event: what the CLI's `pause`/`resume` and the dashboard's buttons do.
pub fn set_paused(conn: &Connection, agent: &str, paused: bool, now: i64) -> Result<()> {
    let verb = if paused { "paused" } else { "resumed" };
    if agent.is_empty() {
        set_setting(conn, SWARM_PAUSED, if paused { "1" } else { "0" })?;
        return event(conn, now, None, None, verb, "whole swarm");
    }
    if !agent_exists(conn, agent)? {
        return Err(CommanderError::NotFound(format!(
            "no agent named {agent:?} (see `ark-commander agents`)"
        )));
    }
    conn.execute(
        "UPDATE agents SET paused = ?1 WHERE name = ?2",
        params![paused, agent],
    )?;
    event(conn, now, None, Some(agent), verb, "agent")
}

// ------------------------------------------------------------------ tokens

// ------------------------------------------------------------------ agents

// ----------------------------------------------------------------- targets

// -------------------------------------------------------------------- runs

const RUN_COLUMNS: &str =
    "r.id, r.target, r.kind, r.url, r.state, r.attempts, r.generation, r.created_at,
    r.finished_at, r.bytes_done, r.size_bytes, r.reason, l.agent, l.expires_at, r.last_agent, r.blake3, r.bytes_total, r.bytes_per_second, r.quorum_group";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_never_checkpoint_inline_and_the_checkpointer_catches_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state.sqlite")).expect("open");
        // Well past SQLite's default autocheckpoint threshold (1000 pages).
        let blob = vec![7u8; 4096];
        for i in 0..1500 {
            store
                .tx(|tx| {
                    tx.execute(
                        "INSERT INTO settings (key, value) VALUES (?1, ?2)",
                        params![i.to_string(), hex::encode(&blob)],
                    )?;
                    Ok(())
                })
                .expect("write");
        }
        let (frames, done) = store.checkpoint().expect("checkpoint");
        assert!(
            frames > 1500,
            "the writes checkpointed inline: only {frames} frames left in the WAL"
        );
        assert_eq!(
            done, frames,
            "a passive checkpoint with no readers copies every frame"
        );
        let count: i64 = store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM settings", [], |r| r.get(0))?))
            .expect("count");
        assert_eq!(count, 1500);
    }
}
