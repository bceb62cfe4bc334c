//! Sources that move: targets whose URL is not the thing to harvest but a
//! listing to resolve first. A forge account (`target add git-account
//! URL`): its run lists the account's repositories ([`forge`]) and keeps
//! one git target per repository — created when it appears, queued on
//! every run, marked `gone upstream` (never deleted) when it disappears.
//! A Kiwix book (`target add zim --book NAME --from URL`): every run of it
//! starts `resolving`; the commander
//! reads the listing itself (one conditional request when nothing changed),
//! picks the newest release and the SHA-256 the origin publishes for it,
//! and then either queues the run for that release — held to that digest
//! when it lands — or ends it `unchanged` when the newest is already the
//! landed one. A release without a published digest is refused: a Kiwix
//! release lands verified or not at all.
//!
//! Design: [`resolve_task`] runs beside the sweep and resolves every target
//! with resolving runs, one at a time; the network part holds no lock, and
//! the outcome is applied in one transaction ([`apply`]). A commander killed
//! in between leaves the runs `resolving`, and the next pass resolves again.

mod accounts;
pub mod fetch;
pub mod forge;
pub mod kiwix;

use std::time::Duration;

use rusqlite::{params, Connection};

use crate::scheduler::Scheduler;
use crate::state::{self, event, run_state, Book};
use crate::Result;
use kiwix::Release;

/// What a resolution found.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// Harvest `release`, whose bytes must hash to `sha256` (published at
    /// `source`).
    New {
        release: Release,
        sha256: String,
        source: String,
    },
    /// Nothing to harvest: the landed release is current (why).
    Current(String),
    /// The listing could not be used (why); the run fails and the landed
    /// release stays current.
    Failed(String),
}

/// Resolves `book` against its listing, given the file name of the landed
/// release (if any); returns the outcome and the book's updated record.
pub async fn resolve(
    client: &reqwest::Client,
    book: &Book,
    landed: Option<&str>,
) -> (Resolution, Book) {
    let mut seen = book.clone();
    let listed = fetch::listing(client, &book.listing, (&book.etag, &book.last_modified)).await;
    let newest = match listed {
        Err(e) => match fallback(client, book, &e).await {
            Ok(release) => release,
            Err(why) => return (Resolution::Failed(why), seen),
        },
        Ok(fetch::Listed::NotModified) if !book.newest_url.is_empty() => {
            let mut known = match Release::parse(&book.book, file_name(&book.newest_url)) {
                Some(r) => r,
                None => {
                    return (
                        Resolution::Failed(
                            "the recorded newest release is not one of the book's".into(),
                        ),
                        seen,
                    )
                }
            };
            known.url = book.newest_url.clone();
            known
        }
        Ok(fetch::Listed::NotModified) => {
            // Validators without a recorded release: read it in full.
            let fresh = Book {
                etag: String::new(),
                last_modified: String::new(),
                ..book.clone()
            };
            return Box::pin(resolve(client, &fresh, landed)).await;
        }
        Ok(fetch::Listed::Body {
            text,
            base,
            etag,
            last_modified,
        }) => {
            let releases = if looks_like_opds(&text) {
                match kiwix::from_opds(&book.book, &base, &text) {
                    Ok(r) => r,
                    Err(e) => return (Resolution::Failed(format!("{}: {e}", book.listing)), seen),
                }
            } else {
                kiwix::from_directory(&book.book, &base, &text)
            };
            seen.etag = etag;
            seen.last_modified = last_modified;
            match kiwix::newest(releases) {
                Some(r) => r,
                None => {
                    let e = format!(
                        "the listing {} has no release of {} (files {}_YYYY-MM.zim): check --book and --from",
                        book.listing, book.book, book.book
                    );
                    match fallback(client, book, &e).await {
                        Ok(release) => release,
                        Err(why) => return (Resolution::Failed(why), seen),
                    }
                }
            }
        }
    };
    seen.newest = newest.name.clone();
    seen.newest_url = newest.url.clone();
    if let Some(current) = landed.and_then(|f| Release::parse(&book.book, f)) {
        if current >= newest {
            let why = if current == newest {
                format!("{} is the newest release and has landed", current.name)
            } else {
                format!(
                    "the newest release upstream ({}) is older than the landed {} (withdrawn upstream?): {} stays",
                    newest.name, current.name, current.name
                )
            };
            return (Resolution::Current(why), seen);
        }
    }
    // Read afresh for every harvest: an origin that fixes a wrong sidecar
    // must not be held to the one it published before.
    let Some((sha256, source)) = fetch::published_sha256(client, &newest).await else {
        seen.newest_sha256.clear();
        seen.newest_source.clear();
        return (
            Resolution::Failed(format!(
                "{} publishes no SHA-256 (looked for {}.meta4 and .sha256): a Kiwix release lands only with its published digest",
                newest.name,
                newest.digest_base()
            )),
            seen,
        );
    };
    seen.newest_sha256 = sha256.clone();
    seen.newest_source = source.clone();
    (
        Resolution::New {
            release: newest,
            sha256,
            source,
        },
        seen,
    )
}

/// When the listing failed (`why`): the release the book's undated
/// permalink leads to, or why neither worked.
async fn fallback(client: &reqwest::Client, book: &Book, why: &str) -> Result<Release, String> {
    match fetch::permalink(client, &book.listing, &book.book).await {
        Some(release) => {
            tracing::warn!(
                book = %book.book,
                release = %release.name,
                "{why}; the undated permalink leads to {}: harvesting that (a fallback: permalinks break)",
                release.url
            );
            Ok(release)
        }
        None if book.listing.ends_with('/') => Err(format!(
            "{why}; the undated permalink {}{}.zim does not lead to a release either",
            book.listing, book.book
        )),
        None => Err(why.to_string()),
    }
}

/// An OPDS catalog is Atom; a mirror's index is HTML.
fn looks_like_opds(text: &str) -> bool {
    let head: String = text.chars().take(2048).collect();
    head.contains("<feed") && head.contains("http://www.w3.org/2005/Atom")
}

fn file_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// Applies `resolution` to every resolving run of `book.target`, and
/// records what the listing showed.
pub fn apply(
    scheduler: &Scheduler,
    tx: &Connection,
    (resolution, seen): (&Resolution, &Book),
    now: i64,
) -> Result<()> {
    let runs: Vec<i64> = {
        let mut stmt = tx.prepare_cached("SELECT id FROM runs WHERE target = ?1 AND state = ?2")?;
        let rows = stmt.query_map(params![seen.target, run_state::RESOLVING], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    match resolution {
        Resolution::Failed(_) => {}
        _ => state::book_checked(tx, seen, now)?,
    }
    for id in runs {
        match resolution {
            Resolution::New {
                release,
                sha256,
                source,
            } => {
                scheduler.queue_resolved(tx, id, (&release.url, sha256, source), now)?;
                event(
                    tx,
                    now,
                    Some(id),
                    None,
                    "resolved",
                    &format!(
                        "{}: newest release {} ({}), published SHA-256 {} from {source}",
                        seen.book, release.name, release.url, sha256
                    ),
                )?;
            }
            Resolution::Current(why) => {
                end(tx, id, run_state::UNCHANGED, why, now)?;
                event(tx, now, Some(id), None, "resolved", why)?;
            }
            Resolution::Failed(why) => {
                end(tx, id, run_state::FAILED, why, now)?;
                tx.execute(
                    "UPDATE books SET reason = ?2 WHERE target = ?1",
                    params![seen.target, why],
                )?;
                event(tx, now, Some(id), None, "run_failed", why)?;
            }
        }
    }
    Ok(())
}

fn end(tx: &Connection, id: i64, state: &str, reason: &str, now: i64) -> Result<()> {
    tx.execute(
        "UPDATE runs SET state = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1",
        params![id, state, reason, now],
    )?;
    Ok(())
}

/// Resolves every target that has resolving runs due; how many it
/// resolved.
pub async fn resolve_pending(scheduler: &Scheduler, client: &reqwest::Client) -> Result<usize> {
    let now = ark_core::unix_ms();
    let targets: Vec<String> = scheduler.store.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT DISTINCT target FROM runs WHERE state = ?1 AND not_before <= ?2 ORDER BY target",
        )?;
        let rows = stmt.query_map(params![run_state::RESOLVING, now], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
    })?;
    let mut resolved = 0;
    for target in targets {
        let (book, account, landed) = scheduler.store.read(|c| {
            Ok((
                state::book_of(c, &target)?,
                state::account_of(c, &target)?.zip(state::target(c, &target)?),
                state::landed_url(c, &target)?,
            ))
        })?;
        if let Some((options, (_, url))) = account {
            let listed = list_account(client, &options, &url).await;
            let now = ark_core::unix_ms();
            scheduler
                .store
                .tx(|tx| accounts::apply(scheduler, tx, &target, listed, now))?;
            resolved += 1;
            continue;
        }
        let Some(book) = book else {
            // The target no longer follows a source (removed meanwhile).
            scheduler.store.tx(|tx| {
                tx.execute(
                    "UPDATE runs SET state = 'failed', reason = 'the target no longer follows a source'
                      WHERE target = ?1 AND state = 'resolving'",
                    [&target],
                )?;
                Ok(())
            })?;
            continue;
        };
        let landed = landed.as_deref().map(file_name);
        let outcome = resolve(client, &book, landed).await;
        tracing::info!(target = %target, outcome = ?outcome.0, "resolved a book");
        let now = ark_core::unix_ms();
        scheduler
            .store
            .tx(|tx| apply(scheduler, tx, (&outcome.0, &outcome.1), now))?;
        resolved += 1;
    }
    Ok(resolved)
}

/// Lists the account at `url` with `options`, and picks its repositories.
async fn list_account(
    client: &reqwest::Client,
    options: &ark_proto::AccountOptions,
    url: &str,
) -> std::result::Result<Vec<(String, String)>, forge::ListError> {
    let failed = forge::ListError::Failed;
    let url: reqwest::Url = url.parse().map_err(|e| failed(format!("{url}: {e}")))?;
    let account = forge::Account {
        forge: forge::Forge::choose(&options.forge, &url).map_err(failed)?,
        url,
        token_file: options.token_file.clone(),
    };
    let repos = forge::list(client, &account, ark_core::unix_ms()).await?;
    forge::chosen(repos, options).map_err(forge::ListError::Failed)
}

/// Resolves pending sources every `every` until aborted.
pub async fn resolve_task(scheduler: Scheduler, every: Duration) {
    let client = match fetch::client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("sources will not be resolved: {e}");
            return;
        }
    };
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        if let Err(e) = resolve_pending(&scheduler, &client).await {
            tracing::error!("resolving sources failed: {e}");
        }
    }
}
