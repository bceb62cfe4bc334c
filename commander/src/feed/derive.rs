//! What landing a feed snapshot derives: its new entries as files (made
//! durable together before the ledger commits) and rows (in the landing
//! transaction), its enclosures queued as media runs, and the bookkeeping
//! when one of them lands.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;

use super::*;
use crate::archive::{safe_segment, Archive, Version};
use crate::state::{event, Store};
use crate::{CommanderError, Result};

/// What one snapshot brought.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub entries: usize,
    pub new: usize,
    /// Entries with a new id but the content of one already held.
    pub republished: usize,
    pub media_queued: usize,
    pub media_skipped: usize,
}

/// What deriving a snapshot produced on disk and must now record: the
/// entry files are written and durable, their ledger rows are not yet. The
/// landing transaction records them (see [`record`]) together with the run's
/// completion, so a run never reads `succeeded` before its entries exist.
#[derive(Debug, Clone, Default)]
pub struct Derived {
    pub target: String,
    pub version_id: i64,
    pub run_id: i64,
    entries: Vec<NewEntry>,
    report: SyncReport,
}

#[derive(Debug, Clone)]
struct NewEntry {
    id: String,
    hash: String,
    file: String,
    media: Vec<NewMedia>,
}

#[derive(Debug, Clone)]
struct NewMedia {
    url: String,
    file: String,
    declared_length: Option<u64>,
    problem: Option<String>,
}

/// Derives the entries of snapshot `version` (its file in place, landed or
/// landing): writes every entry seen for the first time, each with one
/// rename, and makes them durable together (one `syncfs`, not an fsync per
/// file). Nothing is recorded yet: [`record`] does that. Running it again
/// on the same snapshot rewrites the same names, so a crash in between is
/// repaired by deriving again. `parsed` is the snapshot as the landing's
/// check parsed it (a snapshot is parsed once per landing); without it,
/// the file is read and parsed here (recovery, a resync).
pub fn derive(
    archive: &Archive,
    store: &Store,
    version: &Version,
    parsed: Option<std::sync::Arc<Parsed>>,
    now: i64,
) -> Result<Derived> {
    let parsed = match parsed {
        Some(parsed) => parsed,
        None => {
            let bytes = archive
                .backend()
                .read(&version.path)
                .map_err(CommanderError::io(
                    "reading snapshot",
                    archive.locate(&version.path),
                ))?;
            std::sync::Arc::new(parse(&bytes, &version.url).map_err(|why| {
                CommanderError::Invalid(format!("snapshot {}: {why}", version.path))
            })?)
        }
    };
    let target = &version.target;
    let dir = archive.absolute(&feed_dir(target)).join("entries");
    std::fs::create_dir_all(&dir).map_err(CommanderError::io("creating", &dir))?;
    let max_media = store.read(|c| Ok(crate::state::target_job_settings(c, target)?.max_size))?;
    let max_media = if max_media == 0 {
        DEFAULT_MAX_MEDIA_BYTES
    } else {
        max_media
    };
    let (media, _) = store.read(|c| crate::state::target_media(c, target))?;
    let policy = super::MediaPolicy::parse(&media).unwrap_or(super::MediaPolicy::All);
    // The newest enclosures, in the feed's own order (newest first).
    let newest: std::collections::HashSet<&str> = match policy {
        super::MediaPolicy::Newest(n) => parsed
            .entries
            .iter()
            .flat_map(|e| e.enclosures.iter().map(|x| x.url.as_str()))
            .take(n)
            .collect(),
        _ => Default::default(),
    };
    let policy_problem = |url: &str| match policy {
        super::MediaPolicy::All => None,
        super::MediaPolicy::None => {
            Some("--media none: this feed's enclosures are not fetched".to_string())
        }
        super::MediaPolicy::Newest(n) => (!newest.contains(url))
            .then(|| format!("not among the feed's newest {n} enclosures (--media newest:{n})")),
    };
    // What the ledger has seen of this feed, read once.
    let (mut ids, mut hashes) = store.read(|c| seen_of(c, target))?;
    let mut derived = Derived {
        target: target.clone(),
        version_id: version.id,
        run_id: version.run_id,
        report: SyncReport {
            entries: parsed.entries.len(),
            ..SyncReport::default()
        },
        ..Derived::default()
    };
    // Oldest first, so first_seen follows the feed's own order.
    for entry in parsed.entries.iter().rev() {
        let hash = content_hash(entry);
        if ids.contains(&entry.id) {
            continue;
        }
        if let Some(file) = hashes.get(&hash) {
            derived.report.republished += 1;
            tracing::debug!(%target, id = %entry.id, %file, "republished entry: not new");
            ids.insert(entry.id.clone());
            continue;
        }
        let name = entry_file_name(entry);
        let mut enclosures = Vec::new();
        let mut media = Vec::new();
        for x in &entry.enclosures {
            let problem = policy_problem(&x.url).or_else(|| enclosure_problem(x, max_media));
            let file = media_file_name(&x.url);
            enclosures.push(json!({
                "url": x.url, "type": x.media_type, "declared_length": x.declared_length,
                "file": problem.is_none().then(|| format!("../media/{file}")),
                "skipped": problem,
            }));
            media.push(NewMedia {
                url: x.url.clone(),
                file,
                declared_length: x.declared_length,
                problem,
            });
        }
        let json = json!({
            "id": entry.id, "feed": target, "title": entry.title, "link": entry.link,
            "published": entry.published, "updated": entry.updated, "authors": entry.authors,
            "summary": entry.summary, "content": entry.content, "enclosures": enclosures,
            "content_blake3": hash, "first_seen_ms": now, "snapshot": version.path,
            "derived_by": "commander (parsed from the verified snapshot)",
        });
        let text =
            serde_json::to_vec_pretty(&json).map_err(|e| CommanderError::Invalid(e.to_string()))?;
        let path = dir.join(&name);
        write_unsynced(&path, &text).map_err(CommanderError::io("writing", &path))?;
        ids.insert(entry.id.clone());
        hashes.insert(hash.clone(), name.clone());
        derived.entries.push(NewEntry {
            id: entry.id.clone(),
            hash,
            file: name,
            media,
        });
        derived.report.new += 1;
    }
    if !derived.entries.is_empty() {
        // Every file and rename above reaches the disk in one call.
        sync_filesystem(&dir).map_err(CommanderError::io("syncing", &dir))?;
    }
    Ok(derived)
}

/// Writes `bytes` to `path` through a temporary name and a rename, without
/// an fsync: [`derive`] makes the whole batch durable at once.
pub(super) fn write_unsynced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Flushes the filesystem holding `dir` (data and directory entries).
pub(super) fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    let handle = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&handle).map_err(std::io::Error::from)
}

/// Records what [`derive`] wrote, inside the caller's transaction: the
/// entries' rows, their enclosures as media runs (or why not), an event.
/// Returns the counts.
pub fn record(tx: &Connection, derived: &Derived, now: i64) -> Result<SyncReport> {
    let target = &derived.target;
    let mut report = derived.report.clone();
    for entry in &derived.entries {
        tx.execute(
            "INSERT OR IGNORE INTO feed_entries (target, entry_id, content_blake3, file, first_seen, version_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![target, entry.id, entry.hash, entry.file, now, derived.version_id],
        )?;
        for x in &entry.media {
            let known: bool = tx.query_row(
                "SELECT COUNT(*) > 0 FROM feed_media WHERE target = ?1 AND url = ?2",
                params![target, x.url],
                |r| r.get(0),
            )?;
            if known {
                continue;
            }
            let (run, state) = match &x.problem {
                Some(why) => {
                    report.media_skipped += 1;
                    event(
                        tx,
                        now,
                        Some(derived.run_id),
                        None,
                        "enclosure_skipped",
                        &format!("{target}: enclosure {} skipped: {why}", x.url),
                    )?;
                    (None, "skipped")
                }
                None => {
                    report.media_queued += 1;
                    let message = format!("enclosure of {target} queued: {}", x.url);
                    let run = crate::state::insert_run(
                        tx,
                        target,
                        ark_core::Kind::Media.as_str(),
                        &x.url,
                        &message,
                        now,
                    )?;
                    (Some(run), "queued")
                }
            };
            tx.execute(
                "INSERT INTO feed_media (target, url, file, declared_length, run_id, state, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    target,
                    x.url,
                    x.file,
                    x.declared_length.map(|n| n as i64),
                    run,
                    state,
                    x.problem.clone().unwrap_or_default()
                ],
            )?;
        }
    }
    if report.new > 0 || report.republished > 0 {
        event(
            tx,
            now,
            Some(derived.run_id),
            None,
            "feed_entries",
            &format!(
                "{target}: {} entries in the snapshot, {} new, {} republished (not new), {} enclosures queued, {} skipped",
                report.entries, report.new, report.republished, report.media_queued, report.media_skipped
            ),
        )?;
    }
    Ok(report)
}

/// Derives and records the entries of landed snapshot `version` in one go
/// (recovery, `ingest`, the benchmark). Idempotent.
pub fn sync(archive: &Archive, store: &Store, version: &Version, now: i64) -> Result<SyncReport> {
    let derived = derive(archive, store, version, None, now)?;
    store.tx(|tx| record(tx, &derived, now))
}

/// Removes entry files of `target` the ledger does not record: what a
/// derivation wrote before a crash whose landing was then rolled back.
pub fn remove_unrecorded_entries(archive: &Archive, store: &Store, target: &str) -> Result<usize> {
    let dir = archive.absolute(&feed_dir(target)).join("entries");
    let recorded: std::collections::HashSet<String> = store.read(|c| {
        let mut stmt = c.prepare("SELECT file FROM feed_entries WHERE target = ?1")?;
        let rows = stmt.query_map([target], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    })?;
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !recorded.contains(&name) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The entry ids and content hashes (→ file) the ledger has for `target`.
pub(super) fn seen_of(
    c: &Connection,
    target: &str,
) -> Result<(
    std::collections::HashSet<String>,
    std::collections::HashMap<String, String>,
)> {
    let mut stmt =
        c.prepare("SELECT entry_id, content_blake3, file FROM feed_entries WHERE target = ?1")?;
    let rows = stmt.query_map([target], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let (mut ids, mut hashes) = (
        std::collections::HashSet::new(),
        std::collections::HashMap::new(),
    );
    for row in rows {
        let (id, hash, file) = row?;
        ids.insert(id);
        hashes.entry(hash).or_insert(file);
    }
    Ok((ids, hashes))
}

/// Why an enclosure is not fetched, if it is not.
pub(super) fn enclosure_problem(x: &Enclosure, max: u64) -> Option<String> {
    let scheme_ok = x.url.starts_with("http://") || x.url.starts_with("https://");
    if !scheme_ok {
        return Some(format!(
            "{:?} is not an http(s) URL: Ark fetches enclosures over HTTP only",
            x.url
        ));
    }
    match x.declared_length {
        Some(n) if n > max => Some(format!(
            "the feed declares {n} bytes, over the target's limit of {max} bytes \
             (raise it with `target add … --max-size`)"
        )),
        _ => None,
    }
}

/// Where a media run of `target` for `url` lands, relative to the archive
/// root: the name chosen when it was queued.
pub fn media_path(c: &Connection, target: &str, url: &str) -> Result<String> {
    let file: Option<String> = c
        .query_row(
            "SELECT file FROM feed_media WHERE target = ?1 AND url = ?2",
            params![target, url],
            |r| r.get(0),
        )
        .optional()?;
    let file = file.unwrap_or_else(|| media_file_name(url));
    Ok(format!(
        "{}/media/{}",
        feed_dir(target),
        safe_segment(&file, "media")
    ))
}

/// Records that a media run landed; notes a declared length the bytes do
/// not match (kept: the bytes are what the origin serves, and verified).
pub fn media_landed(tx: &Connection, version: &Version, now: i64) -> Result<()> {
    let declared: Option<Option<i64>> = tx
        .query_row(
            "SELECT declared_length FROM feed_media WHERE target = ?1 AND url = ?2",
            params![version.target, version.url],
            |r| r.get(0),
        )
        .optional()?;
    tx.execute(
        "UPDATE feed_media SET state = 'landed', run_id = ?3 WHERE target = ?1 AND url = ?2",
        params![version.target, version.url, version.run_id],
    )?;
    if let Some(Some(declared)) = declared {
        if declared as u64 != version.size {
            event(
                tx,
                now,
                Some(version.run_id),
                None,
                "length_mismatch",
                &format!(
                    "enclosure {}: the feed declares {declared} bytes, the origin served {}; \
                     kept the served bytes (verified by BLAKE3)",
                    version.url, version.size
                ),
            )?;
        }
    }
    Ok(())
}

/// The entry files the ledger knows, relative to the archive root (for
/// `archive verify`).
pub fn entry_files(store: &Store) -> Result<Vec<String>> {
    store.read(|c| {
        let mut stmt = c.prepare("SELECT target, file FROM feed_entries ORDER BY target, file")?;
        let rows = stmt.query_map([], |r| {
            Ok(format!(
                "{}/entries/{}",
                feed_dir(&r.get::<_, String>(0)?),
                r.get::<_, String>(1)?
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    })
}

/// Re-derives the entries of the newest snapshot of every feed (recovery
/// after a crash between landing a snapshot and deriving its entries).
pub fn resync_all(archive: &Archive, store: &Store, now: i64) -> Result<usize> {
    let newest: Vec<Version> = store.read(|c| {
        let mut seen = std::collections::HashSet::new();
        Ok(crate::archive::landed(c, None)?
            .into_iter()
            .filter(|v| v.kind == ark_core::Kind::Rss && seen.insert(v.target.clone()))
            .collect())
    })?;
    let mut new = 0;
    for v in &newest {
        match sync(archive, store, v, now) {
            Ok(r) => new += r.new,
            Err(e) => tracing::warn!(path = %v.path, "deriving entries: {e}"),
        }
    }
    Ok(new)
}
