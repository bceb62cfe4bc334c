//! Targets, runs and events in the store: adding and listing targets, the
//! settings a job carries, inserting and listing runs, the event log.

use std::time::Duration;

use super::*;

pub fn add_target(
    conn: &Connection,
    t: &ark_proto::AddTargetRequest,
    now: i64,
) -> Result<ark_proto::TargetInfo> {
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO targets (name, kind, url, every_ms, created_at, next_due, keep, bandwidth_cap, max_size, window,
           quorum, spot_check, max_age_ms, media, keep_media, category, max_temp, lfs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![t.name, t.kind, t.url, t.every_ms as i64, now, t.keep, t.bandwidth_cap as i64, t.max_size as i64, t.window,
                t.quorum, t.spot_check, t.max_age_ms as i64, t.media, t.keep_media, t.category, f64::from(t.max_temp), t.lfs],
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
        book: t.book.clone(),
        max_age_ms: t.max_age_ms,
        media: t.media.clone(),
        keep_media: t.keep_media,
        category: t.category.clone(),
        max_temp: t.max_temp,
        lfs: t.lfs,
        ..Default::default()
    })
}

/// Every target, with its freshness at `now` (targets without their own
/// maximum age get `default_max_age_ms`).
pub fn list_targets(
    conn: &Connection,
    now: i64,
    default_max_age_ms: u64,
) -> Result<Vec<ark_proto::TargetInfo>> {
    let mut stmt = conn.prepare(
        "SELECT t.name, t.kind, t.url, t.every_ms, t.created_at, t.next_due,
                (SELECT state FROM runs r WHERE r.target = t.name AND r.kind = t.kind ORDER BY r.id DESC LIMIT 1),
                t.keep, t.bandwidth_cap, t.max_size, t.window, t.quorum, t.spot_check, t.max_age_ms,
                (SELECT MAX(finished_at) FROM runs r WHERE r.target = t.name AND r.kind = t.kind
                   AND r.state IN ('succeeded', 'unchanged')),
                b.book, b.newest, b.checked_at, t.media, t.keep_media, t.category, t.account, t.gone,
                t.max_temp, t.lfs
         FROM targets t LEFT JOIN books b ON b.target = t.name ORDER BY t.name",
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
            max_age_ms: r.get::<_, i64>(13)? as u64,
            confirmed_at_ms: r.get::<_, Option<i64>>(14)?.unwrap_or(0),
            book: r.get::<_, Option<String>>(15)?.unwrap_or_default(),
            upstream_newest: r.get::<_, Option<String>>(16)?.unwrap_or_default(),
            checked_at_ms: r.get::<_, Option<i64>>(17)?.unwrap_or(0),
            media: r.get(18)?,
            keep_media: r.get(19)?,
            category: r.get(20)?,
            account: r.get(21)?,
            gone: r.get(22)?,
            max_temp: r.get::<_, f64>(23)? as f32,
            lfs: r.get(24)?,
            ..Default::default()
        })
    })?;
    let mut targets = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    for t in &mut targets {
        if t.max_age_ms == 0 {
            t.max_age_ms = default_max_age_ms;
        }
        if !t.book.is_empty() {
            t.release = super::landed_url(conn, &t.name)?
                .map(|u| u.rsplit('/').next().unwrap_or_default().to_string())
                .unwrap_or_default();
        }
        t.account_options = super::account_of(conn, &t.name)?;
        // A repository gone upstream is kept as it was: its age is no news.
        if t.gone.is_empty() {
            t.stale = staleness(conn, t, now)?.unwrap_or_default();
        }
    }
    Ok(targets)
}

/// How old `t` is at `now` (ms, never negative): since its newest version
/// was last confirmed current, or since it was added when never.
pub fn target_age_ms(t: &ark_proto::TargetInfo, now: i64) -> i64 {
    let since = if t.confirmed_at_ms > 0 {
        t.confirmed_at_ms
    } else {
        t.created_at_ms
    };
    (now - since).max(0)
}

/// Consecutive failed runs after which a target is stale whatever its age:
/// a source that fails three times in a row needs a look now, not when its
/// last good copy has aged out.
pub const STALE_FAILURES: usize = 3;

/// Why `t` is stale at `now`, if it is: its newest version was confirmed
/// current longer ago than its maximum age (or never, and it is older than
/// that), or its last [`STALE_FAILURES`] runs failed.
fn staleness(conn: &Connection, t: &ark_proto::TargetInfo, now: i64) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT state, reason FROM runs WHERE target = ?1 AND kind = ?2
           AND state IN ('succeeded', 'unchanged', 'failed') ORDER BY id DESC LIMIT ?3",
    )?;
    let last: Vec<(String, String)> = stmt
        .query_map(params![t.name, t.kind, STALE_FAILURES as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if last.len() == STALE_FAILURES && last.iter().all(|(s, _)| s == "failed") {
        return Ok(Some(format!(
            "failing: the last {STALE_FAILURES} runs failed, the last with: {}",
            last[0].1
        )));
    }
    let max_age = Duration::from_millis(t.max_age_ms);
    let shown = humantime::format_duration(Duration::from_secs(max_age.as_secs()));
    let age_ms = target_age_ms(t, now);
    if max_age.is_zero() || age_ms <= t.max_age_ms as i64 {
        return Ok(None);
    }
    let age = humantime::format_duration(Duration::from_secs((age_ms / 1000) as u64));
    Ok(Some(if t.confirmed_at_ms > 0 {
        format!("last confirmed current {age} ago (max age {shown})")
    } else {
        format!("never harvested in the {age} since it was added (max age {shown})")
    }))
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
    /// The target's own URL: the validators are its (a followed source's
    /// runs fetch other URLs, each release its own).
    pub url: String,
}

pub fn target_job_settings(conn: &Connection, name: &str) -> Result<JobSettings> {
    Ok(conn
        .query_row(
            "SELECT etag, last_modified, bandwidth_cap, max_size, window, url FROM targets WHERE name = ?1",
            [name],
            |r| {
                Ok(JobSettings {
                    etag: r.get(0)?,
                    last_modified: r.get(1)?,
                    bandwidth_cap: r.get::<_, i64>(2)? as u64,
                    max_size: r.get::<_, i64>(3)? as u64,
                    window: r.get(4)?,
                    url: r.get(5)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default())
}

/// Versions a target keeps in the archive (0 = the commander's default).
/// A feed target's enclosure policy and media retention ("" and 0: all).
pub fn target_media(conn: &Connection, name: &str) -> Result<(String, u32)> {
    Ok(conn
        .query_row(
            "SELECT media, keep_media FROM targets WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or_default())
}

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
    conn.execute("DELETE FROM books WHERE target = ?1", [name])?;
    conn.execute("DELETE FROM accounts WHERE target = ?1", [name])?;
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

/// Why run `id` went where it went: its latest placement (who was chosen,
/// why not the others), "" before it was placed.
pub fn placement_of(conn: &Connection, id: i64) -> Result<String> {
    Ok(conn
        .query_row(
            "SELECT message FROM events WHERE run_id = ?1 AND kind = 'placed' ORDER BY id DESC LIMIT 1",
            [id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_default())
}
