//! Granting leases: which queued runs an agent with free slots gets, and
//! what goes with each job (the kind says: its size limit, validators,
//! what the landed state holds; the destinations it may reach).

use super::*;

impl Scheduler {
    pub(super) fn grant(
        &self,
        tx: &Connection,
        agent: &str,
        free_slots: u32,
        now: i64,
    ) -> Result<Vec<Lease>> {
        if free_slots == 0 {
            return Ok(Vec::new());
        }
        let kinds = state::capabilities(tx, agent)?
            .map(|c| c.kinds)
            .unwrap_or_else(|| vec![ark_core::Kind::File.to_string()]);
        let ttl = self.ttl();
        let candidates = queued(tx, agent, now, ttl)?;
        let mut leases = Vec::new();
        for (run, target, kind, url, attempts, generation, group) in candidates {
            if leases.len() as u32 >= free_slots {
                break;
            }
            if !kinds.contains(&kind) {
                continue;
            }
            let settings = state::target_job_settings(tx, &target)?;
            if !crate::window::open_at(&settings.window, now) {
                continue; // waits, queued, for its off-peak hours
            }
            // Trust: a quorum member goes to an agent that has no other
            // part in its group; a suspect agent's harvest is never the
            // only word on a version.
            match group {
                Some(group) => {
                    if !self.may_join(tx, group, run, agent, now)? {
                        continue;
                    }
                }
                None => match self.needs_confirmation(tx, &target, &kind, agent)? {
                    Some(why) => {
                        self.open_group(tx, run, &target, 2, now)?;
                        event(tx, now, Some(run), Some(agent), "quorum", &why)?;
                    }
                    None if quorum::is_suspect(tx, agent)? => continue,
                    None => {}
                },
            }
            let generation = generation + 1;
            tx.execute(
                "UPDATE runs SET state = 'leased', generation = ?1 WHERE id = ?2",
                params![generation, run],
            )?;
            tx.execute(
                "INSERT INTO leases (run_id, generation, agent, granted_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run, generation, agent, now, now + ttl],
            )?;
            event(
                tx,
                now,
                Some(run),
                Some(agent),
                "leased",
                &format!("lease {generation} granted (attempt {})", attempts + 1),
            )?;
            // The kind says what goes with the job: its size limit,
            // whether the target's validators apply (never an enclosure's:
            // they belong to the feed), what the landed state holds.
            let spec = crate::kinds::of(&kind);
            let max_size = spec.job_max_size(settings.max_size);
            let (etag, last_modified) = match spec.conditional() {
                true => (settings.etag, settings.last_modified),
                false => Default::default(),
            };
            let known_refs = spec.known_refs(self.archive_root.as_deref(), &url);
            leases.push(Lease {
                run_id: run,
                generation: generation as u64,
                ttl_ms: ttl as u64,
                attempt: attempts + 1,
                job: Some(Job {
                    own_origin: own_origin(tx, &target)?,
                    target,
                    kind,
                    url,
                    etag,
                    last_modified,
                    bandwidth_cap: settings.bandwidth_cap,
                    max_size,
                    known_refs,
                    fetch_allow: self.config.fetch.allow.clone(),
                    commander_endpoints: self.own_endpoints.clone(),
                }),
            });
        }
        Ok(leases)
    }
}

/// The origin (`host:port`) of the URL the operator gave `target`: the one
/// household address its jobs may reach without a `fetch.allow` entry.
pub(super) fn own_origin(tx: &Connection, target: &str) -> Result<String> {
    let url: Option<String> = tx
        .query_row("SELECT url FROM targets WHERE name = ?1", [target], |r| {
            r.get(0)
        })
        .optional()?;
    let parsed = url.as_deref().and_then(url_parse_origin);
    Ok(parsed.unwrap_or_default())
}

/// `host:port` of an http(s) or git URL (default ports filled in).
pub(super) fn url_parse_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?.to_ascii_lowercase();
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        return Some(authority);
    }
    let port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        "git" => 9418,
        _ => return None,
    };
    Some(format!("{authority}:{port}"))
}

/// A queued run: id, target, kind, url, attempts, generation, quorum group.
type Queued = (i64, String, String, String, u32, i64, Option<i64>);

/// The queued runs that are due, oldest first; a run that just failed on
/// `agent` waits one TTL before it may go back to it (another agent first).
fn queued(tx: &Connection, agent: &str, now: i64, ttl: i64) -> Result<Vec<Queued>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, target, kind, url, attempts, generation, quorum_group FROM runs
             WHERE state = 'queued' AND not_before <= ?1
               AND (last_agent IS NULL OR last_agent != ?2 OR not_before + ?3 <= ?1)
             ORDER BY not_before, id",
    )?;
    let rows = stmt.query_map(params![now, agent, ttl], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
