//! Feeds (RSS 0.9x/1.0/2.0, Atom, JSON Feed) on the commander: the check a
//! harvested snapshot must pass before it lands, and what landing one
//! means — deriving its entries, deduping them, and queueing enclosures as
//! media runs.
//!
//! A feed run's body is the feed document exactly as the origin served it.
//! The commander never takes the agent's word for what is in it: it parses
//! the verified bytes itself (feed-rs), and everything below is derived
//! from them. Nothing here fetches; agents fetch.
//!
//! On the archive, under `rss/<feed>/`:
//! - `<stamp>/<file>` (+ `.manifest.json`): the snapshots, versioned and
//!   pruned like any other target's versions;
//! - `entries/<date>-<title>-<id hash>.json`: one stable file per entry,
//!   written once, atomically, when the entry is first seen. One file per
//!   entry rather than an append-only JSONL because each file lands with
//!   one rename (a crash leaves it there or not, never a torn line), a
//!   re-derivation after a crash rewrites the same name, and a person or a
//!   static web server can browse them;
//! - `media/<url hash>-<name>`: the enclosures, each a verified media run.
//!
//! Every name is built by Ark (a hash plus a sanitised fragment), never
//! taken from the feed: whatever a feed says, nothing lands outside its
//! directory.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::json;

use crate::archive::{safe_segment, Archive, Version};
use crate::state::{event, Store};
use crate::{CommanderError, Result};

/// Largest feed document accepted, by the agent's fetch and by this check.
/// The largest real feeds (years of a podcast with show notes) are a few
/// MiB; 32 MiB leaves room and still refuses a feed that is really a dump.
pub const MAX_FEED_BYTES: u64 = 32 << 20;

/// Largest enclosure fetched when the target sets no `--max-size`: above a
/// long HD video episode, below "the origin is endless".
pub const DEFAULT_MAX_MEDIA_BYTES: u64 = 4 << 30;

/// Entries a snapshot may hold: more is not a feed a person reads.
pub const MAX_ENTRIES: usize = 100_000;

/// One entry as the commander derived it from a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub id: String,
    pub title: String,
    pub link: String,
    pub published: Option<String>,
    pub updated: Option<String>,
    pub authors: Vec<String>,
    pub summary: String,
    pub content: String,
    pub enclosures: Vec<Enclosure>,
}

/// An enclosure (RSS `<enclosure>`, Atom `rel="enclosure"`, Media RSS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enclosure {
    pub url: String,
    pub media_type: String,
    /// What the feed declares; feeds often get it wrong, so it is a hint.
    pub declared_length: Option<u64>,
}

/// A parsed feed document.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// `RSS0`, `RSS1`, `RSS2`, `Atom` or `JSON`.
    pub format: String,
    pub title: String,
    pub entries: Vec<Entry>,
}

/// Parses and checks a feed document; Err says what is wrong with it.
/// `base` resolves relative links (the feed's own URL).
pub fn parse(bytes: &[u8], base: &str) -> std::result::Result<Parsed, String> {
    if bytes.len() as u64 > MAX_FEED_BYTES {
        return Err(format!(
            "the feed is {} bytes, over the {} MiB a feed may be: this is not a feed a reader follows",
            bytes.len(),
            MAX_FEED_BYTES >> 20
        ));
    }
    if declares_entities(bytes) {
        return Err(
            "the feed declares XML entities (<!ENTITY …> in its DOCTYPE): Ark never expands them, \
             and a feed has no need of them (entity-expansion attack?)"
                .into(),
        );
    }
    let feed = feed_rs::parser::Builder::new()
        .base_uri(Some(base))
        .build()
        .parse(bytes)
        .map_err(|e| format!("not a feed Ark can read (RSS, Atom or JSON Feed): {e}"))?;
    if feed.entries.len() > MAX_ENTRIES {
        return Err(format!(
            "the feed has {} entries, over the {MAX_ENTRIES} Ark accepts in one document",
            feed.entries.len()
        ));
    }
    let text = |t: &Option<feed_rs::model::Text>| {
        t.as_ref()
            .map(|t| t.content.trim().to_string())
            .unwrap_or_default()
    };
    let json_feed = feed.feed_type == feed_rs::model::FeedType::JSON;
    let entries = feed
        .entries
        .iter()
        .map(|e| {
            let mut enclosures: Vec<Enclosure> = Vec::new();
            let mut add = |url: &str, media_type: Option<String>, length: Option<u64>| {
                if !enclosures.iter().any(|x| x.url == url) {
                    enclosures.push(Enclosure {
                        url: url.to_string(),
                        media_type: media_type.unwrap_or_default(),
                        declared_length: length.filter(|&n| n > 0),
                    });
                }
            };
            for media in &e.media {
                for c in &media.content {
                    if let Some(url) = &c.url {
                        add(
                            url.as_str(),
                            c.content_type.as_ref().map(|t| t.to_string()),
                            c.size,
                        );
                    }
                }
            }
            // Atom says rel="enclosure"; a JSON Feed attachment is a link
            // with a MIME type (the item's own URL has none).
            let attachment = |l: &&feed_rs::model::Link| {
                l.rel.as_deref() == Some("enclosure") || (json_feed && l.media_type.is_some())
            };
            for l in e.links.iter().filter(attachment) {
                add(&l.href, l.media_type.clone(), l.length);
            }
            Entry {
                id: e.id.clone(),
                title: text(&e.title),
                link: e
                    .links
                    .iter()
                    .find(|l| {
                        l.rel.as_deref().is_none_or(|r| r == "alternate")
                            && !(json_feed && l.media_type.is_some())
                    })
                    .map(|l| l.href.clone())
                    .unwrap_or_default(),
                published: e.published.map(|d| d.to_rfc3339()),
                updated: e.updated.map(|d| d.to_rfc3339()),
                authors: e.authors.iter().filter_map(|p| p.name.clone()).collect(),
                summary: text(&e.summary),
                content: e
                    .content
                    .as_ref()
                    .and_then(|c| c.body.clone())
                    .unwrap_or_default(),
                enclosures,
            }
        })
        .collect();
    Ok(Parsed {
        format: format!("{:?}", feed.feed_type),
        title: text(&feed.title),
        entries,
    })
}

/// Whether the document's prolog (before the root element) declares
/// entities: the only way to an entity-expansion bomb.
fn declares_entities(bytes: &[u8]) -> bool {
    let mut at = 0;
    while let Some(i) = bytes[at..].iter().position(|&b| b == b'<') {
        let rest = &bytes[at + i..];
        match rest.get(1) {
            Some(b'?') | Some(b'!') => {
                if rest.starts_with(b"<!ENTITY") {
                    return true;
                }
                at += i + 1;
            }
            _ => return false, // the root element: the prolog is over
        }
    }
    false
}

/// The checks a snapshot must pass before it lands (the commander's deep
/// check for the kind): Some(reason) refuses it.
pub fn check_file(path: &Path, base: &str) -> Result<Option<String>> {
    let size = std::fs::metadata(path)
        .map_err(CommanderError::io("reading feed", path))?
        .len();
    if size > MAX_FEED_BYTES {
        return Ok(Some(format!(
            "the feed is {size} bytes, over the {} MiB a feed may be",
            MAX_FEED_BYTES >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(CommanderError::io("reading feed", path))?;
    Ok(parse(&bytes, base).err())
}

/// What makes an entry the same entry when it is published again under
/// another id: its words, its link and its enclosures, not its dates.
pub fn content_hash(e: &Entry) -> String {
    let mut h = blake3::Hasher::new();
    for part in [&e.title, &e.link, &e.summary, &e.content] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for x in &e.enclosures {
        h.update(&(x.url.len() as u64).to_le_bytes());
        h.update(x.url.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// A stable file name for an entry: its date, a readable fragment of its
/// title, and a hash of its id (what makes it unique).
pub fn entry_file_name(e: &Entry) -> String {
    let date = e
        .published
        .as_deref()
        .or(e.updated.as_deref())
        .and_then(|d| d.get(..10))
        .unwrap_or("undated");
    let id = blake3::hash(e.id.as_bytes()).to_hex();
    format!("{date}-{}-{}.json", slug(&e.title), &id[..16])
}

/// A stable file name for an enclosure: a hash of its URL and a sanitised
/// form of its last path segment (`episode-12.mp3`).
pub fn media_file_name(url: &str) -> String {
    let hash = blake3::hash(url.as_bytes()).to_hex();
    let name = crate::archive::file_name_from_url(url);
    let name: String = safe_segment(&name, "media").chars().take(100).collect();
    format!("{}-{name}", &hash[..12])
}

fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.chars().count() >= 48 {
            break;
        }
    }
    let out = out.trim_end_matches('-');
    safe_segment(if out.is_empty() { "entry" } else { out }, "entry")
}

/// The directory of feed `target` in the archive, relative to its root.
pub fn feed_dir(target: &str) -> String {
    format!("{}/{}", ark_core::Kind::Rss, safe_segment(target, "target"))
}

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
/// repaired by deriving again.
pub fn derive(archive: &Archive, store: &Store, version: &Version, now: i64) -> Result<Derived> {
    let file = archive.absolute(&version.path);
    let bytes = std::fs::read(&file).map_err(CommanderError::io("reading snapshot", &file))?;
    let parsed = parse(&bytes, &version.url)
        .map_err(|why| CommanderError::Invalid(format!("snapshot {}: {why}", version.path)))?;
    let target = &version.target;
    let dir = archive.absolute(&feed_dir(target)).join("entries");
    std::fs::create_dir_all(&dir).map_err(CommanderError::io("creating", &dir))?;
    let max_media = store.read(|c| Ok(crate::state::target_job_settings(c, target)?.max_size))?;
    let max_media = if max_media == 0 {
        DEFAULT_MAX_MEDIA_BYTES
    } else {
        max_media
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
            let problem = enclosure_problem(x, max_media);
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
fn write_unsynced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Flushes the filesystem holding `dir` (data and directory entries).
fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
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
    let derived = derive(archive, store, version, now)?;
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
fn seen_of(
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
fn enclosure_problem(x: &Enclosure, max: u64) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/feeds");
        std::fs::read(dir.join(name)).expect("feed fixture")
    }

    #[test]
    fn real_world_feed_shapes_parse_into_entries() {
        let podcast = String::from_utf8(fixture("podcast.xml"))
            .expect("utf-8")
            .replace("MEDIA", "http://podcast.example/media")
            .replace("LEN1", "1000")
            .replace("LEN2", "0");
        // (file, format, entries, ids/enclosures to find)
        let p = parse(podcast.as_bytes(), "http://podcast.example/feed").expect("podcast");
        assert_eq!((p.format.as_str(), p.entries.len()), ("RSS2", 2));
        assert_eq!(p.entries[0].id, "garden-talk-2");
        assert!(p.entries[0].content.contains("worms"), "content:encoded");
        assert_eq!(
            p.entries[1].enclosures,
            vec![Enclosure {
                url: "http://podcast.example/media/episode-1.mp3".into(),
                media_type: "audio/mpeg".into(),
                declared_length: Some(1000),
            }]
        );
        assert_eq!(
            p.entries[0].enclosures[0].declared_length, None,
            "length 0 means unknown"
        );

        let rss091 = parse(&fixture("rss091.xml"), "http://village.example/rss").expect("0.91");
        assert_eq!((rss091.format.as_str(), rss091.entries.len()), ("RSS0", 2));
        assert_ne!(
            rss091.entries[0].id, rss091.entries[1].id,
            "generated ids differ"
        );

        let atom = parse(&fixture("atom.xml"), "http://workshop.example/atom").expect("atom");
        assert_eq!((atom.format.as_str(), atom.entries.len()), ("Atom", 2));
        assert_eq!(atom.entries[0].link, "http://workshop.example/bench");
        assert_eq!(
            atom.entries[0].enclosures[0].url,
            "http://workshop.example/bench.jpg"
        );
        assert_eq!(atom.entries[0].enclosures[0].declared_length, Some(2048));

        let json = parse(&fixture("feed.json"), "https://kitchen.example/feed.json").expect("json");
        assert_eq!((json.format.as_str(), json.entries.len()), ("JSON", 2));
        assert_eq!(
            json.entries[0].enclosures[0].url,
            "https://kitchen.example/rye.ogg"
        );

        let rdf = parse(&fixture("rss1.rdf"), "http://bird.example/rss").expect("rss 1.0");
        assert_eq!((rdf.format.as_str(), rdf.entries.len()), ("RSS1", 1));

        // Broken dates are dropped, not fatal; the entries stay.
        let broken =
            parse(&fixture("broken-dates.xml"), "http://careless.example/").expect("dates");
        assert_eq!(broken.entries.len(), 2);
        assert!(broken.entries.iter().all(|e| e.published.is_none()));
        assert!(
            entry_file_name(&broken.entries[0]).starts_with("undated-post-with-a-nonsense-date-")
        );
    }

    #[test]
    fn what_is_not_a_feed_is_refused_with_the_reason() {
        for (bytes, want) in [
            (&b"<html><body>404</body></html>"[..], "not a feed"),
            (b"", "not a feed"),
            (b"{\"version\": 3}", "not a feed"),
            (
                b"<rss version=\"2.0\"><channel><item><title>cut",
                "not a feed",
            ),
        ] {
            let err = parse(bytes, "http://h/f").expect_err("refused");
            assert!(err.contains(want), "{err}");
        }
        let huge = vec![b' '; MAX_FEED_BYTES as usize + 1];
        assert!(parse(&huge, "http://h/f")
            .expect_err("too big")
            .contains("MiB"));
    }

    #[test]
    fn a_republished_entry_has_the_same_content_hash_under_a_new_id() {
        let p = parse(&fixture("atom.xml"), "http://workshop.example/atom").expect("atom");
        let mut again = p.entries[0].clone();
        again.id = "urn:republished".into();
        again.updated = Some("2026-12-01T00:00:00+00:00".into());
        assert_eq!(content_hash(&again), content_hash(&p.entries[0]));
        again.summary.push('!');
        assert_ne!(content_hash(&again), content_hash(&p.entries[0]));
    }

    #[test]
    fn entity_declarations_are_found_in_the_prolog_only() {
        let bomb = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<rss version="2.0"><channel><title>&lol2;</title></channel></rss>"#;
        assert!(declares_entities(bomb));
        let article = br#"<?xml version="1.0"?><!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" "http://my.netscape.com/publish/formats/rss-0.91.dtd">
<rss version="0.91"><channel><description><![CDATA[how <!ENTITY x "y"> works]]></description></channel></rss>"#;
        assert!(!declares_entities(article));
        let err = parse(bomb, "http://h/feed").expect_err("refused");
        assert!(err.contains("declares XML entities"), "{err}");
    }

    #[test]
    fn names_are_built_by_ark_whatever_the_feed_says() {
        for url in [
            "http://h/../../etc/passwd",
            "http://h/a/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "http://h/x/%00evil.mp3",
            "http://h/x/..",
            "http://h/",
        ] {
            let name = media_file_name(url);
            assert!(
                !name.contains('/') && !name.contains('\0') && !name.starts_with('.'),
                "{url} → {name}"
            );
            assert_eq!(name, media_file_name(url), "stable");
        }
        let e = Entry {
            id: "urn:x".into(),
            title: "../../Hello, World! /etc/passwd".into(),
            link: String::new(),
            published: Some("2026-11-20T10:00:00+00:00".into()),
            updated: None,
            authors: vec![],
            summary: String::new(),
            content: String::new(),
            enclosures: vec![],
        };
        let name = entry_file_name(&e);
        assert!(
            name.starts_with("2026-11-20-hello-world-etc-passwd-"),
            "{name}"
        );
        assert!(!name.contains('/'));
    }
}
