//! `GET /metrics`: the Prometheus text format (0.0.4), computed from the
//! state database at scrape time. Nothing elsewhere in the commander counts
//! anything for it, so a restart loses no counter: every `_total` is a
//! count of durable rows (versions, runs, events), monotonic as long as the
//! ledger and the event log are (pruning a version keeps its row).
//!
//! What is measured:
//! - `ark_agents{state}`: agents online / lost / enrolled (never seen).
//! - `ark_runs{state,kind}`: runs by state and kind.
//! - `ark_bytes_harvested_total`: bytes of every version that landed from
//!   an upload (pruned ones included).
//! - `ark_bytes_deduplicated_total`: bytes not uploaded because the archive
//!   held them: versions landed as a hard link, plus runs that ended
//!   `unchanged` with a size (same bytes as the latest version).
//! - `ark_verification_failures_total{reason}`: refused deliveries
//!   (`verification_failed`), cut uploads and refused manifests, by class.
//! - `ark_lease_expiries_total`.
//! - `ark_landing_seconds`: a version's landing, from its ledger row
//!   (intent) to `landed` (fsync, rename, ledger).
//! - `ark_target_age_seconds{target,kind}`, `ark_targets_stale`: freshness
//!   (see `crate::state::list_targets`).
//! - `ark_swarm_yielding`, `ark_pause_rule_holding{rule}`,
//!   `ark_pause_rule_unreadable{rule}`: yielding to the household.
//! - `ark_upload_seconds`: for versions landed from an upload, from the
//!   grant of the lease that delivered them to the moment the verified
//!   upload was in quarantine and landing began: the agent's harvest plus
//!   the verified transfer, as one user-visible duration.

use std::collections::BTreeMap;
use std::fmt::Write;

use rusqlite::Connection;

use crate::Result;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Landing is fsyncs and a rename: milliseconds, seconds on a slow NAS.
const LANDING_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Harvest and upload: a feed in a second, a ZIM over Wi-Fi in an hour.
const UPLOAD_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

/// Every metric family `/metrics` serves.
pub const FAMILIES: &[&str] = &[
    "ark_agents",
    "ark_runs",
    "ark_bytes_harvested_total",
    "ark_bytes_deduplicated_total",
    "ark_verification_failures_total",
    "ark_lease_expiries_total",
    "ark_landing_seconds",
    "ark_upload_seconds",
    "ark_agent_suspect",
    "ark_agent_confirmed_total",
    "ark_agent_disputes_lost_total",
    "ark_agent_spot_checks_failed_total",
    "ark_target_age_seconds",
    "ark_targets_stale",
    "ark_swarm_yielding",
    "ark_pause_rule_holding",
    "ark_pause_rule_unreadable",
];

/// The classes of `ark_verification_failures_total{reason}`: few and fixed,
/// so a hostile origin cannot mint label values.
pub const FAILURE_CLASSES: &[&str] = &["zim", "feed", "git", "digest", "cut", "manifest", "other"];

/// The class of a failure event (kind and message as recorded by
/// `commander/src/upload.rs` and the scheduler).
pub fn failure_class(kind: &str, message: &str) -> &'static str {
    match kind {
        "upload_cut" => "cut",
        "manifest_refused" => "manifest",
        _ if message.contains("ZIM check") => "zim",
        _ if message.contains("feed check") => "feed",
        _ if message.contains("git check") => "git",
        _ if message.contains(" of the upload is ") => "digest",
        _ => "other",
    }
}

/// Renders every metric from the database.
///
/// Long by design: one short block per metric family, in the order the
/// exposition prints them.
pub fn render(
    conn: &Connection,
    now: i64,
    (lost_after_ms, max_age_ms): (i64, u64),
) -> Result<String> {
    let mut out = String::new();

    // Freshness, per target (names are the operator's, validated at add).
    let targets = crate::state::list_targets(conn, now, max_age_ms)?;
    header(&mut out, "ark_target_age_seconds", "gauge", "Seconds since the target's newest version was last confirmed current (landed or checked unchanged); since it was added when never.");
    for t in &targets {
        sample(
            &mut out,
            "ark_target_age_seconds",
            &[("target", &t.name), ("kind", &t.kind)],
            (crate::state::target_age_ms(t, now) / 1000) as f64,
        );
    }
    header(
        &mut out,
        "ark_targets_stale",
        "gauge",
        "Targets past their maximum age, or whose last runs all failed.",
    );
    let stale = targets.iter().filter(|t| !t.stale.is_empty()).count();
    sample(&mut out, "ark_targets_stale", &[], stale as f64);

    // Yielding to the household (rule names are the operator's).
    let yielded = crate::household::current(conn)?;
    let yielding = f64::from(u8::from(!yielded.holding().is_empty()));
    header(
        &mut out,
        "ark_swarm_yielding",
        "gauge",
        "1 while a [[pause_when]] rule holds: no new work, transfers at the floor rate.",
    );
    sample(&mut out, "ark_swarm_yielding", &[], yielding);
    header(
        &mut out,
        "ark_pause_rule_holding",
        "gauge",
        "1 while the pause rule holds (or is within its hold-down).",
    );
    for r in &yielded.rules {
        sample(
            &mut out,
            "ark_pause_rule_holding",
            &[("rule", &r.name)],
            f64::from(u8::from(r.holding)),
        );
    }
    header(
        &mut out,
        "ark_pause_rule_unreadable",
        "gauge",
        "1 while the pause rule's source cannot be read.",
    );
    for r in &yielded.rules {
        sample(
            &mut out,
            "ark_pause_rule_unreadable",
            &[("rule", &r.name)],
            f64::from(u8::from(!r.error.is_empty())),
        );
    }

    let mut agents: BTreeMap<&str, u64> = ["online", "lost", "enrolled", "revoked"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    let listed = crate::state::list_agents(conn, now, lost_after_ms)?;
    for agent in &listed {
        if let Some(n) = agents.get_mut(agent.state.as_str()) {
            *n += 1;
        }
    }
    header(&mut out, "ark_agents", "gauge", "Agents by state.");
    for (state, n) in agents {
        sample(&mut out, "ark_agents", &[("state", state)], n as f64);
    }
    // Trust, per agent (names are the operator's, validated at enrolment).
    type Measure = fn(&ark_proto::Trust) -> f64;
    let trust: [(&str, &str, &str, Measure); 4] = [
        ("ark_agent_suspect", "gauge", "1 when the agent is suspect (lost a dispute or failed a spot check) until an operator clears it.", |t| f64::from(u8::from(!t.suspect.is_empty()))),
        ("ark_agent_confirmed_total", "counter", "Harvests of the agent another agent independently confirmed.", |t| t.confirmed as f64),
        ("ark_agent_disputes_lost_total", "counter", "Quorum disputes the agent was outvoted in.", |t| t.disputes_lost as f64),
        ("ark_agent_spot_checks_failed_total", "counter", "Commander spot checks the agent's uploads failed.", |t| t.spot_checks_failed as f64),
    ];
    for (name, kind, help, measure) in trust {
        header(&mut out, name, kind, help);
        for agent in &listed {
            let t = agent.trust.clone().unwrap_or_default();
            sample(&mut out, name, &[("agent", &agent.name)], measure(&t));
        }
    }

    header(&mut out, "ark_runs", "gauge", "Runs by state and kind.");
    let mut stmt =
        conn.prepare("SELECT state, kind, COUNT(*) FROM runs GROUP BY state, kind ORDER BY 1, 2")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (state, kind, n) = row?;
        sample(
            &mut out,
            "ark_runs",
            &[("state", state.as_str()), ("kind", kind.as_str())],
            n as f64,
        );
    }

    let harvested: i64 = conn.query_row(
        "SELECT COALESCE(SUM(size), 0) FROM versions
         WHERE landed_at IS NOT NULL AND source = 'upload'",
        [],
        |r| r.get(0),
    )?;
    header(
        &mut out,
        "ark_bytes_harvested_total",
        "counter",
        "Bytes landed from verified uploads.",
    );
    sample(&mut out, "ark_bytes_harvested_total", &[], harvested as f64);

    let deduplicated: i64 = conn.query_row(
        "SELECT (SELECT COALESCE(SUM(size), 0) FROM versions
                 WHERE landed_at IS NOT NULL AND source = 'link')
              + (SELECT COALESCE(SUM(size_bytes), 0) FROM runs
                 WHERE state = 'unchanged' AND size_bytes > 0)",
        [],
        |r| r.get(0),
    )?;
    header(
        &mut out,
        "ark_bytes_deduplicated_total",
        "counter",
        "Bytes not uploaded because the archive already held them.",
    );
    sample(
        &mut out,
        "ark_bytes_deduplicated_total",
        &[],
        deduplicated as f64,
    );

    let mut failures: BTreeMap<&str, u64> = FAILURE_CLASSES.iter().map(|c| (*c, 0)).collect();
    let mut stmt = conn.prepare(
        "SELECT kind, message FROM events
         WHERE kind IN ('verification_failed', 'upload_cut', 'manifest_refused')",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (kind, message) = row?;
        *failures.entry(failure_class(&kind, &message)).or_default() += 1;
    }
    header(
        &mut out,
        "ark_verification_failures_total",
        "counter",
        "Deliveries the commander refused: failed checks, cut uploads, refused manifests.",
    );
    for (reason, n) in failures {
        sample(
            &mut out,
            "ark_verification_failures_total",
            &[("reason", reason)],
            n as f64,
        );
    }

    let expiries: i64 = conn.query_row(
        "SELECT COUNT(*) FROM events WHERE kind = 'lease_expired'",
        [],
        |r| r.get(0),
    )?;
    header(
        &mut out,
        "ark_lease_expiries_total",
        "counter",
        "Leases that expired (an agent went silent).",
    );
    sample(&mut out, "ark_lease_expiries_total", &[], expiries as f64);

    let landing = durations(
        conn,
        "SELECT landed_at - created_at FROM versions WHERE landed_at IS NOT NULL",
    )?;
    histogram(
        &mut out,
        "ark_landing_seconds",
        "Landing a verified version: ledger intent to landed.",
        LANDING_BUCKETS,
        &landing,
    );
    let upload = durations(
        conn,
        "SELECT v.created_at - (SELECT MAX(l.granted_at) FROM leases l
                                WHERE l.run_id = v.run_id AND l.granted_at <= v.created_at)
         FROM versions v WHERE v.landed_at IS NOT NULL AND v.source = 'upload'",
    )?;
    histogram(
        &mut out,
        "ark_upload_seconds",
        "Harvest and verified upload: lease grant to the upload verified in quarantine.",
        UPLOAD_BUCKETS,
        &upload,
    );
    Ok(out)
}

/// The non-negative durations (ms in the database) a query yields, in s.
fn durations(conn: &Connection, sql: &str) -> Result<Vec<f64>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, Option<i64>>(0))?;
    let mut seconds = Vec::new();
    for row in rows {
        if let Some(ms) = row? {
            seconds.push(ms.max(0) as f64 / 1000.0);
        }
    }
    Ok(seconds)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the text format wants it: `\`, `"` and newline escaped.
pub fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn histogram(out: &mut String, name: &str, help: &str, buckets: &[f64], values: &[f64]) {
    header(out, name, "histogram", help);
    let bucket = format!("{name}_bucket");
    for le in buckets {
        let n = values.iter().filter(|v| **v <= *le).count();
        sample(out, &bucket, &[("le", le.to_string().as_str())], n as f64);
    }
    sample(out, &bucket, &[("le", "+Inf")], values.len() as f64);
    sample(out, &format!("{name}_sum"), &[], values.iter().sum::<f64>());
    sample(out, &format!("{name}_count"), &[], values.len() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("plain"), "plain");
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
        let mut out = String::new();
        sample(&mut out, "m", &[("kind", "x\"y"), ("state", "a\\b")], 3.0);
        assert_eq!(out, "m{kind=\"x\\\"y\",state=\"a\\\\b\"} 3\n");
    }

    #[test]
    fn failures_fall_into_the_fixed_classes() {
        let cases = [
            (
                "upload_cut",
                "upload from a cut at byte 0 of 10: tree",
                "cut",
            ),
            (
                "manifest_refused",
                "manifest from a refused: bad",
                "manifest",
            ),
            (
                "verification_failed",
                "the commander's ZIM check refused http://x/a.zim: checksum",
                "zim",
            ),
            (
                "verification_failed",
                "the commander's feed check refused http://x/f: not a feed",
                "feed",
            ),
            (
                "verification_failed",
                "the commander's git check refused http://x/r.git: missing",
                "git",
            ),
            (
                "verification_failed",
                "SHA256 of the upload is ab, the agent reported cd from x",
                "digest",
            ),
            ("verification_failed", "something new", "other"),
        ];
        for (kind, message, class) in cases {
            assert_eq!(failure_class(kind, message), class, "{message}");
            assert!(FAILURE_CLASSES.contains(&class));
        }
    }

    #[test]
    fn histograms_are_cumulative() {
        let mut out = String::new();
        histogram(&mut out, "h", "help", &[1.0, 2.0], &[0.5, 1.0, 1.5, 7.0]);
        let expected = "# HELP h help\n# TYPE h histogram\n\
                        h_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 3\nh_bucket{le=\"+Inf\"} 4\n\
                        h_sum 10\nh_count 4\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn an_empty_state_renders_every_family() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::state::Store::open(&dir.path().join("state.sqlite")).expect("open");
        let text = store.read(|c| render(c, 0, (1000, 0))).expect("render");
        for family in FAMILIES {
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        }
        assert!(text.contains("ark_agents{state=\"online\"} 0\n"));
        assert!(text.contains("ark_verification_failures_total{reason=\"zim\"} 0\n"));
        assert!(text.contains("ark_landing_seconds_count 0\n"));
    }
}
