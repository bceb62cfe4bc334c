//! The commander's own requests for sources that move: a listing, read
//! conditionally, and the digest a release publishes. The commander asks
//! these itself rather than an agent, so no single agent decides which
//! release is current or what its digest is. Bounded in size and time; an
//! origin's redirects are followed (Kiwix's download server sends every
//! request on to a mirror).

use std::time::Duration;

use super::kiwix::Release;

/// Largest listing read: download.kiwix.org's biggest directory index is
/// well under 2 MiB, a catalog page under 8 MiB.
pub const LISTING_LIMIT: usize = 16 << 20;

/// Largest digest sidecar read (a Metalink names a few dozen mirrors).
const SIDECAR_LIMIT: usize = 256 << 10;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Redirects followed for a listing or a sidecar.
const MAX_REDIRECTS: usize = 5;

/// The HTTP client sources use.
pub fn client() -> Result<reqwest::Client, String> {
    ark_link::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .user_agent(concat!("ark-commander/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// A listing read.
#[derive(Debug)]
pub enum Listed {
    /// 304: the validators still hold.
    NotModified,
    Body {
        text: String,
        /// Where the listing was after redirects (relative links resolve
        /// against it).
        base: reqwest::Url,
        etag: String,
        last_modified: String,
    },
}

/// Reads the listing at `url`, conditionally on the validators given.
pub async fn listing(
    client: &reqwest::Client,
    url: &str,
    (etag, last_modified): (&str, &str),
) -> Result<Listed, String> {
    let mut request = client.get(url);
    if !etag.is_empty() {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    if !last_modified.is_empty() {
        request = request.header(reqwest::header::IF_MODIFIED_SINCE, last_modified);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("reading the listing {url}: {e}"))?;
    if response.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Listed::NotModified);
    }
    if !response.status().is_success() {
        return Err(format!(
            "the listing {url} answered {}: check the --from URL",
            response.status()
        ));
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (etag, last_modified) = (
        header(reqwest::header::ETAG),
        header(reqwest::header::LAST_MODIFIED),
    );
    let base = response.url().clone();
    let bytes = capped(response, LISTING_LIMIT)
        .await
        .map_err(|e| format!("reading the listing {url}: {e}"))?;
    Ok(Listed::Body {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        base,
        etag,
        last_modified,
    })
}

/// The body of `response`, refused past `limit` bytes.
async fn capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("it is larger than {limit} bytes"));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > limit {
            return Err(format!("it is larger than {limit} bytes"));
        }
    }
    Ok(bytes)
}

/// A small text at `url`, or None when it is absent or unreadable.
async fn sidecar(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let bytes = capped(response, SIDECAR_LIMIT).await.ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The SHA-256 the origin publishes for `release` and where: its Metalink
/// (the one the catalog names, else `FILE.meta4`), else `FILE.sha256`.
pub async fn published_sha256(
    client: &reqwest::Client,
    release: &Release,
) -> Option<(String, String)> {
    let base = release.digest_base();
    let meta4s = release
        .meta4
        .iter()
        .cloned()
        .chain(std::iter::once(format!("{base}.meta4")));
    for url in meta4s {
        if let Some(text) = sidecar(client, &url).await {
            if let Some((hex, _size)) = ark_core::digest::parse_meta4(&text) {
                return Some((hex, url));
            }
        }
    }
    let url = format!("{base}.sha256");
    let text = sidecar(client, &url).await?;
    ark_core::digest::parse_sum(&text, 64).map(|hex| (hex, url))
}

/// Kiwix's undated permalink of `book` in the listing's directory
/// (`…/wikipedia_en_all_maxi.zim`, which the download server redirects to
/// the dated file): the release it leads to, if it is one of the book's. A
/// fallback only, for when the listing cannot be read or lists no release:
/// permalinks break (a mirror that does not redirect, a renamed book), and
/// only the listing shows a book's history. None for a catalog (no
/// directory to look in).
pub async fn permalink(client: &reqwest::Client, listing: &str, book: &str) -> Option<Release> {
    let dir = reqwest::Url::parse(listing).ok()?;
    if !dir.path().ends_with('/') {
        return None;
    }
    let url = dir.join(&format!("{book}.zim")).ok()?;
    let answer = client
        .head(url)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?;
    let dated = answer.url().clone();
    let mut release = Release::parse(book, &super::kiwix::file_of(&dated)?)?;
    release.url = dated.to_string();
    Some(release)
}
