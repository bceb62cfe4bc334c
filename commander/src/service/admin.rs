//! The admin service: what the operator's CLI and the dashboard ask of a
//! running commander (targets, agents, runs, pause, tokens), each call
//! checked to come from the admin certificate.

use super::*;

/// Most chunk groups a spot check may fetch (64 × 16 KiB = 1 MiB a run).
pub const MAX_SPOT_CHECK: u32 = 64;

#[tonic::async_trait]
impl Admin for Services {
    async fn create_enroll_token(
        &self,
        request: Request<CreateEnrollTokenRequest>,
    ) -> Reply<CreateEnrollTokenResponse> {
        reply((|| {
            self.admin(&request)?;
            let req = request.into_inner();
            validate_name(&req.agent_name, "agent")?;
            let token = EnrollToken {
                secret: crate::pki::random_hex(16)?,
                ca_pin: self.inner.pki.ca_fingerprint.clone(),
            };
            let hash = hex::encode(ring::digest::digest(
                &ring::digest::SHA256,
                token.secret.as_bytes(),
            ));
            let now = unix_ms();
            let ttl = if req.ttl_ms > 0 {
                req.ttl_ms as i64
            } else {
                self.scheduler().config.token_ttl.as_millis() as i64
            };
            self.store().tx(|tx| {
                state::create_token(tx, &hash, &req.agent_name, now, now + ttl)?;
                state::event(
                    tx,
                    now,
                    None,
                    Some(&req.agent_name),
                    "token",
                    "enrolment token issued",
                )
            })?;
            Ok(CreateEnrollTokenResponse {
                token: token.to_string(),
                expires_at_ms: now + ttl,
            })
        })())
    }

    async fn add_target(&self, request: Request<AddTargetRequest>) -> Reply<TargetInfo> {
        reply((|| {
            self.admin(&request)?;
            let (kind, req) = prepare_target(request.into_inner())?;
            let now = unix_ms();
            self.store().tx(|tx| insert_target(tx, kind, &req, now))
        })())
    }

    async fn import_targets(
        &self,
        request: Request<ImportTargetsRequest>,
    ) -> Reply<ImportTargetsResponse> {
        reply((|| {
            self.admin(&request)?;
            let req = request.into_inner();
            let prepared = req
                .targets
                .into_iter()
                .map(prepare_target)
                .collect::<Result<Vec<_>>>()?;
            let now = unix_ms();
            // One transaction: every target added, or none.
            self.store().tx_or_dry(!req.dry_run, |tx| {
                let mut response = ImportTargetsResponse::default();
                for (kind, t) in &prepared {
                    if let Some(why) = already_there(tx, t)? {
                        response
                            .skipped
                            .push(format!("{} ({}): {why}", t.name, t.url));
                        continue;
                    }
                    response.added.push(insert_target(tx, *kind, t, now)?);
                }
                Ok(response)
            })
        })())
    }

    async fn get_run(&self, request: Request<GetRunRequest>) -> Reply<RunInfo> {
        reply((|| {
            self.admin(&request)?;
            let id = request.into_inner().id;
            self.store().read(|c| {
                let exists: bool =
                    c.query_row("SELECT COUNT(*) > 0 FROM runs WHERE id = ?1", [id], |r| {
                        r.get(0)
                    })?;
                if !exists {
                    return Err(CommanderError::NotFound(format!(
                        "no run {id} (see `ark-commander runs`)"
                    )));
                }
                state::run(c, id)
            })
        })())
    }

    async fn list_targets(
        &self,
        request: Request<ListTargetsRequest>,
    ) -> Reply<ListTargetsResponse> {
        reply((|| {
            self.admin(&request)?;
            Ok(ListTargetsResponse {
                targets: self
                    .store()
                    .read(|c| state::list_targets(c, unix_ms(), self.max_age_ms()))?,
            })
        })())
    }

    async fn remove_target(
        &self,
        request: Request<RemoveTargetRequest>,
    ) -> Reply<RemoveTargetResponse> {
        reply((|| {
            self.admin(&request)?;
            let name = request.into_inner().name;
            let now = unix_ms();
            self.store().tx(|tx| {
                state::remove_target(tx, &name)?;
                state::event(tx, now, None, None, "target_removed", &name)
            })?;
            Ok(RemoveTargetResponse {})
        })())
    }

    async fn run_now(&self, request: Request<RunNowRequest>) -> Reply<RunInfo> {
        reply((|| {
            self.admin(&request)?;
            self.scheduler()
                .run_now(&request.into_inner().name, unix_ms())
        })())
    }

    async fn list_agents(&self, request: Request<ListAgentsRequest>) -> Reply<ListAgentsResponse> {
        reply((|| {
            self.admin(&request)?;
            let lost_after = self.scheduler().config.lease_ttl.as_millis() as i64;
            Ok(ListAgentsResponse {
                agents: self
                    .store()
                    .read(|c| state::list_agents(c, unix_ms(), lost_after))?,
            })
        })())
    }

    async fn list_runs(&self, request: Request<ListRunsRequest>) -> Reply<ListRunsResponse> {
        reply((|| {
            self.admin(&request)?;
            let limit = match request.get_ref().limit {
                0 => DEFAULT_RUNS_LIMIT,
                n => n,
            };
            Ok(ListRunsResponse {
                runs: self.store().read(|c| state::list_runs(c, limit))?,
            })
        })())
    }

    async fn set_agent(&self, request: Request<SetAgentRequest>) -> Reply<AgentInfo> {
        reply((|| {
            self.admin(&request)?;
            let req = request.into_inner();
            // Normalised ("always" → ""), and refused when it does not parse.
            let window = req
                .window
                .as_deref()
                .map(|w| {
                    crate::window::Window::parse(w)
                        .map(|w| w.map(|w| w.to_string()).unwrap_or_default())
                })
                .transpose()?;
            let lost_after = self.scheduler().config.lease_ttl.as_millis() as i64;
            let now = unix_ms();
            let on_battery = req
                .on_battery
                .as_deref()
                .map(|p| {
                    crate::config::OnBattery::parse(p).map(|p| {
                        p.map(|p| {
                            if p == crate::config::OnBattery::Allow {
                                "allow"
                            } else {
                                "deny"
                            }
                        })
                        .unwrap_or("")
                    })
                })
                .transpose()?;
            if req.max_temp.is_some_and(|t| !(0.0..=150.0).contains(&t)) {
                return Err(CommanderError::Invalid(
                    "--max-temp: give degrees Celsius between 1 and 150 (0 goes back to the default)".into(),
                ));
            }
            self.store().tx(|tx| {
                state::set_agent(tx, &req.name, req.bandwidth_cap, window.as_deref())?;
                state::set_agent_placement(tx, &req.name, on_battery, req.max_temp)?;
                if let Some(on) = req.self_yield {
                    state::set_agent_self_yield(tx, &req.name, on)?;
                }
                state::event(
                    tx,
                    now,
                    None,
                    Some(&req.name),
                    "agent_set",
                    &format!(
                        "bandwidth cap {} window {} on battery {} max temp {} yield {}",
                        req.bandwidth_cap
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "unchanged".into()),
                        window.clone().unwrap_or_else(|| "unchanged".into()),
                        on_battery.unwrap_or("unchanged"),
                        req.max_temp
                            .map(|t| t.to_string())
                            .unwrap_or_else(|| "unchanged".into()),
                        match req.self_yield {
                            Some(true) => "on",
                            Some(false) => "off",
                            None => "unchanged",
                        }
                    ),
                )?;
                state::list_agents(tx, now, lost_after)?
                    .into_iter()
                    .find(|a| a.name == req.name)
                    .ok_or_else(|| CommanderError::NotFound(req.name.clone()))
            })
        })())
    }

    async fn revoke_agent(&self, request: Request<RevokeAgentRequest>) -> Reply<AgentInfo> {
        self.blocking(move |s| {
            s.admin(&request)?;
            let req = request.into_inner();
            let now = unix_ms();
            let lost_after = s.scheduler().config.lease_ttl.as_millis() as i64;
            let (runs, info) = s.store().tx(|tx| {
                let runs = state::revoke_agent(tx, &req.name, req.remove, now)?;
                // A removed agent is no longer listed: its name says it all.
                let info = state::list_agents(tx, now, lost_after)?
                    .into_iter()
                    .find(|a| a.name == req.name)
                    .unwrap_or_else(|| AgentInfo {
                        name: req.name.clone(),
                        state: "removed".into(),
                        ..AgentInfo::default()
                    });
                Ok((runs, info))
            })?;
            for run in runs {
                let (data, outboard) = s.inner.archive.quarantined(run);
                let _ = std::fs::remove_file(data);
                let _ = std::fs::remove_file(outboard);
            }
            tracing::warn!(agent = %req.name, "agent revoked");
            Ok(info)
        })
        .await
    }

    async fn clear_trust(&self, request: Request<ClearTrustRequest>) -> Reply<AgentInfo> {
        self.blocking(move |s| {
            s.admin(&request)?;
            let req = request.into_inner();
            let now = unix_ms();
            let lost_after = s.scheduler().config.lease_ttl.as_millis() as i64;
            s.store().tx(|tx| {
                crate::scheduler::quorum::clear_suspect(tx, &req.name, now)?;
                state::list_agents(tx, now, lost_after)?
                    .into_iter()
                    .find(|a| a.name == req.name)
                    .ok_or_else(|| CommanderError::NotFound(req.name.clone()))
            })
        })
        .await
    }

    async fn pause(&self, request: Request<PauseRequest>) -> Reply<PauseResponse> {
        reply((|| {
            self.admin(&request)?;
            self.set_paused(&request.into_inner().agent, true)?;
            Ok(PauseResponse {})
        })())
    }

    async fn resume(&self, request: Request<ResumeRequest>) -> Reply<ResumeResponse> {
        reply((|| {
            self.admin(&request)?;
            self.set_paused(&request.into_inner().agent, false)?;
            Ok(ResumeResponse {})
        })())
    }

    async fn status(&self, request: Request<StatusRequest>) -> Reply<StatusResponse> {
        reply((|| {
            self.admin(&request)?;
            let lost_after = self.scheduler().config.lease_ttl.as_millis() as i64;
            self.store().read(|c| {
                let agents = state::list_agents(c, unix_ms(), lost_after)?;
                let counts = state::run_counts(c)?;
                let count = |s: &str| counts.get(s).copied().unwrap_or(0);
                let (archive_versions, archive_bytes, last_landed) = crate::archive::totals(c)?;
                let targets = state::list_targets(c, unix_ms(), self.max_age_ms())?;
                let yielded = crate::household::current(c)?;
                Ok(StatusResponse {
                    archive_versions,
                    archive_bytes,
                    last_landed_at_ms: last_landed.unwrap_or(0),
                    swarm_paused: state::swarm_paused(c)?,
                    agents_online: agents.iter().filter(|a| a.state == "online").count() as u32,
                    agents_lost: agents.iter().filter(|a| a.state == "lost").count() as u32,
                    runs_queued: count(state::run_state::QUEUED),
                    runs_leased: count(state::run_state::LEASED),
                    runs_succeeded: count(state::run_state::SUCCEEDED),
                    runs_failed: count(state::run_state::FAILED),
                    runs_unchanged: count(state::run_state::UNCHANGED),
                    targets: targets.len() as u32,
                    stale: targets
                        .iter()
                        .filter(|t| !t.stale.is_empty())
                        .map(|t| format!("{}: {}", t.name, t.stale))
                        .collect(),
                    yielding: yielded
                        .holding()
                        .iter()
                        .map(|r| {
                            format!(
                                "{} since {}: {}",
                                r.name,
                                ark_core::ago(r.since_ms),
                                r.reading
                            )
                        })
                        .collect(),
                    pause_rule_errors: yielded
                        .rules
                        .iter()
                        .filter(|r| !r.error.is_empty())
                        .map(|r| {
                            format!(
                                "{}: unreadable since {}: {}",
                                r.name,
                                ark_core::ago(r.error_since_ms),
                                r.error
                            )
                        })
                        .collect(),
                    commander_version: env!("CARGO_PKG_VERSION").into(),
                    listen: self.inner.listen.clone(),
                })
            })
        })())
    }

    async fn list_events(&self, request: Request<ListEventsRequest>) -> Reply<ListEventsResponse> {
        reply((|| {
            self.admin(&request)?;
            let req = request.get_ref();
            let limit = if req.limit == 0 { 100 } else { req.limit };
            Ok(ListEventsResponse {
                events: self
                    .store()
                    .read(|c| state::list_events(c, req.run_id, limit))?,
            })
        })())
    }
}

/// `http://, https:// or git://`.
pub(super) fn or_list(schemes: &[&str]) -> String {
    let all: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
    match all.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Refuses a target whose directory outside its own (a git mirror) would
/// differ from another target's only by case: one directory on a
/// case-insensitive filesystem.
fn place_clash(tx: &rusqlite::Connection, kind: ark_core::Kind, url: &str) -> Result<()> {
    let Some(place) = crate::kinds::spec(kind).place_of(url) else {
        return Ok(());
    };
    let mut stmt = tx.prepare("SELECT name, kind, url FROM targets")?;
    let others = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for other in others {
        let (name, other_kind, theirs_url) = other?;
        let theirs = crate::kinds::of(&other_kind).place_of(&theirs_url);
        if theirs
            .as_deref()
            .is_some_and(|p| p != place && ark_core::path::fold(p) == ark_core::path::fold(&place))
        {
            return Err(CommanderError::AlreadyExists(format!(
                "{:?} would be kept at {place}, which differs from target {name:?}'s \
                     only by case: on a case-insensitive filesystem they would be one directory",
                url
            )));
        }
    }
    Ok(())
}

/// A target to add, checked and completed (kind, default name, quorum,
/// window, book) before any transaction; the error says what to fix.
fn prepare_target(mut req: AddTargetRequest) -> Result<(ark_core::Kind, AddTargetRequest)> {
    let kind = req
        .kind
        .parse::<ark_core::Kind>()
        .ok()
        .filter(|k| ark_core::Kind::TARGETS.contains(k))
        .ok_or_else(|| {
            CommanderError::Invalid(format!(
                "unknown target kind {:?}: this commander harvests: {}",
                req.kind,
                ark_core::Kind::names(ark_core::Kind::TARGETS)
            ))
        })?;
    let uri: tonic::transport::Uri = req
        .url
        .parse()
        .map_err(|e| CommanderError::Invalid(format!("{:?} is not a URL: {e}", req.url)))?;
    let scheme_ok = uri
        .scheme_str()
        .is_some_and(|s| crate::kinds::spec(kind).schemes().contains(&s));
    if !scheme_ok || uri.host().is_none() {
        return Err(CommanderError::Invalid(format!(
            "{:?}: a {} target needs an {} URL with a host",
            req.url,
            req.kind,
            or_list(crate::kinds::spec(kind).schemes())
        )));
    }
    if !req.book.is_empty() {
        check_book(kind, &req.book)?;
    }
    if req.name.is_empty() {
        req.name = if req.book.is_empty() {
            name_from_url(&req.url)
        } else {
            req.book.clone()
        };
    }
    if !req.quorum.trim().is_empty() {
        req.quorum = crate::config::Quorum::parse(&req.quorum)
            .map_err(|e| CommanderError::Invalid(format!("--quorum: {e}")))?
            .to_string();
    }
    if req.spot_check > MAX_SPOT_CHECK {
        return Err(CommanderError::Invalid(format!(
                    "--spot-check {}: at most {MAX_SPOT_CHECK} chunk groups (each is 16 KiB the commander fetches itself)",
                    req.spot_check
                )));
    }
    req.window = crate::window::Window::parse(&req.window)?
        .map(|w| w.to_string())
        .unwrap_or_default();
    validate_name(&req.name, "target")?;
    if req.name.ends_with('.') || ark_core::path::is_reserved(&req.name) {
        return Err(CommanderError::Invalid(format!(
            "target name {:?} would not survive a copy of the archive to exFAT or NTFS \
                     (a trailing dot, or a device name such as CON or NUL): choose another",
            req.name
        )));
    }
    match (&mut req.account, kind) {
        (account, ark_core::Kind::GitAccount) => {
            let options = account.get_or_insert_with(Default::default);
            check_account(&req.url, options)?;
        }
        (Some(_), _) => {
            return Err(CommanderError::Invalid(format!(
                "--forge, --token-file, --include, --exclude, --no-forks, --no-archived and --no-wikis \
                 are for a git-account target, not {kind}"
            )))
        }
        (None, _) => {}
    }
    if req.lfs && !matches!(kind, ark_core::Kind::Git | ark_core::Kind::GitAccount) {
        return Err(CommanderError::Invalid(format!(
            "--lfs: only a git or git-account target has Git LFS objects, not {kind}"
        )));
    }
    if !req.media.is_empty() {
        crate::feed::MediaPolicy::parse(&req.media)?;
        if kind != ark_core::Kind::Rss {
            return Err(CommanderError::Invalid(format!(
                "--media {}: only a feed (rss) target has enclosures",
                req.media
            )));
        }
    }
    Ok((kind, req))
}

/// Inserts a prepared target in `tx` (refused when its name or place on
/// disk clashes with another's); its info.
fn insert_target(
    tx: &rusqlite::Connection,
    kind: ark_core::Kind,
    req: &AddTargetRequest,
    now: i64,
) -> Result<TargetInfo> {
    // Its directory must not clash with another target's on a
    // case-insensitive filesystem.
    let clash: Option<String> = rusqlite::OptionalExtension::optional(tx.query_row(
        "SELECT name FROM targets WHERE lower(name) = lower(?1) AND name != ?1",
        [&req.name],
        |r| r.get(0),
    ))?;
    place_clash(tx, kind, &req.url)?;
    if let Some(other) = clash {
        return Err(CommanderError::AlreadyExists(format!(
            "target {:?} differs from {other:?} only by case: their directories would be one \
 on a case-insensitive filesystem; choose another name",
            req.name
        )));
    }
    let info = state::add_target(tx, req, now)?;
    if !req.book.is_empty() {
        state::add_book(tx, &req.name, &req.book)?;
    }
    if let Some(account) = &req.account {
        state::add_account(tx, &req.name, account)?;
    }
    state::event(
        tx,
        now,
        None,
        None,
        "target_added",
        &format!("{} {} {}", req.name, req.kind, req.url),
    )?;
    Ok(info)
}

/// Why an imported target is not added, when it is already there (by URL,
/// or by name).
fn already_there(tx: &rusqlite::Connection, t: &AddTargetRequest) -> Result<Option<String>> {
    let by_url: Option<String> = rusqlite::OptionalExtension::optional(tx.query_row(
        "SELECT name FROM targets WHERE url = ?1 AND kind = ?2",
        [&t.url, &t.kind],
        |r| r.get(0),
    ))?;
    if let Some(name) = by_url {
        return Ok(Some(format!("already a target ({name})")));
    }
    let by_name: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM targets WHERE lower(name) = lower(?1)",
        [&t.name],
        |r| r.get(0),
    )?;
    Ok(by_name.then(|| "a target of that name exists (another URL)".to_string()))
}

/// A git-account's options: a forge this commander can tell (from the
/// host, or named), a token file it can read (its content stays there),
/// globs that parse. The forge is recorded as resolved.
fn check_account(url: &str, o: &mut AccountOptions) -> Result<()> {
    let parsed: reqwest::Url = url
        .parse()
        .map_err(|e| CommanderError::Invalid(format!("{url:?} is not a URL: {e}")))?;
    let forge =
        crate::sources::forge::Forge::choose(&o.forge, &parsed).map_err(CommanderError::Invalid)?;
    o.forge = forge.as_str().to_string();
    if parsed.path().trim_matches('/').is_empty() {
        return Err(CommanderError::Invalid(format!(
            "{url}: name the account, e.g. https://github.com/ORG or https://gitlab.com/GROUP/SUBGROUP"
        )));
    }
    if !o.token_file.is_empty() {
        std::fs::metadata(&o.token_file).map_err(|e| {
            CommanderError::Invalid(format!(
                "--token-file {}: {e} (the file must be readable by the commander)",
                o.token_file
            ))
        })?;
    }
    crate::sources::forge::chosen(Vec::new(), o).map_err(CommanderError::Invalid)?;
    Ok(())
}

/// A book to follow: only a zim target has one, and its name is a Kiwix
/// book name (letters, digits, `_`, `-`, `.`), given without the date.
fn check_book(kind: ark_core::Kind, book: &str) -> Result<()> {
    if kind != ark_core::Kind::Zim {
        return Err(CommanderError::Invalid(format!(
            "--book {book}: only a zim target follows a Kiwix book (`target add zim --book NAME --from URL`)"
        )));
    }
    let plain = book
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    let dated = kiwix_dated(book);
    if book.is_empty() || !plain || dated {
        return Err(CommanderError::Invalid(format!(
            "--book {book:?}: give the book's name with its flavour and without the date, \
             e.g. wikipedia_en_all_nopic (not wikipedia_en_all_nopic_2026-10.zim)"
        )));
    }
    Ok(())
}

/// Whether `book` already carries a release date or a file extension.
fn kiwix_dated(book: &str) -> bool {
    book.ends_with(".zim")
        || book.rsplit_once('_').is_some_and(|(_, last)| {
            last.len() >= 7
                && last.as_bytes()[4] == b'-'
                && last.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        })
}
