//! Agents and their enrolment tokens in the store: redeeming a token,
//! identities by certificate, capabilities, the operator's settings, the
//! listing.

use std::collections::HashMap;

use super::*;

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

/// Records an enrolled agent (or replaces a re-enrolled one's certificate).
pub fn enroll_agent(conn: &Connection, name: &str, cert_sha256: &str, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO agents (name, cert_sha256, enrolled_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET cert_sha256 = excluded.cert_sha256, enrolled_at = excluded.enrolled_at,
           revoked_at = NULL",
        params![name, cert_sha256, now],
    )?;
    Ok(())
}

pub fn agent_by_cert(conn: &Connection, cert_sha256: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT name FROM agents WHERE cert_sha256 = ?1 AND revoked_at IS NULL",
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

/// The device class an agent's capabilities declare: its own word
/// (`device-class` in agent.toml), else "<arch>-<os>".
pub fn device_class(c: &ark_proto::Capabilities) -> String {
    if c.device_class.is_empty() {
        format!("{}-{}", c.arch, c.os)
    } else {
        c.device_class.clone()
    }
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

/// The operator's settings for agent `name`: (bandwidth cap, window,
/// self-yield on).
pub fn agent_settings(conn: &Connection, name: &str) -> Result<(u64, String, bool)> {
    Ok(conn
        .query_row(
            "SELECT bandwidth_cap, window, self_yield FROM agents WHERE name = ?1",
            [name],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .unwrap_or((0, String::new(), true)))
}

/// The uplink an agent's capabilities declare (`uplink` in agent.toml),
/// "home" when it names none: one household, one uplink.
pub fn uplink(c: &ark_proto::Capabilities) -> &str {
    if c.uplink.is_empty() {
        "home"
    } else {
        &c.uplink
    }
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

/// Sets an agent's placement settings (None: unchanged): whether it may
/// work on battery ("allow", "deny", "" = the commander's default) and its
/// temperature cap (0 = the commander's).
pub fn set_agent_placement(
    conn: &Connection,
    name: &str,
    on_battery: Option<&str>,
    max_temp: Option<f32>,
) -> Result<()> {
    if let Some(policy) = on_battery {
        conn.execute(
            "UPDATE agents SET on_battery = ?2 WHERE name = ?1",
            params![name, policy],
        )?;
    }
    if let Some(cap) = max_temp {
        conn.execute(
            "UPDATE agents SET max_temp = ?2 WHERE name = ?1",
            params![name, f64::from(cap)],
        )?;
    }
    Ok(())
}

/// Turns an agent's self-yield on or off (`agent set NAME --yield`).
pub fn set_agent_self_yield(conn: &Connection, name: &str, on: bool) -> Result<()> {
    conn.execute(
        "UPDATE agents SET self_yield = ?2 WHERE name = ?1",
        params![name, on],
    )?;
    Ok(())
}

/// Folds a progress report's rate into what `agent` achieves from `host`
/// (an exponentially weighted mean, the newest report weighing 1/4).
pub fn record_throughput(
    conn: &Connection,
    agent: &str,
    host: &str,
    bytes_per_second: u64,
    now: i64,
) -> Result<()> {
    if bytes_per_second == 0 || host.is_empty() {
        return Ok(());
    }
    conn.execute(
        "INSERT INTO throughput (agent, host, bytes_per_second, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (agent, host) DO UPDATE SET
           bytes_per_second = (3 * bytes_per_second + excluded.bytes_per_second) / 4,
           updated_at = excluded.updated_at",
        params![agent, host, bytes_per_second as i64, now],
    )?;
    Ok(())
}

/// Per agent: the bytes/s it achieved from each origin host.
pub type Throughputs = HashMap<String, HashMap<String, u64>>;

/// What each agent achieved from each host (bytes/s), in one read.
pub fn all_throughputs(conn: &Connection) -> Result<Throughputs> {
    let mut out = Throughputs::default();
    let mut stmt = conn.prepare_cached("SELECT agent, host, bytes_per_second FROM throughput")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (agent, host, rate) = row?;
        out.entry(agent)
            .or_default()
            .insert(host, rate.max(0) as u64);
    }
    Ok(out)
}

/// Lists agents; `lost_after` decides who counts as online.
pub fn list_agents(
    conn: &Connection,
    now: i64,
    lost_after_ms: i64,
) -> Result<Vec<ark_proto::AgentInfo>> {
    let mut stmt = conn.prepare(
        "SELECT name, enrolled_at, last_seen, paused, capabilities, telemetry, bandwidth_cap, window,
                confirmed, disputes_lost, spot_failed, suspect, revoked_at, on_battery, max_temp,
                self_yield
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
            ark_proto::Trust {
                confirmed: r.get::<_, i64>(8)? as u64,
                disputes_lost: r.get::<_, i64>(9)? as u64,
                spot_checks_failed: r.get::<_, i64>(10)? as u64,
                suspect: r.get(11)?,
                revoked_at_ms: r.get::<_, Option<i64>>(12)?.unwrap_or(0),
            },
            (
                r.get::<_, String>(13)?,
                r.get::<_, f64>(14)? as f32,
                r.get::<_, bool>(15)?,
            ),
        ))
    })?;
    // Every agent's running jobs in one read, not one per agent.
    let mut running: HashMap<String, Vec<i64>> = HashMap::new();
    let mut leases = conn.prepare_cached(
        "SELECT agent, run_id FROM leases WHERE ended_at IS NULL ORDER BY agent, run_id",
    )?;
    for lease in leases.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))? {
        let (agent, run) = lease?;
        running.entry(agent).or_default().push(run);
    }
    let mut agents = Vec::new();
    for row in rows {
        let (
            name,
            enrolled_at,
            last_seen,
            paused,
            caps,
            telemetry,
            bandwidth_cap,
            window,
            trust,
            (on_battery, max_temp, self_yield),
        ) = row?;
        let state = match last_seen {
            _ if trust.revoked_at_ms != 0 => "revoked",
            None => "enrolled",
            Some(seen) if now - seen <= lost_after_ms => "online",
            Some(_) => "lost",
        };
        let running = running.remove(&name).unwrap_or_default();
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
            trust: Some(trust),
            on_battery,
            max_temp,
            self_yield,
        });
    }
    Ok(agents)
}

/// Cuts `name` off: its certificate is refused from its next call (every
/// call looks the certificate up here), its open leases end and their runs
/// go back to the queue at once (no attempt counted: the harvest did not
/// fail), and whatever it sent that has not landed is withdrawn — its
/// uploads and its quorum votes, their runs queued again for other agents.
/// With `remove` the agent is forgotten too (`agent rm`). Returns the runs
/// whose quarantined bytes must go.
pub fn revoke_agent(conn: &Connection, name: &str, remove: bool, now: i64) -> Result<Vec<i64>> {
    if !agent_exists(conn, name)? {
        return Err(CommanderError::NotFound(format!(
            "no agent named {name:?} (see `ark-commander agents`)"
        )));
    }
    conn.execute(
        "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?2) WHERE name = ?1",
        params![name, now],
    )?;
    let ids = |sql: &str| -> Result<Vec<i64>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([name], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    };
    let mut runs = ids("SELECT run_id FROM leases WHERE agent = ?1 AND ended_at IS NULL")?;
    runs.extend(ids("SELECT run_id FROM uploads WHERE agent = ?1")?);
    runs.extend(ids(
        "SELECT v.run_id FROM votes v JOIN runs r ON r.id = v.run_id
         WHERE v.agent = ?1 AND r.state IN ('queued', 'leased', 'awaiting_quorum', 'disputed')",
    )?);
    runs.sort_unstable();
    runs.dedup();
    let why = format!(
        "agent {name} was revoked: what it sent is withdrawn, the run is queued for another agent"
    );
    for run in &runs {
        conn.execute(
            "UPDATE leases SET ended_at = ?2, outcome = 'revoked' WHERE run_id = ?1 AND ended_at IS NULL",
            params![run, now],
        )?;
        conn.execute("DELETE FROM uploads WHERE run_id = ?1", [run])?;
        conn.execute("DELETE FROM votes WHERE run_id = ?1", [run])?;
        conn.execute(
            "UPDATE runs SET state = 'queued', not_before = ?2, reason = ?3, last_agent = ?4
             WHERE id = ?1 AND state IN ('queued', 'leased', 'awaiting_quorum', 'disputed')",
            params![run, now, why, name],
        )?;
        event(conn, now, Some(*run), Some(name), "revoked", &why)?;
    }
    if remove {
        conn.execute("DELETE FROM agents WHERE name = ?1", [name])?;
        conn.execute("DELETE FROM streaks WHERE agent = ?1", [name])?;
    }
    event(
        conn,
        now,
        None,
        Some(name),
        if remove { "removed" } else { "revoked" },
        &format!(
            "certificate refused from now on; {} run(s) withdrawn and queued again{}",
            runs.len(),
            if remove {
                "; the agent is forgotten (enrol again with a new token)"
            } else {
                ""
            }
        ),
    )?;
    Ok(runs)
}

/// Whether `name` still speaks with certificate `cert_sha256` (enrolled,
/// not revoked, not re-enrolled with another): checked in the ledger step
/// that lands what it sent.
pub fn still_trusted(conn: &Connection, name: &str, cert_sha256: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM agents WHERE name = ?1 AND cert_sha256 = ?2 AND revoked_at IS NULL",
            params![name, cert_sha256],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}
