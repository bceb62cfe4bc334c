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

use serde::Serialize;

use crate::archive::safe_segment;
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
///
/// Which of a feed's enclosures are fetched (`--media`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaPolicy {
    /// Every enclosure (the default).
    All,
    /// None: entries only.
    None,
    /// Only the newest N enclosures of the feed, on the first harvest and
    /// after; the older ones are recorded as skipped, never fetched.
    Newest(usize),
}

impl MediaPolicy {
    /// Parses `--media`: "", "all", "none" or "newest:N".
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim() {
            "" | "all" => Ok(Self::All),
            "none" => Ok(Self::None),
            other => other
                .strip_prefix("newest:")
                .and_then(|n| n.parse().ok())
                .map(Self::Newest)
                .ok_or_else(|| {
                    CommanderError::Invalid(format!(
                        "--media {other:?}: say all, none or newest:N (e.g. newest:5)"
                    ))
                }),
        }
    }
}

/// Long by design: feed-rs's model mapped to Ark's entry field by field.
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
/// check for the kind): the parsed feed, or Err(reason) refusing it.
pub fn check_file(path: &Path, base: &str) -> Result<std::result::Result<Parsed, String>> {
    let size = std::fs::metadata(path)
        .map_err(CommanderError::io("reading feed", path))?
        .len();
    if size > MAX_FEED_BYTES {
        return Ok(Err(format!(
            "the feed is {size} bytes, over the {} MiB a feed may be",
            MAX_FEED_BYTES >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(CommanderError::io("reading feed", path))?;
    Ok(parse(&bytes, base))
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
    let date = safe_segment(date, "undated");
    ark_core::path::fit(
        format!("{date}-{}-{}.json", slug(&e.title), &id[..16]),
        &e.id,
    )
}

/// A stable file name for an enclosure: a hash of its URL and a sanitised
/// form of its last path segment (`episode-12.mp3`).
pub fn media_file_name(url: &str) -> String {
    let hash = blake3::hash(url.as_bytes()).to_hex();
    let name = crate::archive::file_name_from_url(url);
    ark_core::path::fit(format!("{}-{name}", &hash[..12]), url)
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

mod derive;
pub use derive::{
    derive, entry_files, media_landed, media_path, record, remove_unrecorded_entries, resync_all,
    sync, Derived, SyncReport,
};

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
