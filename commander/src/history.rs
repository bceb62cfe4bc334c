//! The dashboard's history: what the swarm did over the last hours, kept in
//! the state database's `history` table so it survives a restart, and
//! bounded so it never grows without limit.
//!
//! Design: one task ([`sample_task`]) wakes every `history-every` (default
//! 15 s), reads the state the commander already keeps — each online agent's
//! transfer rate (the `bytes_per_second` of its leased runs, from its
//! progress reports) and temperature (its telemetry), the pause rules the
//! swarm yields to and the operator's pause, the archive's landed bytes by
//! kind — and writes one row per series and key ([`record`]). In the same
//! transaction it drops rows older than `history-retention` (default 24 h)
//! and, past [`MAX_ROWS`], the oldest samples ([`prune`]). The swarm's
//! aggregate rate is written at every sample, even an idle one: its rows
//! are the timeline the pause periods are measured against.
//!
//! [`read`] answers `GET /api/history`: the series of a window, averaged
//! into at most [`MAX_POINTS`] buckets each, pause periods as intervals,
//! and each target's age against its maximum (computed now, as for the
//! freshness checks: it needs no history). Nothing here is an API for
//! other programs; `/metrics` is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::config::CommanderConfig;
use crate::state::{self, Store};
use crate::{CommanderError, Result};

/// The series as stored (`history.series`); `key` says whose.
pub mod series {
    /// An agent's transfer rate, bytes/s (key: the agent).
    pub const AGENT_RATE: &str = "agent_rate";
    /// An agent's temperature, °C (key: the agent).
    pub const AGENT_TEMPERATURE: &str = "agent_temperature";
    /// The whole swarm's transfer rate, bytes/s (key: "").
    pub const SWARM_RATE: &str = "swarm_rate";
    /// Bytes landed in the archive (key: the kind).
    pub const ARCHIVE_BYTES: &str = "archive_bytes";
    /// Present while the swarm is held back (key: the pause rule, or
    /// [`super::OPERATOR`] for the operator's pause), value 1.
    pub const PAUSE: &str = "pause";
}

/// The key of a pause the operator set (`pause`, the dashboard's button):
/// not a valid rule name, so it cannot be confused with one.
pub const OPERATOR: &str = "";

/// Most rows the table keeps whatever the retention: ~40 MiB of SQLite.
/// Ten agents sampled every 15 s for a day take ~150,000; a swarm large
/// enough to reach it keeps fewer hours instead of more disk.
pub const MAX_ROWS: i64 = 500_000;

/// Most points a series has in one answer: more than a chart's width in
/// pixels would show, few enough that a day of ten agents is a small JSON.
pub const MAX_POINTS: i64 = 360;

/// Writes one sample of the swarm at `now`; returns the rows written.
/// Agents count as online as in the listings (`lost_after_ms`).
pub fn record(conn: &Connection, now: i64, lost_after_ms: i64) -> Result<usize> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO history (at, series, key, value) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut put = |series: &str, key: &str, value: f64| -> Result<()> {
        stmt.execute(params![now, series, key, value])?;
        Ok(())
    };
    let mut rows = 0;
    let mut swarm_rate = 0u64;
    for agent in state::list_agents(conn, now, lost_after_ms)? {
        if agent.state != "online" {
            continue;
        }
        let mut rate = 0u64;
        for id in &agent.running {
            rate += state::run(conn, *id)?.bytes_per_second;
        }
        swarm_rate += rate;
        put(series::AGENT_RATE, &agent.name, rate as f64)?;
        rows += 1;
        if let Some(celsius) = agent.telemetry.and_then(|t| t.temperature_celsius) {
            put(series::AGENT_TEMPERATURE, &agent.name, f64::from(celsius))?;
            rows += 1;
        }
    }
    put(series::SWARM_RATE, "", swarm_rate as f64)?;
    rows += 1;
    for rule in crate::household::current(conn)?.holding() {
        put(series::PAUSE, &rule.name, 1.0)?;
        rows += 1;
    }
    if state::swarm_paused(conn)? {
        put(series::PAUSE, OPERATOR, 1.0)?;
        rows += 1;
    }
    let mut by_kind = conn.prepare_cached(
        "SELECT kind, SUM(size) FROM versions WHERE state = 'landed' GROUP BY kind",
    )?;
    let kinds = by_kind
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (kind, bytes) in kinds {
        put(series::ARCHIVE_BYTES, &kind, bytes as f64)?;
        rows += 1;
    }
    Ok(rows)
}

/// Drops the rows older than `retention_ms` before `now`, then, while more
/// than `max_rows` remain, the oldest samples (whole samples, so no series
/// loses a point the others keep). Returns the rows dropped.
pub fn prune(conn: &Connection, now: i64, retention_ms: i64, max_rows: i64) -> Result<usize> {
    let mut dropped = conn.execute("DELETE FROM history WHERE at < ?1", [now - retention_ms])?;
    // The time of the newest row past the cap; every sample at or before it
    // goes.
    let cut: Option<i64> = conn
        .query_row(
            "SELECT at FROM history ORDER BY at DESC LIMIT 1 OFFSET ?1",
            [max_rows],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(cut) = cut {
        dropped += conn.execute("DELETE FROM history WHERE at <= ?1", [cut])?;
    }
    Ok(dropped)
}

/// Samples the swarm every `history-every` and prunes the table, until
/// aborted.
pub async fn sample_task(store: Arc<Store>, config: CommanderConfig) {
    let lost_after_ms = i64::try_from(config.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    let retention_ms = i64::try_from(config.history_retention.as_millis()).unwrap_or(i64::MAX);
    let mut ticker = tokio::time::interval(config.history_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let store = store.clone();
        let work = move || {
            let now = ark_core::unix_ms();
            store.tx(|tx| {
                let written = record(tx, now, lost_after_ms)?;
                let dropped = prune(tx, now, retention_ms, MAX_ROWS)?;
                Ok((written, dropped))
            })
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(Ok((written, dropped))) => {
                tracing::trace!(written, dropped, "history sampled");
            }
            Ok(Err(e)) => tracing::error!("sampling the history: {e}"),
            Err(e) => tracing::error!("history task: {e}"),
        }
    }
}

/// One point of a series: `[ms since the epoch, value]`.
pub type Point = (i64, f64);

/// `GET /api/history`: the window's series, ready to draw.
#[derive(Debug, Default, Serialize)]
pub struct History {
    pub now_ms: i64,
    /// The first sample shown: the window's start, or the oldest sample
    /// when the history is younger than the window.
    pub from_ms: i64,
    /// How often samples are taken, and how long they are kept.
    pub every_ms: i64,
    pub retention_ms: i64,
    /// What one point stands for (a mean over this many ms; `every_ms`
    /// while the window holds fewer than [`MAX_POINTS`] samples).
    pub bucket_ms: i64,
    pub swarm_rate: Vec<Point>,
    pub agents: Vec<AgentHistory>,
    pub archive: Vec<KindHistory>,
    /// When the swarm was held back, and by which rule, oldest first.
    pub pauses: Vec<Pause>,
    pub targets: Vec<TargetAge>,
}

#[derive(Debug, Default, Serialize)]
pub struct AgentHistory {
    pub name: String,
    /// Bytes/s.
    pub rate: Vec<Point>,
    /// °C (empty for a device without a sensor).
    pub temperature: Vec<Point>,
}

#[derive(Debug, Default, Serialize)]
pub struct KindHistory {
    pub kind: String,
    /// Bytes landed of the kind.
    pub bytes: Vec<Point>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Pause {
    /// The pause rule, or "" ([`OPERATOR`]) for the operator's pause.
    pub rule: String,
    /// The first sample that saw it, and the first that no longer did (or
    /// the last sample while it still holds).
    pub from_ms: i64,
    pub to_ms: i64,
    pub ongoing: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct TargetAge {
    pub name: String,
    pub kind: String,
    /// Since its newest version was last confirmed current (see
    /// [`state::target_age_ms`]).
    pub age_ms: i64,
    pub max_age_ms: u64,
    /// Why it is stale ("" when it is not).
    pub stale: String,
}

/// Reads the last `window_ms` of history at `now`; the sampling interval
/// and retention are passed on for the page, the maximum age is the one of
/// targets that set none (`max-age`).
pub fn read(
    conn: &Connection,
    now: i64,
    window_ms: i64,
    (every_ms, retention_ms, max_age_ms): (i64, i64, u64),
) -> Result<History> {
    let oldest: Option<i64> = conn.query_row(
        "SELECT MIN(at) FROM history WHERE at >= ?1",
        [now - window_ms],
        |r| r.get(0),
    )?;
    let from_ms = oldest.unwrap_or(now);
    let bucket_ms = ((now - from_ms) / MAX_POINTS + 1).max(every_ms).max(1);
    let mut stmt = conn.prepare(
        "SELECT series, key, (at - ?1) / ?2 AS bucket, MAX(at), AVG(value) FROM history
         WHERE at >= ?1 GROUP BY series, key, bucket ORDER BY series, key, bucket",
    )?;
    let rows = stmt.query_map(params![from_ms, bucket_ms], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            (r.get::<_, i64>(3)?, r.get::<_, f64>(4)?),
        ))
    })?;
    let mut history = History {
        now_ms: now,
        from_ms,
        every_ms,
        retention_ms,
        bucket_ms,
        ..History::default()
    };
    let mut agents: BTreeMap<String, AgentHistory> = BTreeMap::new();
    let mut kinds: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    // Rule -> the buckets in which it held.
    let mut held: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    // Bucket -> its time, from the swarm's series (written at every sample).
    let mut timeline: Vec<(i64, i64)> = Vec::new();
    for row in rows {
        let (name, key, bucket, point) = row?;
        match name.as_str() {
            series::SWARM_RATE => {
                timeline.push((bucket, point.0));
                history.swarm_rate.push(point);
            }
            series::AGENT_RATE => agent_entry(&mut agents, &key).rate.push(point),
            series::AGENT_TEMPERATURE => agent_entry(&mut agents, &key).temperature.push(point),
            series::ARCHIVE_BYTES => kinds.entry(key).or_default().push(point),
            series::PAUSE => held.entry(key).or_default().push(bucket),
            _ => {}
        }
    }
    history.agents = agents.into_values().collect();
    history.archive = kinds
        .into_iter()
        .map(|(kind, bytes)| KindHistory { kind, bytes })
        .collect();
    history.pauses = periods(&timeline, &held);
    history.targets = state::list_targets(conn, now, max_age_ms)?
        .into_iter()
        .map(|t| TargetAge {
            age_ms: state::target_age_ms(&t, now),
            max_age_ms: t.max_age_ms,
            name: t.name,
            kind: t.kind,
            stale: t.stale,
        })
        .collect();
    Ok(history)
}

fn agent_entry<'a>(
    agents: &'a mut BTreeMap<String, AgentHistory>,
    name: &str,
) -> &'a mut AgentHistory {
    agents
        .entry(name.to_string())
        .or_insert_with(|| AgentHistory {
            name: name.to_string(),
            ..AgentHistory::default()
        })
}

/// The pause periods: for each rule, each run of consecutive timeline
/// buckets in which it held, from the first of them to the first bucket
/// after that no longer saw it (the last one while it still holds).
fn periods(timeline: &[(i64, i64)], held: &BTreeMap<String, Vec<i64>>) -> Vec<Pause> {
    let mut pauses = Vec::new();
    for (rule, buckets) in held {
        let mut open: Option<i64> = None;
        for (bucket, at) in timeline {
            let holds = buckets.binary_search(bucket).is_ok();
            match (open, holds) {
                (None, true) => open = Some(*at),
                (Some(from_ms), false) => {
                    pauses.push(Pause {
                        rule: rule.clone(),
                        from_ms,
                        to_ms: *at,
                        ongoing: false,
                    });
                    open = None;
                }
                _ => {}
            }
        }
        if let (Some(from_ms), Some((_, last))) = (open, timeline.last()) {
            pauses.push(Pause {
                rule: rule.clone(),
                from_ms,
                to_ms: *last,
                ongoing: true,
            });
        }
    }
    pauses.sort_by_key(|p| p.from_ms);
    pauses
}

/// Reads `?hours=N` as a window in ms: at least one sample, at most the
/// retention (a fraction such as 0.5 is half an hour).
pub fn window_ms(hours: f64, retention_ms: i64) -> Result<i64> {
    if !hours.is_finite() || hours <= 0.0 {
        return Err(CommanderError::Invalid(format!(
            "hours={hours}: give a positive number of hours (the history keeps {})",
            humantime::format_duration(Duration::from_millis(retention_ms as u64))
        )));
    }
    Ok(((hours * 3_600_000.0) as i64).min(retention_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(&dir.join("state.sqlite")).expect("open")
    }

    fn rows(store: &Store) -> i64 {
        store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM history", [], |r| r.get(0))?))
            .expect("count")
    }

    /// Samples at `times` (ms) with the swarm paused by the operator at
    /// the ones `paused` says.
    fn sample_at(store: &Store, times: impl IntoIterator<Item = (i64, bool)>) {
        for (at, paused) in times {
            store
                .tx(|tx| {
                    state::set_paused(tx, "", paused, at)?;
                    record(tx, at, 1000)?;
                    Ok(())
                })
                .expect("record");
        }
    }

    #[test]
    fn the_history_is_pruned_by_age_and_by_rows_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path();
        {
            let store = store(path);
            sample_at(&store, (0..10).map(|i| (1_000 * i, false)));
            // An empty swarm writes its aggregate rate alone: one row each.
            assert_eq!(rows(&store), 10);
            let dropped = store
                .tx(|tx| prune(tx, 9_000, 4_000, MAX_ROWS))
                .expect("prune");
            assert_eq!(dropped, 5, "samples before 5 s are past a 4 s retention");
            let dropped = store.tx(|tx| prune(tx, 9_000, 4_000, 3)).expect("prune");
            assert_eq!(dropped, 2, "the cap keeps the newest 3 rows");
        }
        // A new commander on the same file sees what the old one kept.
        let store = store(path);
        assert_eq!(rows(&store), 3);
        let history = store
            .read(|c| read(c, 9_500, 3_600_000, (1_000, 4_000, 0)))
            .expect("read");
        let times: Vec<i64> = history.swarm_rate.iter().map(|p| p.0).collect();
        assert_eq!(times, vec![7_000, 8_000, 9_000]);
        assert_eq!(history.from_ms, 7_000);
    }

    #[test]
    fn pause_periods_run_from_the_first_sample_that_saw_them_to_the_first_that_did_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let paused = [false, true, true, false, false, true];
        sample_at(
            &store,
            paused
                .iter()
                .enumerate()
                .map(|(i, p)| (1_000 * i as i64, *p)),
        );
        let history = store
            .read(|c| read(c, 5_000, 3_600_000, (1_000, 3_600_000, 0)))
            .expect("read");
        assert_eq!(
            history.pauses,
            vec![
                Pause {
                    rule: OPERATOR.into(),
                    from_ms: 1_000,
                    to_ms: 3_000,
                    ongoing: false
                },
                Pause {
                    rule: OPERATOR.into(),
                    from_ms: 5_000,
                    to_ms: 5_000,
                    ongoing: true
                },
            ]
        );
    }

    #[test]
    fn a_long_window_is_averaged_into_at_most_max_points() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let n = MAX_POINTS * 3;
        sample_at(&store, (0..n).map(|i| (1_000 * i, false)));
        let history = store
            .read(|c| read(c, 1_000 * (n - 1), i64::MAX / 2, (1_000, i64::MAX, 0)))
            .expect("read");
        let points = history.swarm_rate.len() as i64;
        assert!(
            (MAX_POINTS / 2..=MAX_POINTS).contains(&points),
            "{points} points"
        );
        assert_eq!(
            history.swarm_rate.last().map(|p| p.0),
            Some(1_000 * (n - 1)),
            "the newest sample ends the series"
        );
    }

    #[test]
    fn a_window_is_positive_and_no_longer_than_the_retention() {
        assert_eq!(window_ms(0.5, i64::MAX).expect("half"), 1_800_000);
        assert_eq!(window_ms(48.0, 3_600_000).expect("capped"), 3_600_000);
        for bad in [0.0, -1.0, f64::NAN] {
            assert!(window_ms(bad, 3_600_000).is_err(), "{bad}");
        }
    }
}
