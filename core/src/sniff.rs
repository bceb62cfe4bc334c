//! Is this body an HTML page? Decided from its first bytes, whatever the
//! origin declared as its type: an error page, a login wall or a "we moved"
//! notice served with `200` and `application/octet-stream` must not land as
//! the file. Both sides run it: the agent as the bytes arrive (before
//! upload), the commander on its own copy before landing (an agent's word
//! is a claim).
//!
//! The rule follows the WHATWG MIME-sniffing standard's HTML patterns: after
//! a byte-order mark, whitespace, comments and an XML declaration, the
//! document opens with `<!DOCTYPE html` or one of the tags only HTML starts
//! with (`<html`, `<head`, `<body`, `<script`, …), case-insensitively,
//! followed by a space, `>` or `/`. A feed (`<rss`, `<feed`, `<rdf:RDF`), an
//! SVG, a ZIM or a git bundle never matches. Memory is bounded: comments and
//! whitespace are skipped as they stream by, never stored, so padding does
//! not hide a page; at most the first bytes of one tag are kept.

/// Longest run of bytes kept while undecided: the start of one tag. The
/// sniff never holds more, however long the comments and whitespace before
/// the first element are (they are skipped, not stored).
const TAG_PREFIX: usize = 16;

/// The tags the WHATWG standard takes as the start of an HTML document.
const HTML_TAGS: &[&[u8]] = &[
    b"!doctype html",
    b"html",
    b"head",
    b"body",
    b"script",
    b"iframe",
    b"h1",
    b"div",
    b"font",
    b"table",
    b"a",
    b"style",
    b"title",
    b"b",
    b"br",
    b"p",
];

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Html,
    NotHtml,
    /// More bytes are needed to tell.
    Undecided,
}

/// Looks at the start of a body. `complete` says `head` is the whole body
/// (or all of it that will be looked at): then the answer is never
/// [`Verdict::Undecided`].
pub fn html_verdict(head: &[u8], complete: bool) -> Verdict {
    let mut sniff = HtmlSniff::default();
    let verdict = sniff.feed(head);
    match verdict {
        Verdict::Undecided if complete => Verdict::NotHtml,
        other => other,
    }
}

fn is_tag_end(b: u8) -> bool {
    b.is_ascii_whitespace() || b == b'>' || b == b'/'
}

/// Does `url` ask for an HTML page (its path ends in `.html` or `.htm`)?
/// Only then is an HTML body what was asked for.
pub fn url_wants_html(url: &str) -> bool {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    path.ends_with(".html") || path.ends_with(".htm") || path.ends_with(".xhtml")
}

/// The refusal every side gives for an HTML body (one wording, so a reason
/// reads the same in `runs` whichever side refused).
pub fn html_refusal() -> String {
    "the origin sent an HTML page instead of the file (an error or login page?): \
     if the target really is a web page, give a URL ending in .html"
        .into()
}

/// Where the sniff is in the body's prologue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum State {
    /// At byte 0: a byte-order mark may come (its bytes so far).
    #[default]
    Start,
    Bom(Vec<u8>),
    /// Between elements: whitespace is skipped.
    Between,
    /// After a `<`: the bytes of the tag so far (at most [`TAG_PREFIX`]).
    Open(Vec<u8>),
    /// Inside `<!-- … -->`: how many `-` just passed.
    Comment(u8),
    /// Inside `<? … ?>`: whether a `?` just passed.
    Declaration(bool),
    Decided(bool),
}

/// Feeds a body piece by piece and answers as soon as the first bytes tell.
/// Memory stays at a few bytes whatever arrives.
#[derive(Debug, Default)]
pub struct HtmlSniff {
    state: State,
}

impl HtmlSniff {
    /// The body starts again from byte 0.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// The next bytes; `Err` once they show an HTML page.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self.feed(bytes) {
            Verdict::Html => Err(html_refusal()),
            _ => Ok(()),
        }
    }

    /// The body ended: what did not show a page by now is not one.
    pub fn finish(&mut self) -> Result<(), String> {
        if !matches!(self.state, State::Decided(_)) {
            self.state = State::Decided(false);
        }
        Ok(())
    }

    /// Whether the first bytes have told already.
    pub fn decided(&self) -> bool {
        matches!(self.state, State::Decided(_))
    }

    /// The next bytes; the verdict so far.
    pub fn feed(&mut self, bytes: &[u8]) -> Verdict {
        for &b in bytes {
            if let State::Decided(html) = self.state {
                return verdict(html);
            }
            self.step(b);
        }
        match self.state {
            State::Decided(html) => verdict(html),
            _ => Verdict::Undecided,
        }
    }

    fn step(&mut self, b: u8) {
        const BOMS: [&[u8]; 3] = [b"\xEF\xBB\xBF", b"\xFE\xFF", b"\xFF\xFE"];
        self.state = match std::mem::take(&mut self.state) {
            State::Start => {
                if BOMS.iter().any(|bom| bom[0] == b) {
                    State::Bom(vec![b])
                } else {
                    return self.between(b);
                }
            }
            State::Bom(mut seen) => {
                seen.push(b);
                if BOMS.contains(&seen.as_slice()) {
                    State::Between
                } else if BOMS.iter().any(|bom| bom.starts_with(&seen)) {
                    State::Bom(seen)
                } else {
                    // Not a BOM after all: a binary.
                    State::Decided(false)
                }
            }
            State::Between => return self.between(b),
            State::Open(mut tag) => {
                tag.push(b);
                open_tag(tag)
            }
            State::Comment(dashes) => match b {
                b'-' => State::Comment(dashes.saturating_add(1)),
                b'>' if dashes >= 2 => State::Between,
                _ => State::Comment(0),
            },
            State::Declaration(question) => match b {
                b'?' => State::Declaration(true),
                b'>' if question => State::Between,
                _ => State::Declaration(false),
            },
            State::Decided(html) => State::Decided(html),
        };
    }

    fn between(&mut self, b: u8) {
        self.state = match b {
            b if b.is_ascii_whitespace() => State::Between,
            b'<' => State::Open(Vec::with_capacity(TAG_PREFIX)),
            _ => State::Decided(false),
        };
    }
}

fn verdict(html: bool) -> Verdict {
    if html {
        Verdict::Html
    } else {
        Verdict::NotHtml
    }
}

/// The state after the bytes `tag` that followed a `<`.
fn open_tag(tag: Vec<u8>) -> State {
    if tag == b"!--" {
        return State::Comment(0);
    }
    if tag == b"?" {
        return State::Declaration(false);
    }
    let mut may_still_be = b"!--".starts_with(&tag);
    for html in HTML_TAGS {
        let n = html.len();
        if tag.len() > n {
            if tag[..n].eq_ignore_ascii_case(html) && is_tag_end(tag[n]) {
                return State::Decided(true);
            }
        } else if tag.eq_ignore_ascii_case(&html[..tag.len()]) {
            // The tag (or its start) without the byte that ends it yet.
            may_still_be = true;
        }
    }
    if may_still_be && tag.len() < TAG_PREFIX {
        State::Open(tag)
    } else {
        State::Decided(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_recognised_behind_boms_whitespace_comments_and_declarations() {
        let html: &[&[u8]] = &[
            b"<!DOCTYPE html><html><body>moved</body></html>",
            b"<!doctype HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\">",
            b"\xEF\xBB\xBF  \r\n\t<HTML lang=en>",
            b"<!-- generated by nginx --><html>",
            b"<!-- a -->\n<!-- b -->\n<head><title>x</title>",
            b"<?xml version=\"1.0\"?>\n<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\">",
            b"<body>",
            b"<p>Not found</p>",
            b"<script>location='/'</script>",
            b"<br/>",
            b"<TITLE>403 Forbidden</TITLE>",
        ];
        for page in html {
            assert_eq!(
                html_verdict(page, true),
                Verdict::Html,
                "{}",
                String::from_utf8_lossy(page)
            );
        }
        let not: &[&[u8]] = &[
            b"",
            b"ZIM\x04",
            b"# v2 git bundle\n",
            b"<?xml version=\"1.0\"?><rss version=\"2.0\">",
            b"<feed xmlns=\"http://www.w3.org/2005/Atom\">",
            b"<rdf:RDF>",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\">",
            b"<bookmark>",
            b"<paragraph>",
            b"<html5lib-test-data>",
            b"{\"version\": \"https://jsonfeed.org/version/1.1\"}",
            b"plain text <html>",
            b"<!-- never closed",
        ];
        for body in not {
            assert_eq!(
                html_verdict(body, true),
                Verdict::NotHtml,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_page_split_at_every_byte_is_still_seen() {
        let page = b"\xEF\xBB\xBF\n<!-- cdn -->\n<!DOCTYPE html><html><body>Oops</body></html>";
        for cut in 1..page.len() {
            let mut sniff = HtmlSniff::default();
            let first = sniff.update(&page[..cut]);
            let second = first.and_then(|()| sniff.update(&page[cut..]));
            assert!(second.is_err(), "split at {cut}: the page passed");
        }
        // Undecided after a short prefix: the whole tag must arrive first.
        assert_eq!(html_verdict(b"<ht", false), Verdict::Undecided);
        assert_eq!(html_verdict(b"<html", false), Verdict::Undecided);
        assert_eq!(html_verdict(b"<!-", false), Verdict::Undecided);
        assert_eq!(html_verdict(b"<htmx", false), Verdict::NotHtml);
    }

    #[test]
    fn a_page_behind_a_long_comment_is_seen_and_memory_stays_bounded() {
        let mut page = b"<!--".to_vec();
        page.extend(std::iter::repeat_n(b'-', 200_000));
        page.extend_from_slice(b"--><html>");
        let mut sniff = HtmlSniff::default();
        assert!(page.chunks(1000).try_for_each(|c| sniff.update(c)).is_err());
        // A megabyte of whitespace keeps it undecided, holding nothing;
        // what follows still tells.
        let mut sniff = HtmlSniff::default();
        assert!(sniff.update(&vec![b' '; 1 << 20]).is_ok());
        assert_eq!(sniff.state, State::Between);
        assert!(sniff.update(b"<html>").is_err());
    }

    #[test]
    fn only_html_urls_want_html() {
        assert!(url_wants_html("http://o/index.HTML?x=1"));
        assert!(url_wants_html("http://o/a.htm#top"));
        assert!(!url_wants_html("http://o/file.zim"));
        assert!(!url_wants_html("http://o/download?name=x.html.zim"));
    }
}
