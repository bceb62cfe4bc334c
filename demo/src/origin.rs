//! A small HTTP/1.1 origin serving in-memory files: the demo's source of
//! things to harvest, and the tests' controllable origin.
//!
//! It speaks enough HTTP for a harvester to be tested honestly: strong
//! ETags and Last-Modified, conditional GET (`If-None-Match`,
//! `If-Modified-Since` → 304), byte ranges (`Range: bytes=N-` / `N-M` → 206
//! with `Content-Range`, checked against `If-Range`), and faults on demand:
//! a throttle, connections cut after N body bytes, and an origin that
//! ignores `Range`. Every request is logged for tests to assert on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes written per write (and per throttle step).
const CHUNK: usize = 16 * 1024;

/// Longest request head we read before giving up on a client.
const MAX_HEAD: usize = 16 * 1024;

/// One served file and its validators.
#[derive(Debug)]
struct File {
    bytes: Arc<Vec<u8>>,
    etag: String,
    last_modified: String,
    content_type: String,
}

/// Misbehaviours the origin can be told to show at a path.
#[derive(Debug, Clone)]
pub enum Hostile {
    /// `302 Found` pointing at another path (itself, for a loop), or at an
    /// absolute URL when it starts with `http`.
    RedirectTo(String),
    /// Declares `declared` bytes of body but sends `bytes` and closes.
    LieLength { declared: u64, bytes: Arc<Vec<u8>> },
    /// A 200 with no length whose body never ends (capped at
    /// [`ENDLESS_CAP`] so the test server stops on its own).
    Endless,
    /// A 200 with extra header lines (e.g. `Content-Encoding: gzip`).
    WithHeaders {
        headers: Vec<(String, String)>,
        bytes: Arc<Vec<u8>>,
    },
}

/// Where an "endless" body stops: far beyond any test's size limit.
pub const ENDLESS_CAP: u64 = 1 << 30;

/// What the origin saw and answered, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// Whether the request was conditional (If-None-Match / If-Modified-Since).
    pub conditional: bool,
    pub status: u16,
}

#[derive(Debug, Default)]
struct Shared {
    files: RwLock<HashMap<String, File>>,
    /// Bumped on every `put`, so a changed file gets a newer Last-Modified.
    version: AtomicU64,
    /// Bytes per second per response; 0 = unthrottled.
    throttle: AtomicU64,
    /// Cut the next `cuts_left` responses after `cut_after` body bytes.
    cut_after: AtomicU64,
    cuts_left: AtomicU64,
    ignore_range: AtomicBool,
    /// Answer a range with whatever is there now, ignoring `If-Range`.
    ignore_if_range: AtomicBool,
    /// Send no ETag / Last-Modified with a `206` (a server that cannot say
    /// which version the range belongs to).
    hide_range_validators: AtomicBool,
    hostile: RwLock<HashMap<String, Hostile>>,
    log: Mutex<Vec<Logged>>,
}

impl Shared {
    fn record(&self, entry: Logged) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
    }
}

/// A running origin; dropped, it stops accepting.
#[derive(Debug)]
pub struct Origin {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A strong validator from the content (FNV-1a: fast, and any change of
/// content changes it for test purposes).
fn etag_of(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{:x}-{hash:016x}\"", bytes.len())
}

impl Origin {
    /// Starts an origin on 127.0.0.1 (a free port).
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, serving.clone()));
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// Serves `bytes` at `/<name>` (replacing what was there).
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        self.put_typed(name, bytes, "application/octet-stream");
    }

    /// Serves `bytes` at `/<name>` with the given `Content-Type`.
    pub fn put_typed(&self, name: &str, bytes: Vec<u8>, content_type: &str) {
        let version = self.shared.version.fetch_add(1, Ordering::Relaxed);
        // One "day" per version keeps dates valid and strictly increasing.
        let last_modified = format!("Sun, {:02} Nov 2026 00:00:00 GMT", 1 + version % 28);
        let file = File {
            etag: etag_of(&bytes),
            bytes: Arc::new(bytes),
            last_modified,
            content_type: content_type.to_string(),
        };
        self.shared
            .files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.trim_start_matches('/').to_string(), file);
    }

    /// Makes `/<name>` misbehave.
    pub fn hostile(&self, name: &str, behaviour: Hostile) {
        self.shared
            .hostile
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.trim_start_matches('/').to_string(), behaviour);
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name.trim_start_matches('/'))
    }

    /// Limits every response to `bytes_per_second` (0 lifts the limit).
    pub fn throttle(&self, bytes_per_second: u64) {
        self.shared
            .throttle
            .store(bytes_per_second, Ordering::Relaxed);
    }

    /// Cuts the connection of the next `times` responses after `bytes`
    /// bytes of body.
    pub fn cut_after(&self, bytes: u64, times: u64) {
        self.shared.cut_after.store(bytes, Ordering::Relaxed);
        self.shared.cuts_left.store(times, Ordering::Relaxed);
    }

    /// Makes the origin answer a range from the current file whatever the
    /// `If-Range` says (a broken cache or CDN): a resume may then get bytes
    /// of another version.
    pub fn ignore_if_range(&self, ignore: bool) {
        self.shared.ignore_if_range.store(ignore, Ordering::Relaxed);
    }

    /// Makes the origin send `206` answers without validators.
    pub fn hide_range_validators(&self, hide: bool) {
        self.shared
            .hide_range_validators
            .store(hide, Ordering::Relaxed);
    }

    /// Makes the origin ignore `Range` (answer 200 with the whole body).
    pub fn ignore_range(&self, ignore: bool) {
        self.shared.ignore_range.store(ignore, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.log().len() as u64
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The value of header `name` (case-insensitive) in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Parses `bytes=N-` or `bytes=N-M` into an inclusive range within `len`.
fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end = if end.trim().is_empty() {
        len.checked_sub(1)?
    } else {
        end.trim().parse::<u64>().ok()?.min(len.checked_sub(1)?)
    };
    (start <= end && start < len).then_some((start, end))
}

///
/// Long by design: a test server's whole answer to one request (range,
/// validators, throttle and cuts), read top to bottom.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut raw = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if raw.len() > MAX_HEAD {
            return;
        }
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let mut parts = head.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("/").to_string(),
    );
    let range = header(&head, "range").map(str::to_string);
    let if_none_match = header(&head, "if-none-match");
    let if_modified_since = header(&head, "if-modified-since");
    let if_range = header(&head, "if-range");
    let hostile = shared
        .hostile
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(path.trim_start_matches('/'))
        .cloned();
    if let Some(behaviour) = hostile {
        let status = misbehave(&mut stream, behaviour).await;
        shared.record(Logged {
            method,
            path,
            range,
            conditional: if_none_match.is_some() || if_modified_since.is_some(),
            status,
        });
        return;
    }
    let found = {
        let files = shared.files.read().unwrap_or_else(|p| p.into_inner());
        files.get(path.trim_start_matches('/')).map(|f| {
            (
                f.bytes.clone(),
                f.etag.clone(),
                f.last_modified.clone(),
                f.content_type.clone(),
            )
        })
    };
    let mut log = Logged {
        method: method.clone(),
        path: path.clone(),
        range: range.clone(),
        conditional: if_none_match.is_some() || if_modified_since.is_some(),
        status: 404,
    };
    let Some((body, etag, last_modified, content_type)) = found.filter(|_| method == "GET") else {
        shared.record(log);
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    };
    let validators = format!("ETag: {etag}\r\nLast-Modified: {last_modified}\r\n");
    let unchanged = match (if_none_match, if_modified_since) {
        (Some(tags), _) => tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"),
        (None, Some(since)) => since == last_modified,
        (None, None) => false,
    };
    if unchanged {
        log.status = 304;
        shared.record(log);
        let reply = format!("HTTP/1.1 304 Not Modified\r\n{validators}Connection: close\r\n\r\n");
        let _ = stream.write_all(reply.as_bytes()).await;
        return;
    }
    let len = body.len() as u64;
    let range_ok = !shared.ignore_range.load(Ordering::Relaxed)
        && (shared.ignore_if_range.load(Ordering::Relaxed)
            || if_range.is_none_or(|v| v == etag || v == last_modified));
    let (status_line, start, end) = match range
        .as_deref()
        .filter(|_| range_ok)
        .map(|r| parse_range(r, len))
    {
        Some(Some((start, end))) => ("206 Partial Content", start, end + 1),
        Some(None) => {
            log.status = 416;
            shared.record(log);
            let reply = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            return;
        }
        None => ("200 OK", 0, len),
    };
    log.status = if start == 0 && end == len && status_line.starts_with("200") {
        200
    } else {
        206
    };
    shared.record(log);
    let content_range = if status_line.starts_with("206") {
        format!("Content-Range: bytes {start}-{}/{len}\r\n", end - 1)
    } else {
        String::new()
    };
    let validators =
        if status_line.starts_with("206") && shared.hide_range_validators.load(Ordering::Relaxed) {
            String::new()
        } else {
            validators
        };
    let header = format!(
        "HTTP/1.1 {status_line}\r\nContent-Length: {}\r\n{content_range}{validators}Accept-Ranges: bytes\r\n\
         Content-Type: {content_type}\r\nConnection: close\r\n\r\n",
        end - start
    );
    if stream.write_all(header.as_bytes()).await.is_err() {
        return;
    }
    let cut = (shared
        .cuts_left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok())
    .then(|| shared.cut_after.load(Ordering::Relaxed));
    let body = &body[start as usize..end as usize];
    let mut sent = 0u64;
    while (sent as usize) < body.len() {
        // Throttled, write about ten pieces a second so a slow origin
        // trickles rather than pausing for a whole chunk.
        let rate = shared.throttle.load(Ordering::Relaxed);
        let step = if rate > 0 {
            (rate as usize / 10).clamp(1, CHUNK)
        } else {
            CHUNK
        };
        let mut piece = &body[sent as usize..(sent as usize + step).min(body.len())];
        if let Some(limit) = cut {
            piece = &piece[..piece.len().min((limit - sent) as usize)];
        }
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(piece.len() as f64 / rate as f64)).await;
        }
        if stream.write_all(piece).await.is_err() {
            return;
        }
        sent += piece.len() as u64;
        if cut.is_some_and(|limit| sent >= limit) {
            // Drop without a clean shutdown: the client sees a short body.
            return;
        }
    }
    let _ = stream.shutdown().await;
}

/// Answers as `behaviour` says; returns the status sent.
async fn misbehave(stream: &mut TcpStream, behaviour: Hostile) -> u16 {
    match behaviour {
        Hostile::RedirectTo(to) => {
            let location = if to.starts_with("http") {
                to
            } else {
                format!("/{}", to.trim_start_matches('/'))
            };
            let reply = format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes()).await;
            302
        }
        Hostile::LieLength { declared, bytes } => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_ok() {
                let _ = stream.write_all(&bytes).await;
            }
            200
        }
        Hostile::Endless => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_ok() {
                let block = vec![0x5a; CHUNK];
                let mut sent = 0u64;
                while sent < ENDLESS_CAP && stream.write_all(&block).await.is_ok() {
                    sent += CHUNK as u64;
                }
            }
            200
        }
        Hostile::WithHeaders { headers, bytes } => {
            let extra: String = headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\r\n"))
                .collect();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                bytes.len()
            );
            if stream.write_all(head.as_bytes()).await.is_ok() {
                let _ = stream.write_all(&bytes).await;
            }
            200
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_within_the_file() {
        assert_eq!(parse_range("bytes=0-", 10), Some((0, 9)));
        assert_eq!(parse_range("bytes=4-6", 10), Some((4, 6)));
        assert_eq!(parse_range("bytes=4-100", 10), Some((4, 9)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=7-3", 10), None);
        assert_eq!(parse_range("items=0-", 10), None);
        assert_eq!(parse_range("bytes=0-", 0), None);
    }
}
