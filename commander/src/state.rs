//! The commander's durable state: one SQLite file (WAL) in the data dir with
//! agents, enrolment tokens, targets, runs, leases and events.
//!
//! Every change that must be atomic (a grant, a completion, an expiry) runs
//! inside one transaction through [`Store::tx`]; a `kill -9` at any moment
//! leaves the old state or the new one. Time is milliseconds since the Unix
//! epoch everywhere. This module owns the SQL for records; the lease policy
//! lives in [`crate::scheduler`].

use std::path::Path;
use std::sync::Mutex;

use prost::Message;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::{CommanderError, Result};

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
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
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
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
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
        Ok(Self {
            conn: Mutex::new(conn),
            checkpointer: Mutex::new(checkpointer),
        })
    }

    /// Copies committed WAL pages into the database without blocking
    /// writers. Called periodically by the commander's sweep task.
    /// Returns (frames in the WAL, frames checkpointed).
    pub fn checkpoint(&self) -> Result<(i64, i64)> {
        let conn = self.checkpointer.lock().unwrap_or_else(|p| p.into_inner());
        Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (the transaction rolls back on drop), so a poisoned lock is safe.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one transaction, committed when it returns Ok.
    pub fn tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs a read (or a single statement) outside an explicit transaction.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.lock())
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

/// Records a token (only the hash of its secret).
pub fn create_token(
    conn: &Connection,
    secret_sha256: &str,
    agent: &str,
    now: i64,
    expires_at: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO tokens (secret_sha256, agent_name, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![secret_sha256, agent, now, expires_at],
    )?;
    Ok(())
}

/// Marks a token used and returns the agent name it was issued for.
pub fn redeem_token(conn: &Connection, secret_sha256: &str, now: i64) -> Result<String> {
    let row: Option<(String, i64, Option<i64>)> = conn
        .query_row(
            "SELECT agent_name, expires_at, used_at FROM tokens WHERE secret_sha256 = ?1",
            [secret_sha256],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let bad = |m: &str| {
        CommanderError::BadToken(format!(
            "{m}: ask the operator for a new one (`ark-commander enroll NAME`)"
        ))
    };
    let Some((agent, expires_at, used_at)) = row else {
        return Err(bad("unknown enrolment token"));
    };
    if used_at.is_some() {
        return Err(bad("this enrolment token has already been used"));
    }
    if now >= expires_at {
        return Err(bad("this enrolment token has expired"));
    }
    conn.execute(
        "UPDATE tokens SET used_at = ?1 WHERE secret_sha256 = ?2",
        params![now, secret_sha256],
    )?;
    Ok(agent)
}

// ------------------------------------------------------------------ agents

/// Records an enrolled agent (or replaces a re-enrolled one's certificate).
pub fn enroll_agent(conn: &Connection, name: &str, cert_sha256: &str, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO agents (name, cert_sha256, enrolled_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET cert_sha256 = excluded.cert_sha256, enrolled_at = excluded.enrolled_at",
        params![name, cert_sha256, now],
    )?;
    Ok(())
}

pub fn agent_by_cert(conn: &Connection, cert_sha256: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT name FROM agents WHERE cert_sha256 = ?1",
            [cert_sha256],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn agent_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM agents WHERE name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}

pub fn set_capabilities(
    conn: &Connection,
    name: &str,
    caps: &ark_proto::Capabilities,
    now: i64,
) -> Result<()> {
    conn.execute(
        "UPDATE agents SET capabilities = ?1, last_seen = ?2 WHERE name = ?3",
        params![caps.encode_to_vec(), now, name],
    )?;
    Ok(())
}

pub fn capabilities(conn: &Connection, name: &str) -> Result<Option<ark_proto::Capabilities>> {
    let blob: Option<Option<Vec<u8>>> = conn
        .query_row(
            "SELECT capabilities FROM agents WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(blob
        .flatten()
        .and_then(|b| ark_proto::Capabilities::decode(b.as_slice()).ok()))
}

pub fn agent_seen(
    conn: &Connection,
    name: &str,
    telemetry: Option<&ark_proto::Telemetry>,
    now: i64,
) -> Result<()> {
    conn.execute(
        "UPDATE agents SET last_seen = ?1, telemetry = COALESCE(?2, telemetry) WHERE name = ?3",
        params![now, telemetry.map(|t| t.encode_to_vec()), name],
    )?;
    Ok(())
}

pub fn agent_paused(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .query_row("SELECT paused FROM agents WHERE name = ?1", [name], |r| {
            r.get::<_, bool>(0)
        })
        .optional()?
        .unwrap_or(false))
}

/// Lists agents; `lost_after` decides who counts as online.
/// The operator's settings for agent `name`: (bandwidth cap, window).
pub fn agent_settings(conn: &Connection, name: &str) -> Result<(u64, String)> {
    Ok(conn
        .query_row(
            "SELECT bandwidth_cap, window FROM agents WHERE name = ?1",
            [name],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )
        .optional()?
        .unwrap_or_default())
}

/// Sets an agent's bandwidth cap and/or window (None: unchanged).
pub fn set_agent(
    conn: &Connection,
    name: &str,
    bandwidth_cap: Option<u64>,
    window: Option<&str>,
) -> Result<()> {
    if !agent_exists(conn, name)? {
        return Err(CommanderError::NotFound(format!(
            "no agent named {name:?} (see `ark-commander agents`)"
        )));
    }
    if let Some(cap) = bandwidth_cap {
        conn.execute(
            "UPDATE agents SET bandwidth_cap = ?2 WHERE name = ?1",
            params![name, cap as i64],
        )?;
    }
    if let Some(window) = window {
        conn.execute(
            "UPDATE agents SET window = ?2 WHERE name = ?1",
            params![name, window],
        )?;
    }
    Ok(())
}

pub fn list_agents(
    conn: &Connection,
    now: i64,
    lost_after_ms: i64,
) -> Result<Vec<ark_proto::AgentInfo>> {
    let mut stmt = conn.prepare(
        "SELECT name, enrolled_at, last_seen, paused, capabilities, telemetry, bandwidth_cap, window
         FROM agents ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Option<i64>>(2)?,
            r.get::<_, bool>(3)?,
            r.get::<_, Option<Vec<u8>>>(4)?,
            r.get::<_, Option<Vec<u8>>>(5)?,
            r.get::<_, i64>(6)? as u64,
            r.get::<_, String>(7)?,
        ))
    })?;
    let mut agents = Vec::new();
    for row in rows {
        let (name, enrolled_at, last_seen, paused, caps, telemetry, bandwidth_cap, window) = row?;
        let state = match last_seen {
            None => "enrolled",
            Some(seen) if now - seen <= lost_after_ms => "online",
            Some(_) => "lost",
        };
        let mut running_stmt = conn.prepare_cached(
            "SELECT run_id FROM leases WHERE agent = ?1 AND ended_at IS NULL ORDER BY run_id",
        )?;
        let running = running_stmt
            .query_map([&name], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        agents.push(ark_proto::AgentInfo {
            name,
            state: state.into(),
            paused,
            capabilities: caps.and_then(|b| ark_proto::Capabilities::decode(b.as_slice()).ok()),
            telemetry: telemetry.and_then(|b| ark_proto::Telemetry::decode(b.as_slice()).ok()),
            enrolled_at_ms: enrolled_at,
            last_seen_ms: last_seen.unwrap_or(0),
            running,
            bandwidth_cap,
            window,
        });
    }
    Ok(agents)
}

// ----------------------------------------------------------------- targets

pub fn add_target(
    conn: &Connection,
    t: &ark_proto::AddTargetRequest,
    now: i64,
) -> Result<ark_proto::TargetInfo> {
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO targets (name, kind, url, every_ms, created_at, next_due, keep, bandwidth_cap, max_size, window)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9)",
        params![t.name, t.kind, t.url, t.every_ms as i64, now, t.keep, t.bandwidth_cap as i64, t.max_size as i64, t.window],
    )?;
    if inserted == 0 {
        return Err(CommanderError::AlreadyExists(format!(
            "a target named {:?} already exists: pick another --name, or `ark-commander target rm {}` first",
            t.name, t.name
        )));
    }
    Ok(ark_proto::TargetInfo {
        name: t.name.clone(),
        kind: t.kind.clone(),
        url: t.url.clone(),
        every_ms: t.every_ms,
        created_at_ms: now,
        next_due_ms: now,
        last_state: String::new(),
        keep: t.keep,
        bandwidth_cap: t.bandwidth_cap,
        max_size: t.max_size,
        window: t.window.clone(),
    })
}

pub fn list_targets(conn: &Connection) -> Result<Vec<ark_proto::TargetInfo>> {
    let mut stmt = conn.prepare(
        "SELECT t.name, t.kind, t.url, t.every_ms, t.created_at, t.next_due,
                (SELECT state FROM runs r WHERE r.target = t.name AND r.kind = t.kind ORDER BY r.id DESC LIMIT 1),
                t.keep, t.bandwidth_cap, t.max_size, t.window
         FROM targets t ORDER BY t.name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ark_proto::TargetInfo {
            name: r.get(0)?,
            kind: r.get(1)?,
            url: r.get(2)?,
            every_ms: r.get::<_, i64>(3)? as u64,
            created_at_ms: r.get(4)?,
            next_due_ms: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
            last_state: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
            keep: r.get(7)?,
            bandwidth_cap: r.get::<_, i64>(8)? as u64,
            max_size: r.get::<_, i64>(9)? as u64,
            window: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What a job of a target carries besides its URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSettings {
    /// Validators of the last harvest, for a conditional GET.
    pub etag: String,
    pub last_modified: String,
    /// The run's bandwidth cap (bytes/s, 0 = none).
    pub bandwidth_cap: u64,
    /// The operator's size limit (0 = the default).
    pub max_size: u64,
    /// Off-peak hours ("" = any time).
    pub window: String,
}

pub fn target_job_settings(conn: &Connection, name: &str) -> Result<JobSettings> {
    Ok(conn
        .query_row(
            "SELECT etag, last_modified, bandwidth_cap, max_size, window FROM targets WHERE name = ?1",
            [name],
            |r| {
                Ok(JobSettings {
                    etag: r.get(0)?,
                    last_modified: r.get(1)?,
                    bandwidth_cap: r.get::<_, i64>(2)? as u64,
                    max_size: r.get::<_, i64>(3)? as u64,
                    window: r.get(4)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default())
}

/// Versions a target keeps in the archive (0 = the commander's default).
pub fn target_keep(conn: &Connection, name: &str) -> Result<u32> {
    Ok(conn
        .query_row("SELECT keep FROM targets WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

pub fn target(conn: &Connection, name: &str) -> Result<Option<(String, String)>> {
    Ok(conn
        .query_row(
            "SELECT kind, url FROM targets WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

pub fn remove_target(conn: &Connection, name: &str) -> Result<()> {
    if conn.execute("DELETE FROM targets WHERE name = ?1", [name])? == 0 {
        return Err(CommanderError::NotFound(format!(
            "no target named {name:?} (see `ark-commander target ls`)"
        )));
    }
    Ok(())
}

// -------------------------------------------------------------------- runs

const RUN_COLUMNS: &str =
    "r.id, r.target, r.kind, r.url, r.state, r.attempts, r.generation, r.created_at,
    r.finished_at, r.bytes_done, r.size_bytes, r.reason, l.agent, l.expires_at, r.last_agent, r.blake3, r.bytes_total, r.bytes_per_second";

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ark_proto::RunInfo> {
    let lease_agent: Option<String> = r.get(12)?;
    let last_agent: Option<String> = r.get(14)?;
    Ok(ark_proto::RunInfo {
        id: r.get(0)?,
        target: r.get(1)?,
        kind: r.get(2)?,
        url: r.get(3)?,
        state: r.get(4)?,
        attempts: r.get(5)?,
        generation: r.get::<_, i64>(6)? as u64,
        created_at_ms: r.get(7)?,
        finished_at_ms: r.get::<_, Option<i64>>(8)?.unwrap_or(0),
        bytes_done: r.get::<_, i64>(9)? as u64,
        size_bytes: r.get::<_, Option<i64>>(10)?.unwrap_or(0) as u64,
        reason: r.get(11)?,
        agent: lease_agent.or(last_agent).unwrap_or_default(),
        lease_expires_at_ms: r.get::<_, Option<i64>>(13)?.unwrap_or(0),
        blake3: r.get(15)?,
        bytes_total: r.get::<_, i64>(16)? as u64,
        bytes_per_second: r.get::<_, i64>(17)? as u64,
    })
}

/// Newest runs first.
pub fn list_runs(conn: &Connection, limit: u32) -> Result<Vec<ark_proto::RunInfo>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs r
         LEFT JOIN leases l ON l.run_id = r.id AND l.generation = r.generation
         ORDER BY r.id DESC LIMIT ?1"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([limit], run_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn run(conn: &Connection, id: i64) -> Result<ark_proto::RunInfo> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs r
         LEFT JOIN leases l ON l.run_id = r.id AND l.generation = r.generation WHERE r.id = ?1"
    );
    conn.query_row(&sql, [id], run_from_row)
        .optional()?
        .ok_or_else(|| CommanderError::NotFound(format!("no run {id}")))
}

pub fn list_events(conn: &Connection, run_id: i64, limit: u32) -> Result<Vec<ark_proto::Event>> {
    let mut stmt = conn.prepare(
        "SELECT id, at, run_id, agent, kind, message FROM events
         WHERE (?1 = 0 OR run_id = ?1) ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![run_id, limit], |r| {
        Ok(ark_proto::Event {
            id: r.get(0)?,
            at_ms: r.get(1)?,
            run_id: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
            agent: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
            kind: r.get(4)?,
            message: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Counts runs by state.
pub fn run_counts(conn: &Connection) -> Result<std::collections::HashMap<String, u32>> {
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM runs GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Inserts a queued run (of a target, or derived from one: a feed's
/// enclosure) and its `queued` event; returns its id.
pub fn insert_run(
    tx: &Connection,
    target: &str,
    kind: &str,
    url: &str,
    message: &str,
    now: i64,
) -> Result<i64> {
    tx.execute(
        "INSERT INTO runs (target, kind, url, state, not_before, created_at) VALUES (?1, ?2, ?3, 'queued', ?4, ?4)",
        params![target, kind, url, now],
    )?;
    let id = tx.last_insert_rowid();
    event(tx, now, Some(id), None, "queued", message)?;
    Ok(id)
}

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
