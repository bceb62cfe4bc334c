//! Git origins for the swarm tests, on loopback only: [`GitHttp`], smart
//! HTTP served by `git http-backend` as CGI behind a tiny HTTP/1.1 server
//! (optionally hostile: it flips a byte inside every pack it serves), and
//! [`GitDaemon`], `git daemon` for `git://`. The upstream repositories
//! themselves are built by `ark_agent::git::fixture`.
//!
//! The HTTP server runs on its own thread with its own tokio runtime, so it
//! serves sync and async tests alike; it stops when the `GitHttp` is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Longest request head (request line + headers) the server reads.
const MAX_HEAD: usize = 64 * 1024;

/// How long an origin may take to start listening before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A loopback port free at the time of asking.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `git http-backend` behind an HTTP/1.1 server on `127.0.0.1`.
#[derive(Debug)]
pub struct GitHttp {
    pub addr: SocketAddr,
    /// "METHOD /path?query" of every request served, in order.
    requests: Arc<Mutex<Vec<String>>>,
    /// Dropping it stops the server's accept loop.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GitHttp {
    /// Serves every repository under `project_root` (`url("x.git")`).
    pub fn start(project_root: &Path) -> Result<Self> {
        Self::spawn(project_root, None)
    }

    /// Like [`GitHttp::start`], but flips the byte `flip_at_pack_byte` bytes
    /// after the "PACK" signature of every upload-pack response: a corrupt
    /// pack served by a hostile origin.
    pub fn start_corrupting(project_root: &Path, flip_at_pack_byte: usize) -> Result<Self> {
        Self::spawn(project_root, Some(flip_at_pack_byte))
    }

    fn spawn(project_root: &Path, flip: Option<usize>) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (shutdown, mut stop) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let root = project_root.to_path_buf();
        let log = requests.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        accepted = listener.accept() => {
                            let Ok((stream, peer)) = accepted else { continue };
                            let root = root.clone();
                            let log = log.clone();
                            tokio::spawn(async move {
                                let _ = serve(stream, peer, &root, flip, &log).await;
                            });
                        }
                    }
                }
            });
        });
        Ok(Self {
            addr,
            requests,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The URL of `repo` (a path under the project root, e.g. "up.git").
    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{}", self.addr, repo.trim_start_matches('/'))
    }

    /// Every request served so far ("METHOD /path?query").
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request on one connection (the response closes it).
///
/// Long by design: one CGI exchange with `git http-backend`, read top to
/// bottom.
async fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    root: &Path,
    flip: Option<usize>,
    log: &Mutex<Vec<String>>,
) -> Result<()> {
    let mut stream = BufReader::new(stream);
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if stream.read_until(b'\n', &mut line).await? == 0 {
            bail!("connection closed inside the request head");
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        head.push(String::from_utf8(line)?.trim_end().to_string());
        if head.iter().map(String::len).sum::<usize>() > MAX_HEAD {
            bail!("request head over {MAX_HEAD} bytes");
        }
    }
    let request_line = head.first().context("empty request")?.clone();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let header = |name: &str| {
        head.iter().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    if let Ok(mut log) = log.lock() {
        log.push(format!("{method} {target}"));
    }
    if header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        stream
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await?;
    }

    let body = if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        read_chunked(&mut stream).await?
    } else {
        let length: usize = header("content-length").map_or(Ok(0), |l| l.parse())?;
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        body
    };

    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let host = header("host").unwrap_or_default();
    if let Some((status, kind, body)) =
        crate::lfs_origin::answer(root, &host, &method, path, header, &body)
    {
        let headers = format!("Content-Type: {kind}\r\n");
        return respond(stream.get_mut(), status, &headers, &body).await;
    }
    let mut cgi = tokio::process::Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", peer.ip().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(encoding) = header("content-encoding") {
        cgi.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = header("git-protocol") {
        cgi.env("HTTP_GIT_PROTOCOL", protocol);
    }
    let mut child = cgi.spawn().context("spawning git http-backend")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let feed = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await?;
    let _ = feed.await;

    let out = output.stdout;
    let (header_end, body_start) = match find(&out, b"\r\n\r\n") {
        Some(i) if find(&out, b"\n\n").is_none_or(|j| i < j) => (i, i + 4),
        _ => match find(&out, b"\n\n") {
            Some(j) => (j, j + 2),
            None => (out.len(), out.len()),
        },
    };
    let mut status = "200 OK".to_string();
    let mut headers = String::new();
    for line in String::from_utf8_lossy(&out[..header_end]).lines() {
        let line = line.trim_end();
        match line.split_once(':') {
            Some((key, value)) if key.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string();
            }
            Some(_) => headers.push_str(&format!("{line}\r\n")),
            None => {}
        }
    }
    let mut body = out[body_start..].to_vec();
    if let (Some(flip), true) = (flip, path.ends_with("/git-upload-pack") && method == "POST") {
        if let Some(at) = find(&body, b"PACK").map(|p| p + flip) {
            if at < body.len() {
                body[at] ^= 0x40;
            }
        }
    }
    respond(stream.get_mut(), &status, &headers, &body).await
}

/// Writes one answer and closes the connection (`headers`: CRLF-ended
/// lines).
async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    headers: &str,
    body: &[u8],
) -> Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    stream.write_all(&response).await?;
    stream.shutdown().await?;
    Ok(())
}

async fn read_chunked(stream: &mut BufReader<tokio::net::TcpStream>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        let size = line.trim().split(';').next().unwrap_or_default();
        let size =
            usize::from_str_radix(size, 16).with_context(|| format!("chunk size {line:?}"))?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let mut trailer = String::new();
                if stream.read_line(&mut trailer).await? == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        stream.read_exact(&mut body[start..]).await?;
        let mut crlf = String::new();
        stream.read_line(&mut crlf).await?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `git daemon` serving every repository under `base` on `127.0.0.1`,
/// killed on drop.
#[derive(Debug)]
pub struct GitDaemon {
    pub addr: SocketAddr,
    pub base: PathBuf,
    child: Child,
}

impl GitDaemon {
    pub fn start(base: &Path) -> Result<Self> {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut child = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg(format!("--base-path={}", base.display()))
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(base)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning git daemon")?;
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("git daemon exited before listening: {status}");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                bail!("git daemon did not listen on {addr} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            addr,
            base: base.to_path_buf(),
            child,
        })
    }

    /// The `git://` URL of `repo` (a path under the base).
    pub fn url(&self, repo: &str) -> String {
        format!("git://{}/{}", self.addr, repo.trim_start_matches('/'))
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use ark_agent::git::fixture::{git, ls_remote, Upstream};
    use ark_agent::git::{mirror, write_bundle, Refs};
    use ark_commander::git_check::{apply, check_bundle, check_repo};

    use super::*;

    fn packs(dir: &Path) -> Result<Vec<PathBuf>> {
        let mut packs: Vec<PathBuf> = std::fs::read_dir(dir.join("objects/pack"))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pack"))
            .collect();
        packs.sort();
        Ok(packs)
    }

    #[test]
    fn mirror_over_http_follows_upstream_and_lands_on_the_commander() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let origin = tmp.path().join("origin");
        std::fs::create_dir_all(&origin)?;
        let up = Upstream::populated(&origin, "up")?;
        git(&up.work, &["checkout", "-q", "-b", "doomed"])?;
        up.commit("doomed.txt", "x\n")?;
        git(&up.work, &["checkout", "-q", "main"])?;
        up.push()?;
        let server = GitHttp::start(&origin)?;
        let url = server.url("up.git");
        let dir = tmp.path().join("agent/up.git");
        let stop = AtomicBool::new(false);

        let first = mirror(&url, &dir, &stop)?;
        assert_eq!(first, up.refs()?);
        git(&dir, &["fsck", "--full", "--strict"])?;

        // The commander lands the first bundle.
        let nas = tmp.path().join("nas.git");
        let b1 = tmp.path().join("b1");
        write_bundle(&dir, &first, &Refs::new(), std::fs::File::create(&b1)?)?;
        apply(&check_bundle(&b1, &nas, tmp.path())?, &nas, "run-1")?;

        // New commits, a force-push, a deleted branch.
        up.commit("src/more.txt", "more\n")?;
        up.rewrite("feature")?;
        up.delete_branch("doomed")?;
        up.push()?;
        let packs_before = packs(&dir)?;
        let second = mirror(&url, &dir, &stop)?;
        assert_eq!(second, up.refs()?);
        assert!(!second.contains_key("refs/heads/doomed"));
        git(&dir, &["fsck", "--full", "--strict"])?;
        let packs_after = packs(&dir)?;
        assert_eq!(packs_after.len(), packs_before.len() + 1, "one new pack");
        let new_pack = packs_after
            .iter()
            .find(|p| !packs_before.contains(p))
            .context("no new pack")?;
        assert!(
            std::fs::metadata(new_pack)?.len() < std::fs::metadata(&packs_before[0])?.len(),
            "the second fetch sent only new objects"
        );

        // Unchanged: same refs, no pack, only the ref advertisement.
        let served = server.requests().len();
        let third = mirror(&url, &dir, &stop)?;
        assert_eq!(third, second);
        assert_eq!(packs(&dir)?, packs_after);
        let requests = server.requests()[served..].to_vec();
        assert!(requests.len() <= 2, "{requests:?}");

        // The incremental bundle lands with the force-push and deletion reported.
        let b2 = tmp.path().join("b2");
        let known = ls_remote(&nas)?;
        write_bundle(&dir, &second, &known, std::fs::File::create(&b2)?)?;
        let changes = apply(&check_bundle(&b2, &nas, tmp.path())?, &nas, "run-2")?;
        assert_eq!(changes.forced, vec!["refs/heads/feature".to_string()]);
        assert_eq!(changes.deleted, vec!["refs/heads/doomed".to_string()]);
        git(&nas, &["fsck", "--full", "--strict"])?;
        check_repo(&nas)?;
        let landed: Refs = ls_remote(&nas)?
            .into_iter()
            .filter(|(name, _)| !name.starts_with("refs/ark/"))
            .collect();
        assert_eq!(landed, up.refs()?);
        Ok(())
    }

    #[test]
    fn mirror_over_git_daemon_matches_upstream() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let origin = tmp.path().join("origin");
        std::fs::create_dir_all(&origin)?;
        let up = Upstream::populated(&origin, "up")?;
        let daemon = GitDaemon::start(&origin)?;
        let dir = tmp.path().join("up.git");
        let stop = AtomicBool::new(false);
        assert_eq!(mirror(&daemon.url("up.git"), &dir, &stop)?, up.refs()?);
        up.commit("later.txt", "later\n")?;
        up.push()?;
        assert_eq!(mirror(&daemon.url("up.git"), &dir, &stop)?, up.refs()?);
        git(&dir, &["fsck", "--full", "--strict"])?;
        Ok(())
    }

    #[test]
    fn empty_upstream_mirrors_and_bundles() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let origin = tmp.path().join("origin");
        std::fs::create_dir_all(&origin)?;
        Upstream::empty(&origin, "empty")?;
        let server = GitHttp::start(&origin)?;
        let dir = tmp.path().join("empty.git");
        let stop = AtomicBool::new(false);
        let refs = mirror(&server.url("empty.git"), &dir, &stop)?;
        assert!(refs.is_empty());
        assert!(mirror(&server.url("empty.git"), &dir, &stop)?.is_empty());
        let mut bundle = Vec::new();
        let summary = write_bundle(&dir, &refs, &Refs::new(), &mut bundle)?;
        assert_eq!((summary.refs, summary.objects), (0, 0));

        let daemon = GitDaemon::start(&origin)?;
        let refs = mirror(&daemon.url("empty.git"), &tmp.path().join("d.git"), &stop)?;
        assert!(refs.is_empty());
        Ok(())
    }

    #[test]
    fn corrupt_pack_from_a_hostile_origin_is_refused() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let origin = tmp.path().join("origin");
        std::fs::create_dir_all(&origin)?;
        Upstream::populated(&origin, "up")?;
        let server = GitHttp::start_corrupting(&origin, 200)?;
        let url = server.url("up.git");
        let dir = tmp.path().join("up.git");
        let err = mirror(&url, &dir, &AtomicBool::new(false))
            .err()
            .context("a corrupt pack was accepted")?;
        assert!(err.to_string().contains(&url), "{err}");
        // Nothing landed: no refs point into a broken pack.
        assert!(ls_remote(&dir)?.is_empty());
        Ok(())
    }
}
