//! Streaming HTTP fetch into a staging file: the part of a harvest that
//! talks to the origin.
//!
//! - Conditional GET: with the validators of the last harvest
//!   (`If-None-Match` / `If-Modified-Since`) an unchanged origin costs one
//!   request and no body ([`Fetched::NotModified`]).
//! - Resume: when the body is cut, the fetch continues with
//!   `Range: bytes=<offset>-` guarded by `If-Range`, and checks that the
//!   `Content-Range` answers exactly what was asked. An origin that cannot
//!   resume (answers 200 to a range) restarts from zero — counted in
//!   [`Fetched::Body::restarts`], never silent.
//! - A resumed range must be the same version: a `206` whose validators
//!   (ETag, Last-Modified) differ from those of the kept bytes — whatever the
//!   origin did with `If-Range` — is never appended; the fetch starts again
//!   from zero, counted in `restarts`.
//! - Refusals before a byte is written: a non-2xx status, an HTML page where
//!   a file was expected (an error page served with 200), a declared length
//!   over the limit. An HTML body is also recognised by its first bytes
//!   ([`crate::sniff`]), whatever type it was declared with.
//! - Destinations: every request, and every redirect (followed here, not by
//!   the HTTP client, so each hop is checked), goes only where the job's
//!   [`Guard`] allows (see [`crate::destination`]).
//! - While streaming: a maximum size, a read timeout (a silent origin), and a
//!   minimum average rate over a window (a 1-byte/s drip).
//!
//! No `Accept-Encoding` is sent and no decompression is done: the bytes on
//! disk are the bytes the origin published, and a gzip bomb stays a small
//! compressed file bounded by the size limit.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::destination::Guard;

mod download;
#[doc(hidden)]
pub mod fuzzing;
mod resume;
mod throttle;
use crate::telemetry::ByteCounter;
pub use download::fetch_checked;
pub use resume::{
    remove_staged, resume_path, CHECKPOINT_BYTES, CHECKPOINT_EVERY, CHECKPOINT_MAX_BYTES,
};
pub use throttle::{lower_cap, Limit, Throttle};

/// What an origin said about a version of a resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Self {
            etag: text(header::ETAG),
            last_modified: text(header::LAST_MODIFIED),
        }
    }

    /// The value for `If-Range`: a strong ETag, else the date.
    fn if_range(&self) -> Option<&str> {
        self.strong_etag().or(self.last_modified.as_deref())
    }

    fn strong_etag(&self) -> Option<&str> {
        self.etag.as_deref().filter(|etag| !etag.starts_with("W/"))
    }

    /// Are the bytes of a `206` answer carrying `got` the same version as
    /// bytes kept under `self`? Only a positive match counts: a validator
    /// that differs, or none to compare (a weak ETag proves nothing about
    /// bytes), means another version may have been sent.
    pub fn same_version(&self, got: &Validators) -> bool {
        let differs = |a: &Option<String>, b: &Option<String>| a.is_some() && b.is_some() && a != b;
        if differs(&self.etag, &got.etag) || differs(&self.last_modified, &got.last_modified) {
            return false;
        }
        let strong = self.strong_etag().is_some() && self.strong_etag() == got.strong_etag();
        let dated = self.last_modified.is_some() && self.last_modified == got.last_modified;
        strong || dated
    }
}

/// The limits one fetch runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body accepted, in bytes.
    pub max_size: u64,
    /// Longest silence from the origin before the fetch gives up.
    pub read_timeout: Duration,
    /// Minimum average rate (bytes/s) over `min_rate_window`; 0 = no rule.
    pub min_rate: u64,
    pub min_rate_window: Duration,
    /// Body interruptions survived by resuming before the fetch fails.
    pub max_resumes: u32,
    /// Where the fetch may go (the default refuses the household's network).
    pub guard: Guard,
}

/// Default maximum size: above the largest Kiwix archive (full English
/// Wikipedia with pictures is ~110 GiB), below "the origin is endless".
pub const DEFAULT_MAX_SIZE: u64 = 256 << 30;
/// A minute of silence is a dead origin, not a slow one.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// 1 KiB/s averaged over two minutes: slower than any real link a
/// household has, faster than a drip meant to hold a lease forever.
pub const DEFAULT_MIN_RATE: u64 = 1024;
pub const DEFAULT_MIN_RATE_WINDOW: Duration = Duration::from_secs(120);
/// Resumes per fetch: enough for a flaky Wi-Fi night, few enough that a
/// broken origin fails in reasonable time.
pub const DEFAULT_MAX_RESUMES: u32 = 10;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
            read_timeout: DEFAULT_READ_TIMEOUT,
            min_rate: DEFAULT_MIN_RATE,
            min_rate_window: DEFAULT_MIN_RATE_WINDOW,
            max_resumes: DEFAULT_MAX_RESUMES,
            guard: Guard::default(),
        }
    }
}

/// How a fetch ended well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The origin answered 304 to our validators: nothing was written.
    NotModified,
    Body {
        size: u64,
        /// BLAKE3 of the body, computed as it arrived (equals `b3sum`).
        root: blake3::Hash,
        validators: Validators,
        /// Times the body was cut and continued with a range request.
        resumes: u32,
        /// Times the origin could not resume and the fetch began again at 0.
        restarts: u32,
        /// Bytes a previous attempt left on disk that were re-verified
        /// against their outboard and kept (the fetch resumed after them).
        reused: u64,
    },
}

/// Why a fetch failed; each says what failed on which URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: the origin answered HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("GET {url}: refused: {why}")]
    Refused { url: String, why: String },
    #[error("GET {url}: larger than the limit of {limit} bytes{}", .declared.map(|d| format!(" (declares {d})")).unwrap_or_default())]
    TooLarge {
        url: String,
        limit: u64,
        declared: Option<u64>,
    },
    #[error(
        "GET {url}: too slow: {rate} bytes/s over {window:?}, below the minimum of {min} bytes/s"
    )]
    TooSlow {
        url: String,
        rate: u64,
        min: u64,
        window: Duration,
    },
    #[error("GET {url}: the origin sent nothing for {0:?}", .after)]
    Stalled { url: String, after: Duration },
    #[error("GET {url}: the body was cut {resumes} times; giving up at byte {offset}")]
    Interrupted {
        url: String,
        resumes: u32,
        offset: u64,
    },
    #[error("GET {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "GET {url}: the staging disk cannot hold it: {free} bytes free < {needed} bytes needed"
    )]
    NoSpace { url: String, free: u64, needed: u64 },
}

impl FetchError {
    /// Whether trying the run again later can help.
    /// True when this agent's staging disk cannot hold the body (declared
    /// too big for it, or full while writing): another agent may.
    pub fn out_of_space(&self) -> bool {
        match self {
            Self::NoSpace { .. } => true,
            Self::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }

    pub fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Refused { .. } | Self::TooLarge { .. } => false,
            Self::TooSlow { .. }
            | Self::Stalled { .. }
            | Self::Interrupted { .. }
            | Self::Io { .. }
            | Self::NoSpace { .. } => true,
            // A redirect loop stays a loop; a dropped connection may not.
            Self::Transport { source, .. } => !source.is_redirect(),
        }
    }
}

/// Where the bytes go, and who hears about them.
#[derive(Debug, Clone, Copy)]
pub struct Sinks<'a> {
    /// The agent's cap, shared by all its jobs.
    pub throttle: &'a Throttle,
    /// This run's own cap, if the commander set one.
    pub run_throttle: Option<&'a Throttle>,
    /// This fetch's progress.
    pub progress: &'a Progress,
    /// The agent's throughput counter.
    pub counter: &'a ByteCounter,
    /// Self-yield, told of each transfer while its body streams (None:
    /// not watched, e.g. a test's or a benchmark's fetch).
    pub self_yield: Option<&'a crate::self_yield::SelfYield>,
}

/// How far a fetch has come, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes on disk.
    pub done: AtomicU64,
    /// The body's size when the origin declared it, else 0.
    pub total: AtomicU64,
}

/// Redirects followed before a fetch fails: real mirrors redirect once or
/// twice (MirrorBrain → mirror); a loop stops here.
pub const MAX_REDIRECTS: usize = 5;

/// How long a TCP connect to an origin may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The HTTP client every fetch uses: rustls with Ark's one provider (ring,
/// installed here if it is not yet), a connect timeout, no transparent
/// decompression, no redirects of its own ([`send`] follows them, checking
/// each hop) and a resolver that hands out only addresses a job may reach.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    http_client_with(HeaderMap::new())
}

/// [`http_client`] sending `headers` with every request (what an LFS
/// server's batch answer says its download needs).
pub fn http_client_with(headers: HeaderMap) -> reqwest::Result<reqwest::Client> {
    crate::link::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(std::sync::Arc::new(crate::destination::GuardedResolver))
        .user_agent(concat!("ark-agent/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .build()
}

/// Sends a GET of `url` built by `build`, following up to
/// [`MAX_REDIRECTS`] redirects; every hop is checked by `guard` before it
/// is requested. Returns the final answer (never a redirect).
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    guard: &Guard,
    build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, FetchError> {
    send_as(http, reqwest::Method::GET, url, guard, build).await
}

/// [`send`] with another method (an LFS batch request is a POST).
pub async fn send_as(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    guard: &Guard,
    build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, FetchError> {
    let refuse = |why: String| FetchError::Refused {
        url: url.into(),
        why,
    };
    let mut at = reqwest::Url::parse(url).map_err(|e| refuse(format!("not a URL: {e}")))?;
    for hop in 0..=MAX_REDIRECTS {
        if !matches!(at.scheme(), "http" | "https") {
            return Err(refuse(format!(
                "redirected to {at}: Ark fetches over http(s) only"
            )));
        }
        guard.check(&at).await.map_err(|r| refuse(r.0))?;
        let response = build(http.request(method.clone(), at.clone()))
            .send()
            .await
            .map_err(|source| FetchError::Transport {
                url: url.to_string(),
                source,
            })?;
        if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| refuse(format!("HTTP {} without a Location", response.status())))?;
        let next = at.join(location).map_err(|e| {
            refuse(format!(
                "redirected to an unreadable Location {location:?}: {e}"
            ))
        })?;
        tracing::debug!(%url, hop, to = %next, "following a redirect");
        at = next;
    }
    Err(refuse(format!(
        "more than {MAX_REDIRECTS} redirects (a redirect loop?)"
    )))
}

/// Is `content_type` an HTML page where `url` does not ask for one?
fn html_instead_of_file(url: &str, headers: &HeaderMap) -> bool {
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"));
    is_html && !crate::sniff::url_wants_html(url)
}

/// Parses `Content-Range: bytes START-END/TOTAL`.
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let spec = value.trim().strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((start.parse().ok()?, end.parse().ok()?, total))
}

/// Fetches `url` into `dest` (created or truncated).
pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    dest: &Path,
    conditional: &Validators,
    limits: &Limits,
    sinks: Sinks<'_>,
) -> Result<Fetched, FetchError> {
    fetch_checked(http, url, dest, conditional, limits, sinks, None).await
}

pub use ark_core::BodyCheck;

#[cfg(test)]
mod tests {
    use super::Validators;

    fn v(etag: Option<&str>, date: Option<&str>) -> Validators {
        Validators {
            etag: etag.map(str::to_string),
            last_modified: date.map(str::to_string),
        }
    }

    #[test]
    fn a_range_is_the_same_version_only_on_a_positive_match() {
        let date = Some("Sun, 01 Nov 2026 00:00:00 GMT");
        let other_date = Some("Mon, 02 Nov 2026 00:00:00 GMT");
        // (kept, sent, same?)
        let table = [
            (v(Some("\"a\""), date), v(Some("\"a\""), date), true),
            (v(Some("\"a\""), None), v(Some("\"a\""), None), true),
            (v(None, date), v(None, date), true),
            (v(Some("\"a\""), date), v(Some("\"a\""), None), true),
            (v(Some("\"a\""), date), v(Some("\"b\""), date), false),
            (v(Some("\"a\""), date), v(Some("\"a\""), other_date), false),
            (v(Some("\"a\""), None), v(None, None), false),
            (v(None, None), v(None, None), false),
            (v(Some("W/\"a\""), None), v(Some("W/\"a\""), None), false),
            (v(Some("W/\"a\""), date), v(Some("W/\"a\""), date), true),
            (v(None, date), v(Some("\"x\""), other_date), false),
        ];
        for (kept, sent, same) in table {
            assert_eq!(
                kept.same_version(&sent),
                same,
                "kept {kept:?}, sent {sent:?}"
            );
        }
    }
}
