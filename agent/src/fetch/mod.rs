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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::destination::Guard;
use crate::sniff::HtmlSniff;

mod throttle;
use crate::telemetry::ByteCounter;
use crate::tree::{group_cv, outboard_path, TreeHasher, CV_LEN, GROUP_LEN};
pub use throttle::Throttle;

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
}

impl FetchError {
    /// Whether trying the run again later can help.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Refused { .. } | Self::TooLarge { .. } => false,
            Self::TooSlow { .. }
            | Self::Stalled { .. }
            | Self::Interrupted { .. }
            | Self::Io { .. } => true,
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
}

/// How far a fetch has come, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes on disk.
    pub done: AtomicU64,
    /// The body's size when the origin declared it, else 0.
    pub total: AtomicU64,
}

/// Least bytes between two durable checkpoints of a fetch in progress. Each
/// checkpoint is two fsyncs, so much smaller would slow an SD card down.
pub const CHECKPOINT_BYTES: u64 = 4 << 20;
/// A checkpoint is due once [`CHECKPOINT_BYTES`] have arrived and a second
/// has passed, or [`CHECKPOINT_MAX_BYTES`] have arrived: a crash costs at
/// most about a second of transfer, and a fast link is not held to an fsync
/// every 4 MiB.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
pub const CHECKPOINT_MAX_BYTES: u64 = 64 << 20;

/// What a fetch leaves beside its file so a later attempt (after a crash or
/// a restart) can resume it. It names only whole groups whose CVs are
/// durable in the outboard, and is only a hint: the resuming fetch
/// re-hashes those groups on disk and trusts what matches.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ResumeState {
    url: String,
    validators: Validators,
    total: Option<u64>,
    groups: u64,
}

/// Where the resume state of a staged file lives: beside it.
pub fn resume_path(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".resume");
    name.into()
}

/// Removes a staged file with its outboard and resume state.
pub async fn remove_staged(dest: &Path) {
    let _ = tokio::fs::remove_file(dest).await;
    let _ = tokio::fs::remove_file(outboard_path(dest)).await;
    let _ = tokio::fs::remove_file(resume_path(dest)).await;
}

/// A staging file or its outboard, written through a buffer: network chunks
/// are small, and each write to a `tokio::fs::File` is a hop to the blocking
/// pool.
type Sink = tokio::io::BufWriter<tokio::fs::File>;

/// Write buffer of the staging file and of its outboard.
const DATA_BUFFER: usize = 1 << 20;
const OUTBOARD_BUFFER: usize = 64 * 1024;

/// Makes the data and outboard durable, then records how far they go
/// (write, fsync, rename: never a state ahead of its bytes).
async fn checkpoint(
    out: &mut Sink,
    outboard: &mut Sink,
    at: &Path,
    state: &ResumeState,
) -> std::io::Result<()> {
    out.flush().await?;
    out.get_ref().sync_data().await?;
    outboard.flush().await?;
    outboard.get_ref().sync_data().await?;
    let json = serde_json::to_vec(state).unwrap_or_default();
    let at = at.to_path_buf();
    tokio::task::spawn_blocking(move || crate::write_atomic(&at, &json, 0o600)).await?
}

/// The CVs of the groups on disk that still match the outboard, up to the
/// first that does not (a byte flipped while the agent was down, a torn
/// write): the fetch resumes from there.
fn verify_on_disk(
    data: &Path,
    outboard: &Path,
    groups: u64,
) -> std::io::Result<Vec<blake3::hazmat::ChainingValue>> {
    use std::io::Read;
    let mut data = std::fs::File::open(data)?;
    let recorded = std::fs::read(outboard)?;
    let mut verified = Vec::new();
    let mut group = vec![0u8; GROUP_LEN];
    for (index, cv) in recorded
        .chunks_exact(CV_LEN)
        .take(groups as usize)
        .enumerate()
    {
        if data.read_exact(&mut group).is_err() || group_cv(index as u64, &group) != cv {
            break;
        }
        verified.push(cv.try_into().unwrap_or([0; CV_LEN]));
    }
    Ok(verified)
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
    crate::link::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(std::sync::Arc::new(crate::destination::GuardedResolver))
        .user_agent(concat!("ark-agent/", env!("CARGO_PKG_VERSION")))
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
        let response =
            build(http.get(at.clone()))
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

/// [`fetch`] with a format check riding along.
pub async fn fetch_checked(
    http: &reqwest::Client,
    url: &str,
    dest: &Path,
    conditional: &Validators,
    limits: &Limits,
    sinks: Sinks<'_>,
    mut check: Option<&mut dyn BodyCheck>,
) -> Result<Fetched, FetchError> {
    let io = |source| FetchError::Io {
        path: dest.to_path_buf(),
        source,
    };
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io)?;
    }
    let mut file: Option<Sink> = None;
    // Every byte passes once through the tree hasher; the group CVs it
    // completes go to the outboard beside the file as they are made.
    let mut tree = TreeHasher::new();
    let outboard_at = outboard_path(dest);
    let mut outboard: Option<Sink> = None;
    let mut cv_bytes: Vec<u8> = Vec::with_capacity(64 * CV_LEN);
    let mut offset = 0u64;
    let mut total: Option<u64> = None;
    let mut validators = Validators::default();
    let (mut resumes, mut restarts) = (0u32, 0u32);
    let resume_at = resume_path(dest);
    let mut cvs_written = 0u64;
    let mut reused = 0u64;
    let previous = std::fs::read(&resume_at)
        .ok()
        .and_then(|json| serde_json::from_slice::<ResumeState>(&json).ok())
        .filter(|state| state.url == url);
    if let Some(state) = previous {
        let (data, ob) = (dest.to_path_buf(), outboard_at.clone());
        let groups = state.groups;
        let cvs = tokio::task::spawn_blocking(move || verify_on_disk(&data, &ob, groups))
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .unwrap_or_default();
        if (cvs.len() as u64) < groups {
            tracing::warn!(
                %url,
                group = cvs.len(),
                "bytes on disk no longer match their recorded hash: re-fetching from that group"
            );
        }
        if !cvs.is_empty() {
            let verified = cvs.len() as u64;
            offset = verified * GROUP_LEN as u64;
            let mut data = tokio::fs::OpenOptions::new()
                .write(true)
                .open(dest)
                .await
                .map_err(io)?;
            data.set_len(offset).await.map_err(io)?;
            data.seek(std::io::SeekFrom::End(0)).await.map_err(io)?;
            let mut ob = tokio::fs::OpenOptions::new()
                .write(true)
                .open(&outboard_at)
                .await
                .map_err(io)?;
            ob.set_len(verified * CV_LEN as u64).await.map_err(io)?;
            ob.seek(std::io::SeekFrom::End(0)).await.map_err(io)?;
            file = Some(Sink::with_capacity(DATA_BUFFER, data));
            outboard = Some(Sink::with_capacity(OUTBOARD_BUFFER, ob));
            tree = TreeHasher::from_verified_groups(&cvs);
            validators = state.validators;
            total = state.total;
            sinks
                .progress
                .total
                .store(total.unwrap_or(0), Ordering::Relaxed);
            cvs_written = verified;
            reused = offset;
            sinks.progress.done.store(offset, Ordering::Relaxed);
            tracing::info!(%url, offset, "resuming after re-verifying the bytes already on disk");
        }
    }
    // Every body is sniffed for an HTML page, unless an HTML page is what
    // the URL asks for.
    let mut sniff = (!crate::sniff::url_wants_html(url)).then(HtmlSniff::default);
    if offset > 0 && (check.is_some() || sniff.is_some()) {
        // The bytes kept from disk go through the checks first, read in
        // pieces (memory stays bounded whatever was kept).
        use tokio::io::AsyncReadExt;
        let mut kept = tokio::fs::File::open(dest).await.map_err(io)?.take(offset);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = kept.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            let refused = |why| FetchError::Refused {
                url: url.into(),
                why,
            };
            if let Some(sniff) = sniff.as_mut() {
                sniff.update(&buf[..n]).map_err(refused)?;
            }
            match check.as_deref_mut() {
                Some(check) => check.update(&buf[..n]).map_err(refused)?,
                None if sniff.as_ref().is_none_or(HtmlSniff::decided) => break,
                None => {}
            }
        }
    }
    let state_at = |validators: &Validators, total: Option<u64>, groups: u64| ResumeState {
        url: url.into(),
        validators: validators.clone(),
        total,
        groups,
    };
    let mut last_checkpoint = offset;
    let mut last_checkpoint_at = Instant::now();
    let mut window = (Instant::now(), offset);
    loop {
        let first = file.is_none();
        let build = |mut request: reqwest::RequestBuilder| {
            if first {
                if let Some(etag) = &conditional.etag {
                    request = request.header(header::IF_NONE_MATCH, etag);
                }
                if let Some(date) = &conditional.last_modified {
                    request = request.header(header::IF_MODIFIED_SINCE, date);
                }
            } else {
                request = request.header(header::RANGE, format!("bytes={offset}-"));
                if let Some(v) = validators.if_range() {
                    request = request.header(header::IF_RANGE, v);
                }
            }
            request
        };
        let sent = send(http, url, &limits.guard, build);
        let mut response = match tokio::time::timeout(limits.read_timeout, sent).await {
            Err(_) => {
                return Err(FetchError::Stalled {
                    url: url.into(),
                    after: limits.read_timeout,
                })
            }
            Ok(result) => result?,
        };
        let status = response.status();
        let headers = response.headers().clone();
        let refuse = |why: String| FetchError::Refused {
            url: url.into(),
            why,
        };
        match status {
            StatusCode::NOT_MODIFIED
                if first && (conditional.etag.is_some() || conditional.last_modified.is_some()) =>
            {
                // Whatever an earlier attempt left (bytes that no longer
                // verified) is of no use now.
                remove_staged(dest).await;
                return Ok(Fetched::NotModified);
            }
            StatusCode::PARTIAL_CONTENT if !first => {
                let (start, _end, announced) = content_range(&headers)
                    .ok_or_else(|| refuse("a 206 answer without a usable Content-Range".into()))?;
                if start != offset {
                    return Err(refuse(format!(
                        "asked for bytes {offset}- of {total:?}, got Content-Range {start}-…/{announced:?}"
                    )));
                }
                let got = Validators::from_headers(&headers);
                let resized = announced.is_some() && total.is_some() && announced != total;
                if resized || !validators.same_version(&got) {
                    // Appending would splice two versions into a file that
                    // never existed at the origin: begin again from zero.
                    restarts += 1;
                    tracing::warn!(
                        %url, offset, kept = ?validators, sent = ?got,
                        "the origin answered the range with bytes of another version: starting again from byte 0"
                    );
                    if restarts > limits.max_resumes {
                        return Err(refuse(format!(
                            "the origin answered {restarts} range requests with another version's bytes"
                        )));
                    }
                    let _ = tokio::fs::remove_file(&resume_at).await;
                    file = None;
                    outboard = None;
                    offset = 0;
                    cvs_written = 0;
                    reused = 0;
                    last_checkpoint = 0;
                    sinks.progress.done.store(0, Ordering::Relaxed);
                    continue;
                }
            }
            StatusCode::OK => {
                if !first {
                    // The origin ignored the range or the file changed
                    // (If-Range): the only honest course is from zero.
                    restarts += 1;
                    tracing::warn!(%url, offset, "origin cannot resume: starting again from byte 0");
                    let _ = tokio::fs::remove_file(&resume_at).await;
                    offset = 0;
                    cvs_written = 0;
                    reused = 0;
                    last_checkpoint = 0;
                    sinks.progress.done.store(0, Ordering::Relaxed);
                }
                if html_instead_of_file(url, &headers) {
                    return Err(refuse(
                        "the origin sent an HTML page instead of the file (an error page?)".into(),
                    ));
                }
                let declared = response.content_length();
                if declared.is_some_and(|d| d > limits.max_size) {
                    return Err(FetchError::TooLarge {
                        url: url.into(),
                        limit: limits.max_size,
                        declared,
                    });
                }
                total = declared;
                sinks
                    .progress
                    .total
                    .store(declared.unwrap_or(0), Ordering::Relaxed);
                validators = Validators::from_headers(&headers);
                let opened = tokio::fs::File::create(dest).await.map_err(io)?;
                file = Some(Sink::with_capacity(DATA_BUFFER, opened));
                if let Some(check) = check.as_deref_mut() {
                    check.reset();
                }
                tree = TreeHasher::new();
                if let Some(sniff) = sniff.as_mut() {
                    sniff.reset();
                }
                outboard = Some(Sink::with_capacity(
                    OUTBOARD_BUFFER,
                    tokio::fs::File::create(&outboard_at).await.map_err(io)?,
                ));
            }
            status if status.is_success() => {
                return Err(refuse(format!(
                    "unexpected HTTP {status} (asked {})",
                    if first { "the file" } else { "a range" }
                )));
            }
            status => {
                return Err(FetchError::Status {
                    url: url.into(),
                    status,
                })
            }
        }
        let Some(out) = file.as_mut() else {
            return Err(refuse("no file to write to".into()));
        };
        // Stream this response's body.
        let cut = loop {
            let chunk = match tokio::time::timeout(limits.read_timeout, response.chunk()).await {
                Err(_) => {
                    return Err(FetchError::Stalled {
                        url: url.into(),
                        after: limits.read_timeout,
                    })
                }
                Ok(Err(_)) => break true,
                Ok(Ok(None)) => break total.is_some_and(|t| offset < t),
                Ok(Ok(Some(chunk))) => chunk,
            };
            let len = chunk.len() as u64;
            if offset + len > limits.max_size {
                return Err(FetchError::TooLarge {
                    url: url.into(),
                    limit: limits.max_size,
                    declared: total,
                });
            }
            if let Some(Err(why)) = sniff.as_mut().map(|s| s.update(&chunk)) {
                remove_staged(dest).await;
                return Err(refuse(why));
            }
            if let Some(check) = check.as_deref_mut() {
                check.update(&chunk).map_err(refuse)?;
            }
            out.write_all(&chunk).await.map_err(io)?;
            tree.update(&chunk);
            cv_bytes.clear();
            tree.drain_cvs_into(&mut cv_bytes);
            if let (false, Some(ob)) = (cv_bytes.is_empty(), outboard.as_mut()) {
                ob.write_all(&cv_bytes).await.map_err(io)?;
                cvs_written += (cv_bytes.len() / CV_LEN) as u64;
            }
            offset += len;
            let since = offset - last_checkpoint;
            if since >= CHECKPOINT_MAX_BYTES
                || (since >= CHECKPOINT_BYTES && last_checkpoint_at.elapsed() >= CHECKPOINT_EVERY)
            {
                if let Some(ob) = outboard.as_mut() {
                    let state = state_at(&validators, total, cvs_written);
                    checkpoint(out, ob, &resume_at, &state).await.map_err(io)?;
                }
                last_checkpoint = offset;
                last_checkpoint_at = Instant::now();
            }
            sinks.progress.done.store(offset, Ordering::Relaxed);
            sinks.counter.add(len);
            sinks.throttle.take(len).await;
            if let Some(run) = sinks.run_throttle {
                run.take(len).await;
            }
            let elapsed = window.0.elapsed();
            if limits.min_rate > 0 && elapsed >= limits.min_rate_window {
                let rate =
                    ((offset.saturating_sub(window.1)) as f64 / elapsed.as_secs_f64()) as u64;
                if rate < limits.min_rate {
                    return Err(FetchError::TooSlow {
                        url: url.into(),
                        rate,
                        min: limits.min_rate,
                        window: limits.min_rate_window,
                    });
                }
                window = (Instant::now(), offset);
            }
        };
        if !cut {
            if let Some(Err(why)) = sniff.as_mut().map(HtmlSniff::finish) {
                remove_staged(dest).await;
                return Err(refuse(why));
            }
            out.flush().await.map_err(io)?;
            out.get_ref().sync_all().await.map_err(io)?;
            let (root, last) = std::mem::take(&mut tree).finalize();
            if let Some(ob) = outboard.as_mut() {
                if let Some(last) = last {
                    ob.write_all(&last).await.map_err(io)?;
                }
                ob.flush().await.map_err(io)?;
                ob.get_ref().sync_all().await.map_err(io)?;
            }
            let _ = tokio::fs::remove_file(&resume_at).await;
            return Ok(Fetched::Body {
                size: offset,
                root,
                validators,
                resumes,
                restarts,
                reused,
            });
        }
        out.flush().await.map_err(io)?;
        if let Some(ob) = outboard.as_mut() {
            let state = state_at(&validators, total, cvs_written);
            checkpoint(out, ob, &resume_at, &state).await.map_err(io)?;
            last_checkpoint = offset;
        }
        resumes += 1;
        if resumes > limits.max_resumes {
            return Err(FetchError::Interrupted {
                url: url.into(),
                resumes: resumes - 1,
                offset,
            });
        }
        tracing::info!(%url, offset, resumes, "body cut: resuming with a range request");
    }
}

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
