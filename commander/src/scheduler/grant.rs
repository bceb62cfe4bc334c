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
        let candidates = queued(tx, agent, &kinds, (now, ttl))?;
        // Read only when a run is there to place.
        let mut swarm: Option<Vec<placement::Candidate>> = None;
        let mut declined = 0;
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
            // Placement: the agent expected to finish soonest among those
            // that may take it (see placement.rs); explained on the run.
            let swarm = match &mut swarm {
                Some(swarm) => swarm,
                None => swarm.insert(self.swarm(tx, agent, now)?),
            };
            let Some(placed) = self.place(tx, swarm, (run, &target, &kind, &url), agent, now)?
            else {
                // Another agent is better placed, or this one may not take
                // it: what holds for these runs mostly holds for the next,
                // so a heartbeat weighs only so many before it stops.
                declined += 1;
                if declined >= placement::DECLINED_PER_HEARTBEAT {
                    break;
                }
                continue;
            };
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
            event(tx, now, Some(run), Some(agent), "placed", &placed)?;
            if let Some(me) = swarm.iter_mut().find(|c| c.info.name == agent) {
                me.info.running.push(run);
            }
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

impl Scheduler {
    /// `f` of every agent as placement sees it: a snapshot at most
    /// [`placement::SNAPSHOT_MS`] old, kept in `cache` (placement and the
    /// uplink budgets keep their own, so one does not age the other's).
    pub(super) fn snapshot<T>(
        &self,
        cache: &std::sync::Mutex<Option<placement::Snapshot>>,
        tx: &Connection,
        now: i64,
        f: impl FnOnce(&[placement::Candidate]) -> T,
    ) -> Result<T> {
        let mut cached = cache.lock().unwrap_or_else(|p| p.into_inner());
        match cached.as_ref() {
            Some((at, swarm)) if now - at < placement::SNAPSHOT_MS && now >= *at => Ok(f(swarm)),
            _ => {
                let fresh: Vec<placement::Candidate> = state::list_agents(tx, now, self.ttl())?
                    .into_iter()
                    .filter(|a| a.state != "revoked")
                    .map(|info| placement::Candidate {
                        window_open: crate::window::open_at(&info.window, now),
                        info,
                        rate: (None, None),
                    })
                    .collect();
                let out = f(&fresh);
                *cached = Some((now, fresh));
                Ok(out)
            }
        }
    }

    /// Every agent as placement sees it ([`Self::snapshot`]), with
    /// `agent`'s own running jobs counted now.
    fn swarm(&self, tx: &Connection, agent: &str, now: i64) -> Result<Vec<placement::Candidate>> {
        let mut swarm = self.snapshot(&self.swarm, tx, now, <[placement::Candidate]>::to_vec)?;
        let mut stmt = tx.prepare_cached(
            "SELECT run_id FROM leases WHERE agent = ?1 AND ended_at IS NULL ORDER BY run_id",
        )?;
        let running = stmt
            .query_map([agent], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        if let Some(me) = swarm.iter_mut().find(|c| c.info.name == agent) {
            me.info.running = running;
        }
        Ok(swarm)
    }

    /// Whether `agent` should take `run` now: Some(the explanation) when it
    /// is among the best placed (or the best did not take it within the
    /// patience), None when another agent should or it may not. A run no
    /// agent may take says why in its reason.
    fn place(
        &self,
        tx: &Connection,
        swarm: &mut [placement::Candidate],
        (run, target, kind, url): (i64, &str, &str, &str),
        agent: &str,
        now: i64,
    ) -> Result<Option<String>> {
        let host = placement::host_of(url);
        let rates = state::throughputs(tx, &host)?;
        for c in swarm.iter_mut() {
            c.rate = rates.get(&c.info.name).copied().unwrap_or_default();
        }
        let (size, max_temp, waiting_since): (Option<i64>, f64, i64) = tx.query_row(
            "SELECT (SELECT size FROM versions WHERE target = ?2 AND state = 'landed' ORDER BY id DESC LIMIT 1),
                    (SELECT max_temp FROM targets WHERE name = ?2), not_before
               FROM runs WHERE id = ?1",
            params![run, target],
            |r| Ok((r.get(0)?, r.get::<_, Option<f64>>(1)?.unwrap_or(0.0), r.get(2)?)),
        )?;
        let need = placement::Need {
            kind: kind.to_string(),
            size: size.unwrap_or(0).max(0) as u64,
            max_temp: max_temp as f32,
            sole_word: false,
        };
        let defaults = placement::Defaults {
            max_temp: self.config.max_temp,
            on_battery: self.config.on_battery,
        };
        let (best, verdicts) = placement::rank(swarm, &need, defaults);
        let mine = verdicts
            .iter()
            .find(|(name, _)| name == agent)
            .map(|(_, v)| v.clone());
        if best.is_empty() {
            let refused: Vec<String> = verdicts
                .iter()
                .filter_map(|(_, v)| v.as_ref().err().cloned())
                .collect();
            let mut why = format!(
                "waiting for an agent that may take it: {}",
                refused
                    .iter()
                    .take(placement::EXPLAINED)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            if refused.len() > placement::EXPLAINED {
                why.push_str(&format!(
                    "; {} more agents",
                    refused.len() - placement::EXPLAINED
                ));
            }
            tx.execute(
                "UPDATE runs SET reason = ?2 WHERE id = ?1 AND reason != ?2",
                params![run, why],
            )?;
            return Ok(None);
        }
        let Some(Ok(eta)) = mine else {
            return Ok(None);
        };
        let patient =
            now - waiting_since <= placement::PATIENCE_HEARTBEATS * ms(self.config.heartbeat);
        if best.iter().any(|b| b == agent) {
            return Ok(Some(placement::explain(agent, eta, &verdicts)));
        }
        if patient {
            return Ok(None);
        }
        Ok(Some(format!(
            "{} (the best placed, {}, did not take it within {} heartbeats)",
            placement::explain(agent, eta, &verdicts),
            best.join(" or "),
            placement::PATIENCE_HEARTBEATS
        )))
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
/// Most queued runs one heartbeat looks at: the oldest this many of the
/// kinds the agent harvests. A heartbeat's cost no longer grows with the
/// queue (an account of thousands of repositories, a feed of thousands of
/// enclosures); deeper runs come up as the head is taken.
pub const GRANT_SCAN: i64 = 256;

fn queued(
    tx: &Connection,
    agent: &str,
    kinds: &[String],
    (now, ttl): (i64, i64),
) -> Result<Vec<Queued>> {
    let kinds = serde_json::to_string(kinds).unwrap_or_else(|_| "[]".into());
    let mut stmt = tx.prepare_cached(
        "SELECT id, target, kind, url, attempts, generation, quorum_group FROM runs
             WHERE state = 'queued' AND not_before <= ?1
               AND kind IN (SELECT value FROM json_each(?4))
               AND (last_agent IS NULL OR last_agent != ?2 OR not_before + ?3 <= ?1)
             ORDER BY not_before, id LIMIT ?5",
    )?;
    let rows = stmt.query_map(params![now, agent, ttl, kinds, GRANT_SCAN], |r| {
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
