//! Fuzzing entry point of the fetch's response handling: what the agent
//! reads from an origin's answer before and while taking its body. Run by
//! the `fetch_response` target in `fuzz/` and by the stable replay test.
//! Not an API: hidden from the docs.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};

use super::{content_range, html_instead_of_file, Validators};

/// The input is an answer's header block (`Name: value` lines, as on the
/// wire) and, after an empty line, its body: the Content-Range, the
/// validators against kept ones, the HTML refusal, the redirect's Location
/// and the sniff of the body's first bytes.
pub fn response(bytes: &[u8]) {
    let (head, body) = split_head(bytes);
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let _ = content_range(&headers);
    let got = Validators::from_headers(&headers);
    let kept = Validators {
        etag: Some("\"v1\"".into()),
        last_modified: Some("Wed, 02 Dec 2026 19:00:00 GMT".into()),
    };
    let _ = (
        kept.same_version(&got),
        got.same_version(&kept),
        got.same_version(&got),
    );
    let _ = got.if_range();
    let _ = html_instead_of_file("https://origin.example.org/files/a.zim", &headers);
    if let Some(location) = headers.get(LOCATION).and_then(|v| v.to_str().ok()) {
        if let Ok(at) = reqwest::Url::parse("https://origin.example.org/files/a.zim") {
            let _ = at.join(location);
        }
    }
    let mut sniff = crate::sniff::HtmlSniff::default();
    if body
        .chunks(64)
        .try_for_each(|piece| sniff.update(piece))
        .is_ok()
    {
        let _ = sniff.finish();
    }
}

/// The header block and the body, split at the first empty line.
fn split_head(bytes: &[u8]) -> (&[u8], &[u8]) {
    for (at, window) in bytes.windows(2).enumerate() {
        if window == b"\n\n" {
            return (&bytes[..at], &bytes[at + 2..]);
        }
    }
    (bytes, &[])
}
