//! OPML feed lists, as feed readers and podcast apps export them
//! (Miniflux, FreshRSS, Feedly, AntennaPod…): reading one into feed targets
//! (`target import opml`) and writing the feed targets back
//! (`target export opml`). Nested outlines are categories ("News/Tech").
//!
//! A list is read whole and checked before anything is added, so a bad one
//! changes nothing: a DOCTYPE (entity expansion), more than
//! [`MAX_OUTLINES`] outlines or [`MAX_DEPTH`] levels, a feed URL that is not
//! http(s) (`javascript:`, `file:`) or malformed XML is refused with the
//! outline it concerns.

use quick_xml::events::Event;

use crate::{CommanderError, Result};

/// Most outlines a list may hold: a heavy reader follows a few thousand
/// feeds; a hundred thousand is an attack on the commander, not a list.
pub const MAX_OUTLINES: usize = 10_000;

/// Deepest nesting of categories.
pub const MAX_DEPTH: usize = 16;

/// Largest OPML file read.
pub const MAX_BYTES: u64 = 16 << 20;

/// A feed in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// The outline's title (`title`, else `text`), as the reader shows it.
    pub title: String,
    pub url: String,
    /// The enclosing outlines' titles, joined with '/'.
    pub category: String,
}

fn invalid(why: String) -> CommanderError {
    CommanderError::Invalid(format!("{why}; nothing was imported"))
}

/// The feeds in an OPML document (1.0 or 2.0), in document order.
pub fn parse(text: &str) -> Result<Vec<Feed>> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut feeds = Vec::new();
    // Titles of the open outlines; None for one that is itself a feed.
    let mut open: Vec<Option<String>> = Vec::new();
    let (mut outlines, mut saw_opml) = (0usize, false);
    loop {
        let event = reader.read_event().map_err(|e| {
            invalid(format!(
                "the OPML is not well-formed XML (at byte {}): {e}",
                reader.buffer_position()
            ))
        })?;
        match event {
            Event::DocType(_) => {
                return Err(invalid(
                    "the OPML has a DOCTYPE (entity declarations): feed readers do not write one, \
                     and Ark does not expand entities"
                        .into(),
                ))
            }
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == "opml" => {
                saw_opml = true;
            }
            Event::Start(ref e) | Event::Empty(ref e) if e.local_name().as_ref() == "outline" => {
                outlines += 1;
                if outlines > MAX_OUTLINES {
                    return Err(invalid(format!(
                        "the OPML has more than {MAX_OUTLINES} outlines"
                    )));
                }
                let empty = matches!(event, Event::Empty(_));
                let attr = |name: &str| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.local_name().as_ref().eq_ignore_ascii_case(name))
                        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok())
                        .map(|v| v.trim().to_string())
                        .unwrap_or_default()
                };
                let title = Some(attr("title"))
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| attr("text"));
                let url = attr("xmlUrl");
                let is_feed = !url.is_empty();
                if is_feed {
                    check_url(&title, &url)?;
                    feeds.push(Feed {
                        title: title.clone(),
                        url,
                        // Each level trimmed and without '/', so a list
                        // Ark writes (a level per outline) reads the same.
                        category: open
                            .iter()
                            .flatten()
                            .flat_map(|title| title.split('/'))
                            .map(str::trim)
                            .filter(|level| !level.is_empty())
                            // Written back, each level is an outline, and
                            // the feed one more: within MAX_DEPTH.
                            .take(MAX_DEPTH - 1)
                            .collect::<Vec<_>>()
                            .join("/"),
                    });
                }
                if !empty {
                    // An untitled grouping outline is no category level.
                    open.push(Some(title).filter(|t| !is_feed && !t.is_empty()));
                    if open.len() > MAX_DEPTH {
                        return Err(invalid(format!(
                            "the OPML nests outlines deeper than {MAX_DEPTH} levels"
                        )));
                    }
                }
            }
            Event::End(e) if e.local_name().as_ref() == "outline" => {
                open.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_opml {
        return Err(invalid(
            "this is not an OPML document (no <opml> element): export the subscriptions as OPML from the reader".into(),
        ));
    }
    Ok(feeds)
}

/// A feed URL must be http(s) with a host.
fn check_url(title: &str, url: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(url).ok();
    let ok = parsed
        .as_ref()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if ok {
        return Ok(());
    }
    let scheme = parsed
        .map(|u| format!("{}:", u.scheme()))
        .unwrap_or_else(|| "no".into());
    Err(invalid(format!(
        "outline {title:?} has a {scheme} feed URL ({url:?}): only http and https feeds are imported; \
         remove or fix it in the file"
    )))
}

/// A target name for `title` (or, without one, the URL's host and path):
/// lower-case letters, digits and '-', at most 60 bytes.
pub fn name_for(title: &str, url: &str) -> String {
    let source = if title.trim().is_empty() { url } else { title };
    let mut name = String::new();
    for c in source.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.ends_with('-') && !name.is_empty() {
            name.push('-');
        }
        if name.len() >= 60 {
            break;
        }
    }
    let name = name.trim_end_matches('-').to_string();
    if name.is_empty() {
        "feed".into()
    } else {
        name
    }
}

fn escape(s: &str) -> String {
    crate::library::xml_escape(s)
}

/// An OPML 2.0 document of `feeds` (title, URL, category), nested by
/// category.
pub fn write(feeds: &[Feed], created: &str) -> String {
    let mut sorted: Vec<&Feed> = feeds.iter().collect();
    sorted.sort_by(|a, b| (&a.category, &a.title).cmp(&(&b.category, &b.title)));
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<opml version=\"2.0\">\n  <head>\n    \
         <title>Ark feeds</title>\n    <dateCreated>{}</dateCreated>\n  </head>\n  <body>\n",
        escape(created)
    );
    let mut open: Vec<&str> = Vec::new();
    for feed in sorted {
        let path: Vec<&str> = feed.category.split('/').filter(|s| !s.is_empty()).collect();
        let common = open.iter().zip(&path).take_while(|(a, b)| a == b).count();
        while open.len() > common {
            open.pop();
            out.push_str(&"  ".repeat(open.len() + 2));
            out.push_str("</outline>\n");
        }
        for level in &path[common..] {
            out.push_str(&"  ".repeat(open.len() + 2));
            out.push_str(&format!(
                "<outline text=\"{0}\" title=\"{0}\">\n",
                escape(level)
            ));
            open.push(level);
        }
        out.push_str(&"  ".repeat(open.len() + 2));
        out.push_str(&format!(
            "<outline type=\"rss\" text=\"{0}\" title=\"{0}\" xmlUrl=\"{1}\"/>\n",
            escape(&feed.title),
            escape(&feed.url)
        ));
    }
    while !open.is_empty() {
        open.pop();
        out.push_str(&"  ".repeat(open.len() + 2));
        out.push_str("</outline>\n");
    }
    out.push_str("  </body>\n</opml>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `opml` fuzz target: feeds under untitled grouping
    /// outlines got the category "///" (one empty level each), which Ark
    /// wrote back as no category at all. An untitled outline is no level.
    /// Found by the `opml` fuzz target: a category title with a '/' and
    /// spaces around it ("News/ Tech") became two levels when written, and
    /// the second, trimmed when read back, was another category.
    #[test]
    fn regression_fuzz_opml_category_levels_are_trimmed() {
        let text = r#"<opml version="2.0"><body><outline text="News/  Tech /">
<outline xmlUrl="https://a.example/f"/></outline></body></opml>"#;
        let feeds = parse(text).expect("parse");
        assert_eq!(feeds[0].category, "News/Tech");
        assert_eq!(parse(&write(&feeds, "now")).expect("reparse"), feeds);
    }

    /// Found by the `opml` fuzz target: titles with many '/' made more
    /// category levels than a list may nest, so Ark wrote a list it refuses.
    #[test]
    fn regression_fuzz_opml_category_levels_fit_the_depth_limit() {
        let deep = (0..40).map(|i| i.to_string()).collect::<Vec<_>>().join("/");
        let text = format!(
            r#"<opml version="2.0"><body><outline text="{deep}"><outline xmlUrl="https://a.example/f"/></outline></body></opml>"#
        );
        let feeds = parse(&text).expect("parse");
        assert_eq!(feeds[0].category.split('/').count(), MAX_DEPTH - 1);
        assert_eq!(parse(&write(&feeds, "now")).expect("reparse"), feeds);
    }

    #[test]
    fn regression_fuzz_opml_untitled_category_levels() {
        let text = r#"<opml version="2.0"><body><outline><outline text="">
<outline title=""><outline text="Tech"><outline xmlUrl="https://a.example/f"/>
</outline></outline></outline></outline></body></opml>"#;
        let feeds = parse(text).expect("parse");
        assert_eq!(feeds[0].category, "Tech");
        let again = parse(&write(&feeds, "now")).expect("reparse");
        assert_eq!(again, feeds);
    }

    #[test]
    fn nested_outlines_become_categories_and_round_trip() {
        let text = r#"<?xml version="1.0"?><opml version="1.0"><head><title>x</title></head><body>
<outline text="News"><outline text="Tech" title="Tech">
  <outline type="rss" text="A &amp; B" xmlUrl="https://a.example/feed?x=1&amp;y=2"/>
</outline><outline text="Local" xmlUrl="http://local.example/rss"/></outline>
<outline text="Top" xmlUrl="https://top.example/atom"/></body></opml>"#;
        let feeds = parse(text).expect("parsed");
        assert_eq!(
            feeds,
            [
                Feed {
                    title: "A & B".into(),
                    url: "https://a.example/feed?x=1&y=2".into(),
                    category: "News/Tech".into()
                },
                Feed {
                    title: "Local".into(),
                    url: "http://local.example/rss".into(),
                    category: "News".into()
                },
                Feed {
                    title: "Top".into(),
                    url: "https://top.example/atom".into(),
                    category: String::new()
                },
            ]
        );
        let mut again = parse(&write(&feeds, "now")).expect("round trip");
        let mut want = feeds.clone();
        again.sort_by(|a, b| a.url.cmp(&b.url));
        want.sort_by(|a, b| a.url.cmp(&b.url));
        assert_eq!(again, want);
    }

    #[test]
    fn hostile_lists_are_refused_with_the_reason() {
        let cases: [(&str, String); 5] = [
            ("DOCTYPE", r#"<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><opml><body><outline text="&b;" xmlUrl="http://x.example/"/></body></opml>"#.into()),
            ("javascript:", r#"<opml><body><outline text="x" xmlUrl="javascript:alert(1)"/></body></opml>"#.into()),
            ("file:", r#"<opml><body><outline text="x" xmlUrl="file:///etc/passwd"/></body></opml>"#.into()),
            ("more than 10000", format!("<opml><body>{}</body></opml>", "<outline text=\"x\"/>".repeat(100_000))),
            ("not well-formed", "<opml><body><outline text=\"x\" xmlUrl=\"http://x.example/\"></body></opml>".into()),
        ];
        for (says, text) in cases {
            let err = parse(&text).expect_err(says).to_string();
            assert!(
                err.contains(says) && err.contains("nothing was imported"),
                "{says}: {err}"
            );
        }
        let err = parse("<rss><channel/></rss>")
            .expect_err("not opml")
            .to_string();
        assert!(err.contains("not an OPML document"), "{err}");
    }

    #[test]
    fn names_are_plain() {
        assert_eq!(
            name_for("Ars Technica — All content!", ""),
            "ars-technica-all-content"
        );
        assert_eq!(
            name_for("", "https://feeds.example/x.xml"),
            "https-feeds-example-x-xml"
        );
        assert_eq!(name_for("ümlaut", ""), "mlaut");
        assert_eq!(name_for("…", ""), "feed");
    }
}
