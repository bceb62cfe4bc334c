//! Targets, runs and events in the store: adding and listing targets, the
//! settings a job carries, inserting and listing runs, the event log.

use super::*;

pub fn add_target(
    conn: &Connection,
    t: &ark_proto::AddTargetRequest,
    now: i64,
) -> Result<ark_proto::TargetInfo> {
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO targets (name, kind, url, every_ms, created_at, next_due, keep, bandwidth_cap, max_size, window,
           quorum, spot_check)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![t.name, t.kind, t.url, t.every_ms as i64, now, t.keep, t.bandwidth_cap as i64, t.max_size as i64, t.window,
                t.quorum, t.spot_check],
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
        quorum: t.quorum.clone(),
        spot_check: t.spot_check,
    })
}

pub fn list_targets(conn: &Connection) -> Result<Vec<ark_proto::TargetInfo>> {
    let mut stmt = conn.prepare(
        "SELECT t.name, t.kind, t.url, t.every_ms, t.created_at, t.next_due,
                (SELECT state FROM runs r WHERE r.target = t.name AND r.kind = t.kind ORDER BY r.id DESC LIMIT 1),
                t.keep, t.bandwidth_cap, t.max_size, t.window, t.quorum, t.spot_check
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
            quorum: r.get(11)?,
            spot_check: r.get(12)?,
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

pub(super) fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ark_proto::RunInfo> {
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
        quorum_group: r.get::<_, Option<i64>>(18)?.unwrap_or(0),
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
