//! Kiwix books: which dated releases of a book a listing offers, and the
//! newest of them. A book is named without its date
//! (`wikipedia_en_all_nopic`); its releases are files
//! `BOOK_YYYY-MM[suffix].zim` (a re-published month gets a letter,
//! `…_2026-07a`, which sorts after `…_2026-07`), or the first part of a
//! split archive (`.zimaa`). Two listings are understood: the HTML index a
//! Kiwix mirror serves (nginx or Apache autoindex, download.kiwix.org) and
//! an OPDS catalog in Kiwix's v2 format (Atom entries whose acquisition
//! link points at the release's `.meta4`).
//!
//! Parsing only: fetching the listing and the digests is
//! [`super::fetch`]'s, deciding what to harvest is [`super`]'s.

use std::cmp::Ordering;

/// One dated release of a book. Releases compare by date, then by name:
/// where the file is does not make it another release.
#[derive(Debug, Clone)]
pub struct Release {
    /// The file name without `.zim`/`.zimaa` (`wikipedia_en_all_nopic_2026-07a`).
    pub name: String,
    /// Where the file is (`.zim`, or `.zimaa` for a split archive).
    pub url: String,
    /// Where its Metalink is, when the listing names one (OPDS).
    pub meta4: Option<String>,
    year: u16,
    month: u8,
    suffix: String,
}

impl Release {
    /// The release in `file` (a file name), if it is one of `book`'s; the
    /// url is filled in by the caller.
    pub fn parse(book: &str, file: &str) -> Option<Release> {
        let stem = file
            .strip_suffix(".zim")
            .or_else(|| file.strip_suffix(".zimaa"))?;
        let date = stem.strip_prefix(book)?.strip_prefix('_')?;
        let (year, rest) = date.split_once('-')?;
        if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let month = rest.get(..2)?;
        let suffix = &rest[2..];
        if !month.bytes().all(|b| b.is_ascii_digit())
            || !suffix.bytes().all(|b| b.is_ascii_lowercase())
            || suffix.len() > 3
        {
            return None;
        }
        let month: u8 = month.parse().ok()?;
        if !(1..=12).contains(&month) {
            return None;
        }
        Some(Release {
            name: stem.to_string(),
            url: String::new(),
            meta4: None,
            year: year.parse().ok()?,
            month,
            suffix: suffix.to_string(),
        })
    }

    /// Whether this is the first part of a split archive.
    pub fn split(&self) -> bool {
        self.url.ends_with(".zimaa")
    }

    /// Where a digest of the whole archive may be published: beside the
    /// `.zim` (a split archive's digests are for the joined file).
    pub fn digest_base(&self) -> String {
        match self.url.strip_suffix(".zimaa") {
            Some(stem) => format!("{stem}.zim"),
            None => self.url.clone(),
        }
    }

    fn key(&self) -> (u16, u8, &str) {
        (self.year, self.month, &self.suffix)
    }
}

impl Ord for Release {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key()
            .cmp(&other.key())
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialEq for Release {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Release {}

impl PartialOrd for Release {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The newest of `releases`.
pub fn newest(releases: Vec<Release>) -> Option<Release> {
    releases.into_iter().max()
}

/// The last path segment of `url`, percent-decoded.
pub(super) fn file_of(url: &reqwest::Url) -> Option<String> {
    let last = url.path_segments()?.next_back()?;
    Some(
        percent_decode(last)
            .unwrap_or_else(|| last.to_string())
            .to_string(),
    )
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The releases of `book` linked from an HTML directory index at `base`.
/// Every `href` is looked at; what is not a release of the book (sidecars,
/// other books, parent links) is passed over.
pub fn from_directory(book: &str, base: &reqwest::Url, html: &str) -> Vec<Release> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("href=") {
        rest = &rest[at + 5..];
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let Some(end) = rest[1..].find(quote) else {
            break;
        };
        let href = html_unescape(&rest[1..1 + end]);
        rest = &rest[1 + end..];
        if let Some(release) = release_at(book, base, &href) {
            found.push(release);
        }
    }
    dedupe(found)
}

/// The release `href` (resolved against `base`) names, if it is `book`'s.
fn release_at(book: &str, base: &reqwest::Url, href: &str) -> Option<Release> {
    let url = base.join(href).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let mut release = Release::parse(book, &file_of(&url)?)?;
    release.url = url.to_string();
    Some(release)
}

/// One release per name (an index may link a file twice); a `.zim` is
/// preferred to the split parts of the same release.
fn dedupe(mut found: Vec<Release>) -> Vec<Release> {
    found.sort_by(|a, b| a.name.cmp(&b.name).then(a.split().cmp(&b.split())));
    found.dedup_by(|later, first| later.name == first.name);
    found
}

fn html_unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// The releases of `book` in an OPDS catalog document (Kiwix catalog v2):
/// each entry's acquisition link (`rel` …`/acquisition/open-access`, type
/// `application/x-zim`) points at `RELEASE.zim.meta4` or at the file. An
/// entry that declares a `name` and `flavour` must declare this book.
pub fn from_opds(book: &str, base: &reqwest::Url, xml: &str) -> Result<Vec<Release>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut found = Vec::new();
    let mut entry: Option<OpdsEntry> = None;
    let mut text_of: Option<&'static str> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("the catalog is not well-formed XML: {e}"))?;
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let local = e.local_name();
                match local.as_ref() {
                    "entry" => entry = Some(OpdsEntry::default()),
                    "name" if entry.is_some() => text_of = Some("name"),
                    "flavour" if entry.is_some() => text_of = Some("flavour"),
                    "link" => {
                        if let Some(entry) = entry.as_mut() {
                            let attr = |name: &str| {
                                e.attributes()
                                    .flatten()
                                    .find(|a| a.key.local_name().as_ref() == name)
                                    .and_then(|a| {
                                        a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok()
                                    })
                                    .map(|v| v.into_owned())
                                    .unwrap_or_default()
                            };
                            if attr("rel").contains("acquisition") {
                                entry.links.push(attr("href"));
                            }
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => {
                if let (Some(field), Some(entry)) = (text_of, entry.as_mut()) {
                    let text = t.xml10_content().trim().to_string();
                    match field {
                        "name" => entry.name = text,
                        _ => entry.flavour = text,
                    }
                }
            }
            Event::End(e) => {
                text_of = None;
                if e.local_name().as_ref() == "entry" {
                    if let Some(done) = entry.take() {
                        found.extend(done.releases(book, base));
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(dedupe(found))
}

#[derive(Debug, Default)]
struct OpdsEntry {
    name: String,
    flavour: String,
    links: Vec<String>,
}

impl OpdsEntry {
    fn releases(self, book: &str, base: &reqwest::Url) -> Vec<Release> {
        let declared = match (self.name.as_str(), self.flavour.as_str()) {
            ("", _) => None,
            (name, "") => Some(name.to_string()),
            (name, flavour) => Some(format!("{name}_{flavour}")),
        };
        if declared.as_deref().is_some_and(|d| d != book) {
            return Vec::new();
        }
        self.links
            .iter()
            .filter_map(|href| {
                let meta4 = href.strip_suffix(".meta4");
                let mut release = release_at(book, base, meta4.unwrap_or(href))?;
                if meta4.is_some() {
                    release.meta4 = base.join(href).ok().map(|u| u.to_string());
                }
                Some(release)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOK: &str = "wikipedia_en_all_nopic";

    fn base() -> reqwest::Url {
        "http://mirror.example/zim/wikipedia/".parse().expect("url")
    }

    #[test]
    fn releases_sort_by_date_then_republication_letter() {
        let names = [
            "wikipedia_en_all_nopic_2026-07a.zim",
            "wikipedia_en_all_nopic_2025-12.zim",
            "wikipedia_en_all_nopic_2026-07.zim",
            "wikipedia_en_all_nopic_2026-01.zim",
        ];
        let mut releases: Vec<Release> = names
            .iter()
            .map(|n| Release::parse(BOOK, n).expect(n))
            .collect();
        releases.sort();
        let order: Vec<&str> = releases.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "wikipedia_en_all_nopic_2025-12",
                "wikipedia_en_all_nopic_2026-01",
                "wikipedia_en_all_nopic_2026-07",
                "wikipedia_en_all_nopic_2026-07a",
            ]
        );
    }

    #[test]
    fn other_books_flavours_and_sidecars_are_not_releases() {
        for file in [
            "wikipedia_en_all_maxi_2026-07.zim",
            "wikipedia_en_all_nopic.zim",
            "wikipedia_en_all_nopic_2026-07.zim.sha256",
            "wikipedia_en_all_nopic_2026-07.zim.meta4",
            "wikipedia_en_all_nopic_2026-13.zim",
            "wikipedia_en_all_nopic_26-07.zim",
            "wikipedia_en_all_nopic_2026-07X.zim",
            "xwikipedia_en_all_nopic_2026-07.zim",
        ] {
            assert!(Release::parse(BOOK, file).is_none(), "{file}");
        }
        assert!(Release::parse("wikipedia_en_all", "wikipedia_en_all_nopic_2026-07.zim").is_none());
    }

    #[test]
    fn a_directory_index_yields_the_books_releases() {
        let html = r#"<html><head><title>Index of /zim/wikipedia/</title></head><body>
<a href="../">../</a>
<a href="wikipedia_en_all_maxi_2026-10.zim">wikipedia_en_all_maxi_2026-10.zim</a>
<a href="wikipedia_en_all_nopic_2026-07.zim">wikipedia_en_all_nopic_2026-07.zim</a>
<a href="wikipedia_en_all_nopic_2026-07.zim.sha256">…</a>
<a href='wikipedia_en_all_nopic_2026-10.zim'>…</a>
<a href="wikipedia_en_all_nopic_2026-10.zim">again</a>
<a href="wikipedia_en_all_nopic_2027-01.zimaa">split</a>
<a href="wikipedia_en_all_nopic_2027-01.zimab">split</a>
<a href="javascript:alert(1)">x</a>
<a href="file:///etc/wikipedia_en_all_nopic_2028-01.zim">x</a>
</body></html>"#;
        let releases = from_directory(BOOK, &base(), html);
        let names: Vec<&str> = releases.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "wikipedia_en_all_nopic_2026-07",
                "wikipedia_en_all_nopic_2026-10",
                "wikipedia_en_all_nopic_2027-01"
            ]
        );
        let newest = newest(releases).expect("newest");
        assert!(newest.split(), "{newest:?}");
        assert_eq!(
            newest.url,
            "http://mirror.example/zim/wikipedia/wikipedia_en_all_nopic_2027-01.zimaa"
        );
        assert_eq!(
            newest.digest_base(),
            "http://mirror.example/zim/wikipedia/wikipedia_en_all_nopic_2027-01.zim"
        );
    }

    #[test]
    fn an_opds_catalog_yields_the_books_releases_and_their_metalinks() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opds="https://specs.opds.io/opds-1.2">
  <entry>
    <name>wikipedia_en_all</name><flavour>nopic</flavour>
    <updated>2026-10-01T00:00:00Z</updated>
    <link rel="http://opds-spec.org/acquisition/open-access" type="application/x-zim"
          href="https://mirror.example/zim/wikipedia/wikipedia_en_all_nopic_2026-10.zim.meta4" length="1"/>
  </entry>
  <entry>
    <name>wikipedia_en_all</name><flavour>maxi</flavour>
    <link rel="http://opds-spec.org/acquisition/open-access" type="application/x-zim"
          href="https://mirror.example/zim/wikipedia/wikipedia_en_all_maxi_2026-11.zim.meta4"/>
  </entry>
  <entry>
    <name>wikipedia_en_all</name><flavour>maxi</flavour>
    <link rel="http://opds-spec.org/acquisition/open-access" type="application/x-zim"
          href="https://mirror.example/zim/wikipedia/wikipedia_en_all_nopic_2027-01.zim.meta4"/>
  </entry>
</feed>"#;
        let releases = from_opds(BOOK, &base(), xml).expect("parsed");
        assert_eq!(releases.len(), 1, "{releases:?}");
        let r = &releases[0];
        assert_eq!(r.name, "wikipedia_en_all_nopic_2026-10");
        assert_eq!(
            r.url,
            "https://mirror.example/zim/wikipedia/wikipedia_en_all_nopic_2026-10.zim"
        );
        assert_eq!(
            r.meta4.as_deref(),
            Some("https://mirror.example/zim/wikipedia/wikipedia_en_all_nopic_2026-10.zim.meta4")
        );
    }

    #[test]
    fn a_hostile_catalog_is_refused_or_yields_nothing() {
        let entities = r#"<?xml version="1.0"?><!DOCTYPE f [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>
<feed><entry><name>&b;</name><link rel="acquisition" href="x_2026-01.zim"/></entry></feed>"#;
        assert!(from_opds(BOOK, &base(), entities)
            .unwrap_or_default()
            .is_empty());
        assert!(from_opds(BOOK, &base(), "<feed><entry>")
            .unwrap_or_default()
            .is_empty());
    }
}
