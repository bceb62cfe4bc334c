//! Granting leases: which queued runs an agent with free slots gets, and
//! what goes with each job (the kind says: its size limit, validators,
//! what the landed state holds; the destinations it may reach).

use std::sync::atomic::Ordering;

use super::*;

impl Scheduler {
    pub(super) fn grant(
        &self,
        tx: &Connection,
        agent: &str,
        (free_slots, keeping): (u32, &[i64]),
        now: i64,
    ) -> Result<Vec<Lease>> {
        if free_slots == 0 {
            return Ok(Vec::new());
        }
        let kinds = state::capabilities(tx, agent)?
            .map(|c| c.kinds)
            .unwrap_or_else(|| vec![ark_core::Kind::File.to_string()]);
        let ttl = self.ttl();
        let mut queue = Queue::new(agent, &kinds, (now, ttl));
        queue.keeping(tx, keeping)?;
        // Read only when a run is there to place: the shared snapshot, and
        // this agent's place in it with its running jobs counted now.
        let mut swarm: Option<Placing> = None;
        let mut last = None;
        let mut declined = 0;
        let mut leases = Vec::new();
        while let Some((run, target, kind, url, attempts, generation, group)) = queue.next(tx)? {
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
            let (swarm, mine) = match &mut swarm {
                Some(read) => read,
                None => swarm.insert(self.swarm_for(tx, agent, now)?),
            };
            let placing = (&**swarm, *mine);
            let kept = queue.kept.contains(&run);
            let Some(placed) = self.place(
                tx,
                placing,
                &mut last,
                (run, &target, &kind, &url, kept),
                now,
            )?
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
            if let Some((_, running)) = mine {
                *running += 1;
                last = None; // its jobs changed: rank afresh
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
            // The validators belong to the target's own URL: a followed
            // book's next release is another file, and a validator that
            // happens to match it (nginx's mtime-size ETag) must not make
            // it look unchanged.
            let (etag, last_modified) = match spec.conditional() && url == settings.url {
                true => (settings.etag, settings.last_modified),
                false => Default::default(),
            };
            // A git mirror's refs go by digest, and whole only when few.
            let (known_refs, known_refs_digest, known_refs_count) = spec
                .known_refs(self.archive_root.as_deref(), &url)
                .map(crate::kinds::lease_refs)
                .unwrap_or_default();
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
                    known_refs_digest,
                    known_refs_count,
                    fetch_allow: self.config.fetch.allow.clone(),
                    commander_endpoints: self.own_endpoints.clone(),
                }),
            });
        }
        Ok(leases)
    }
}

impl Scheduler {
    /// The refs the landed state holds for the job of `lease` (a git
    /// mirror's, which the lease named by digest), for the agent holding
    /// it: read now, so the mirror's current set.
    pub fn known_refs(
        &self,
        agent: &str,
        lease: &LeaseRef,
        now: i64,
    ) -> Result<ark_core::formats::bundle::Refs> {
        let (kind, url) = self.store.read(|tx| {
            self.check_lease(tx, agent, lease, now)?;
            Ok(tx.query_row(
                "SELECT kind, url FROM runs WHERE id = ?1",
                [lease.run_id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )?)
        })?;
        crate::kinds::of(&kind)
            .known_refs(self.archive_root.as_deref(), &url)
            .ok_or_else(|| {
                CommanderError::Invalid(format!(
                    "run {} is a {kind} job, which has no known refs",
                    lease.run_id
                ))
            })
    }

    /// The swarm as placement sees it: the shared snapshot while it is
    /// younger than [`placement::SNAPSHOT_MS`] (the commander refreshes it
    /// in the background, see [`Scheduler::refresh_swarm`]), else read now.
    pub(super) fn swarm(&self, tx: &Connection, now: i64) -> Result<Arc<placement::Swarm>> {
        self.swarm_wanted.store(now, Ordering::Relaxed);
        let cached = self.swarm.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(swarm) = cached.as_ref() {
            if now >= swarm.at && now - swarm.at < placement::SNAPSHOT_MS {
                return Ok(swarm.clone());
            }
        }
        drop(cached);
        self.read_swarm_now(tx, now)
    }

    /// Reads the swarm now (on `tx`) and shares it.
    fn read_swarm_now(&self, tx: &Connection, now: i64) -> Result<Arc<placement::Swarm>> {
        let fresh = Arc::new(read_swarm(tx, now, self.ttl())?);
        *self.swarm.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }

    /// The swarm, and `agent`'s place in it with its running jobs counted
    /// now (the snapshot's may be a second old).
    fn swarm_for(&self, tx: &Connection, agent: &str, now: i64) -> Result<Placing> {
        let mut swarm = self.swarm(tx, now)?;
        // It is heartbeating: a snapshot that does not show it online (it
        // is new, or back from lost) is read afresh, once.
        let online = |s: &placement::Swarm| {
            s.position(agent)
                .is_some_and(|i| s.agents[i].info.state == "online")
        };
        if !online(&swarm) {
            swarm = self.read_swarm_now(tx, now)?;
        }
        let mine = match swarm.position(agent) {
            Some(i) => {
                let running: u32 = tx.query_row(
                    "SELECT COUNT(*) FROM leases WHERE agent = ?1 AND ended_at IS NULL",
                    [agent],
                    |r| r.get(0),
                )?;
                Some((i, running))
            }
            None => None,
        };
        Ok((swarm, mine))
    }

    /// Reads the swarm afresh on the store's reader connection, beside the
    /// writers: the commander calls this twice a [`placement::SNAPSHOT_MS`]
    /// so that no heartbeat pays for reading a thousand agents.
    pub fn refresh_swarm(&self, now: i64) -> Result<()> {
        let wanted = self.swarm_wanted.load(Ordering::Relaxed);
        if now - wanted > 10 * placement::SNAPSHOT_MS {
            return Ok(()); // nothing placed lately: the first placement reads
        }
        let fresh = Arc::new(self.store.snapshot(|c| read_swarm(c, now, self.ttl()))?);
        let mut cached = self.swarm.lock().unwrap_or_else(|p| p.into_inner());
        if cached.as_ref().is_none_or(|old| old.at <= now) {
            *cached = Some(fresh);
        }
        Ok(())
    }

    /// Whether the agent at `mine` should take `run` now: Some(the
    /// explanation) when it is among the best placed (or the best did not
    /// take it within the patience), None when another agent should or it
    /// may not. A run no agent may take says why in its reason.
    /// `last` is the previous placement of this heartbeat: a run that needs
    /// the same (most of a long queue: one feed's enclosures, one
    /// account's repositories) is judged by its ranking, not ranked again.
    fn place(
        &self,
        tx: &Connection,
        (swarm, mine): (&placement::Swarm, Option<(usize, u32)>),
        last: &mut Option<(placement::Need, placement::Ranking)>,
        (run, target, kind, url, kept): (i64, &str, &str, &str, bool),
        now: i64,
    ) -> Result<Option<String>> {
        let (size, max_temp, waiting_since): (Option<i64>, f64, i64) = tx.query_row(
            "SELECT COALESCE(NULLIF(bytes_total, 0),
                        (SELECT size FROM versions WHERE target = ?2 AND state = 'landed' ORDER BY id DESC LIMIT 1)),
                    (SELECT max_temp FROM targets WHERE name = ?2), not_before
               FROM runs WHERE id = ?1",
            params![run, target],
            |r| Ok((r.get(0)?, r.get::<_, Option<f64>>(1)?.unwrap_or(0.0), r.get(2)?)),
        )?;
        let need = placement::Need {
            kind: kind.to_string(),
            host: placement::host_of(url),
            size: size.unwrap_or(0).max(0) as u64,
            max_temp: max_temp as f32,
            sole_word: false,
        };
        let defaults = placement::Defaults {
            max_temp: self.config.max_temp,
            on_battery: self.config.on_battery,
        };
        let (need, ranking) = match last.take() {
            Some((seen, ranking)) if seen == need => (seen, ranking),
            _ => {
                let ranking = placement::rank(swarm, &need, defaults, mine);
                (need, ranking)
            }
        };
        let (need, ranking) = &*last.insert((need, ranking));
        let agents = &swarm.agents;
        if ranking.best.is_empty() {
            tx.execute(
                "UPDATE runs SET reason = ?2 WHERE id = ?1 AND reason != ?2",
                params![run, ranking.waiting(agents, need)],
            )?;
            return Ok(None);
        }
        let Some((me, _)) = mine.filter(|(me, _)| ranking.verdicts[*me].is_ok()) else {
            return Ok(None);
        };
        // Its bytes are here already: resuming beats any ranking.
        if kept {
            return Ok(Some(format!(
                "{} kept this run's staged bytes when its lease ended: it resumes them",
                agents[me].info.name
            )));
        }
        if ranking.best.contains(&me) {
            return Ok(Some(ranking.explain(agents, need, me)));
        }
        let patient =
            now - waiting_since <= placement::PATIENCE_HEARTBEATS * ms(self.config.heartbeat);
        if patient {
            return Ok(None);
        }
        let mut best: Vec<&str> = ranking
            .best
            .iter()
            .take(3)
            .map(|i| agents[*i].info.name.as_str())
            .collect();
        if ranking.best.len() > 3 {
            best.push("others");
        }
        Ok(Some(format!(
            "{} (the best placed, {}, did not take it within {} heartbeats)",
            ranking.explain(agents, need, me),
            best.join(" or "),
            placement::PATIENCE_HEARTBEATS
        )))
    }
}

/// Every agent but the revoked, with its window as of `now` and its
/// measured rates: two reads of the store however many agents there are.
fn read_swarm(conn: &Connection, now: i64, lost_after: i64) -> Result<placement::Swarm> {
    let agents = state::list_agents(conn, now, lost_after)?
        .into_iter()
        .filter(|a| a.state != "revoked")
        .map(|info| placement::Candidate {
            window_open: crate::window::open_at(&info.window, now),
            mean_rate: None,
            info,
        })
        .collect();
    let rates = state::all_throughputs(conn)?;
    Ok(placement::Swarm::new(now, agents, &rates))
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

/// The swarm a heartbeat places against, and the asking agent's position
/// in it with its running jobs counted now.
type Placing = (Arc<placement::Swarm>, Option<(usize, u32)>);

/// A queued run: id, target, kind, url, attempts, generation, quorum group.
type Queued = (i64, String, String, String, u32, i64, Option<i64>);

/// Most queued runs one heartbeat looks at: the oldest this many of the
/// kinds the agent harvests. A heartbeat's cost no longer grows with the
/// queue (an account of thousands of repositories, a feed of thousands of
/// enclosures); deeper runs come up as the head is taken.
pub const GRANT_SCAN: usize = 256;

/// Queued runs read at a time: most heartbeats take the first or second.
const GRANT_PAGE: usize = 16;

/// The queued runs that are due, oldest first, read a page at a time up to
/// [`GRANT_SCAN`]; a run that just failed on the agent waits one TTL before
/// it may go back to it (another agent first).
struct Queue<'a> {
    agent: &'a str,
    /// The agent's kinds, as a JSON array for SQLite's json_each.
    kinds: String,
    now: i64,
    ttl: i64,
    page: std::collections::VecDeque<Queued>,
    /// Queued runs whose staged bytes the agent kept: offered first.
    kept: std::collections::HashSet<i64>,
    /// The last (not_before, id) read: the next page starts after it.
    after: (i64, i64),
    read: usize,
    exhausted: bool,
}

impl<'a> Queue<'a> {
    fn new(agent: &'a str, kinds: &[String], (now, ttl): (i64, i64)) -> Self {
        Self {
            agent,
            kinds: serde_json::to_string(kinds).unwrap_or_else(|_| "[]".into()),
            now,
            ttl,
            page: Default::default(),
            kept: Default::default(),
            after: (i64::MIN, i64::MIN),
            read: 0,
            exhausted: false,
        }
    }

    fn next(&mut self, tx: &Connection) -> Result<Option<Queued>> {
        if self.page.is_empty() && !self.exhausted && self.read < GRANT_SCAN {
            self.fill(tx)?;
        }
        Ok(self.page.pop_front())
    }

    /// Puts the queued runs of `kept` (the agent holds their bytes) first,
    /// whoever last held them.
    fn keeping(&mut self, tx: &Connection, kept: &[i64]) -> Result<()> {
        let mut stmt = tx.prepare_cached(
            "SELECT id, target, kind, url, attempts, generation, quorum_group FROM runs
                 WHERE id = ?1 AND state = 'queued' AND not_before <= ?2
                   AND kind IN (SELECT value FROM json_each(?3))",
        )?;
        for &id in kept {
            let run: Option<Queued> = stmt
                .query_row(params![id, self.now, self.kinds], |r| queued(r, 0))
                .optional()?;
            if let Some(run) = run {
                self.kept.insert(run.0);
                self.page.push_back(run);
            }
        }
        Ok(())
    }

    fn fill(&mut self, tx: &Connection) -> Result<()> {
        let mut stmt = tx.prepare_cached(
            "SELECT not_before, id, target, kind, url, attempts, generation, quorum_group FROM runs
                 WHERE state = 'queued' AND not_before <= ?1 AND (not_before, id) > (?6, ?7)
                   AND kind IN (SELECT value FROM json_each(?4))
                   AND (last_agent IS NULL OR last_agent != ?2 OR not_before + ?3 <= ?1)
                 ORDER BY not_before, id LIMIT ?5",
        )?;
        let want = GRANT_PAGE.min(GRANT_SCAN - self.read);
        let rows = stmt.query_map(
            params![
                self.now,
                self.agent,
                self.ttl,
                self.kinds,
                want as i64,
                self.after.0,
                self.after.1
            ],
            |r| Ok((r.get(0)?, queued(r, 1)?)),
        )?;
        let mut read = 0;
        for row in rows {
            let (not_before, run): (i64, Queued) = row?;
            self.after = (not_before, run.0);
            read += 1;
            if !self.kept.contains(&run.0) {
                self.page.push_back(run);
            }
        }
        self.read += read;
        self.exhausted = read < want;
        Ok(())
    }
}

/// A queued run from `r`'s columns `from`… (id, target, kind, url,
/// attempts, generation, quorum_group), as both of the queue's reads select
/// them.
fn queued(r: &rusqlite::Row<'_>, from: usize) -> rusqlite::Result<Queued> {
    Ok((
        r.get(from)?,
        r.get(from + 1)?,
        r.get(from + 2)?,
        r.get(from + 3)?,
        r.get(from + 4)?,
        r.get(from + 5)?,
        r.get(from + 6)?,
    ))
}
