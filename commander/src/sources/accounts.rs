//! A forge account's listing applied to the store, in one transaction:
//! each listed repository has a git target (created the first time, named
//! `ACCOUNT-PATH`, with the account's retention and category) and gets a
//! run; a repository that is no longer listed is kept and marked `gone
//! upstream`, never deleted, and comes back when it is listed again. A
//! rate-limited listing waits for the forge's reset with its run still
//! `resolving`; a failed one fails the run with the reason.

use rusqlite::{params, Connection};

use super::end;
use super::forge::ListError;
use crate::scheduler::Scheduler;
use crate::state::{self, event, run_state};
use crate::Result;

/// Applies a listing of account `account` (repository path → clone URL).
pub fn apply(
    scheduler: &Scheduler,
    tx: &Connection,
    account: &str,
    listed: std::result::Result<Vec<(String, String)>, ListError>,
    now: i64,
) -> Result<()> {
    let runs: Vec<i64> = {
        let mut stmt = tx.prepare_cached("SELECT id FROM runs WHERE target = ?1 AND state = ?2")?;
        let rows = stmt.query_map(params![account, run_state::RESOLVING], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let repos = match listed {
        Ok(repos) => repos,
        Err(ListError::RateLimited { until, why }) => {
            for id in &runs {
                tx.execute(
                    "UPDATE runs SET not_before = ?2, reason = ?3 WHERE id = ?1",
                    params![id, until, why],
                )?;
                event(tx, now, Some(*id), None, "rate_limited", &why)?;
            }
            return Ok(());
        }
        Err(ListError::Failed(why)) => {
            for id in &runs {
                end(tx, *id, run_state::FAILED, &why, now)?;
                event(tx, now, Some(*id), None, "run_failed", &why)?;
            }
            return Ok(());
        }
    };
    let (settings, category): (ark_proto::AddTargetRequest, String) = tx.query_row(
        "SELECT keep, window, bandwidth_cap, max_size, quorum, spot_check, category, lfs FROM targets WHERE name = ?1",
        [account],
        |r| {
            Ok((
                ark_proto::AddTargetRequest {
                    keep: r.get(0)?,
                    window: r.get(1)?,
                    bandwidth_cap: r.get::<_, i64>(2)? as u64,
                    max_size: r.get::<_, i64>(3)? as u64,
                    quorum: r.get(4)?,
                    spot_check: r.get(5)?,
                    lfs: r.get(7)?,
                    ..Default::default()
                },
                r.get(6)?,
            ))
        },
    )?;
    let known = state::account_repos(tx, account)?;
    let listed: std::collections::HashSet<&str> =
        repos.iter().map(|(_, url)| url.as_str()).collect();
    let (mut added, mut back, mut gone) = (0, 0, 0);
    for (path, url) in &repos {
        let name = match known.iter().find(|k| &k.url == url) {
            Some(k) => {
                if !k.gone.is_empty() {
                    state::set_gone(tx, &k.name, "")?;
                    event(
                        tx,
                        now,
                        None,
                        None,
                        "back_upstream",
                        &format!("{}: {url} is listed again", k.name),
                    )?;
                    back += 1;
                }
                k.name.clone()
            }
            None => {
                let name = free_name(tx, &format!("{account}-{}", path.replace(['/', ' '], "-")))?;
                let t = ark_proto::AddTargetRequest {
                    kind: ark_core::Kind::Git.to_string(),
                    url: url.clone(),
                    name: name.clone(),
                    category: category.clone(),
                    ..settings.clone()
                };
                state::add_target(tx, &t, now)?;
                // Queued by the account's runs, not on a schedule of its own.
                tx.execute(
                    "UPDATE targets SET account = ?2, next_due = NULL WHERE name = ?1",
                    params![name, account],
                )?;
                event(
                    tx,
                    now,
                    None,
                    None,
                    "target_added",
                    &format!("{name} git {url} (account {account})"),
                )?;
                added += 1;
                name
            }
        };
        scheduler.queue_in(tx, &name, now)?;
    }
    for k in known
        .iter()
        .filter(|k| k.gone.is_empty() && !listed.contains(k.url.as_str()))
    {
        let date = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(now.max(0) as u64),
        );
        let why = format!("gone upstream since {date}: kept, not deleted");
        state::set_gone(tx, &k.name, &why)?;
        event(
            tx,
            now,
            None,
            None,
            "gone_upstream",
            &format!("{}: {} {why}", k.name, k.url),
        )?;
        gone += 1;
    }
    let summary = format!(
        "{} repositories listed: {added} new, {back} back, {gone} gone upstream; a run queued for each listed one",
        repos.len()
    );
    let state = if added + back + gone > 0 {
        run_state::SUCCEEDED
    } else {
        run_state::UNCHANGED
    };
    for id in runs {
        end(tx, id, state, &summary, now)?;
        event(tx, now, Some(id), None, "listed", &summary)?;
    }
    Ok(())
}

/// `base`, or `base-2`, `base-3`… : the first name no target has (names
/// are compared without case, as the archive's directories are).
fn free_name(tx: &Connection, base: &str) -> Result<String> {
    let base: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(58)
        .collect();
    let mut name = base.clone();
    for n in 2.. {
        let taken: bool = tx.query_row(
            "SELECT COUNT(*) > 0 FROM targets WHERE lower(name) = lower(?1)",
            [&name],
            |r| r.get(0),
        )?;
        if !taken {
            break;
        }
        name = format!("{base}-{n}");
    }
    Ok(name)
}
