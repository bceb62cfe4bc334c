//! A small HTTP/1.1 origin serving in-memory files: the demo's source of
//! things to harvest, and the tests' controllable origin (throttle, request
//! count). It answers `GET /<name>` with the bytes, anything else with 404.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes written per write (and per throttle step).
const CHUNK: usize = 16 * 1024;

/// Longest request head we read before giving up on a client.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, Default)]
struct Shared {
    files: std::sync::RwLock<HashMap<String, Arc<Vec<u8>>>>,
    /// Bytes per second per response; 0 = unthrottled.
    throttle: AtomicU64,
    requests: AtomicU64,
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

    /// Serves `bytes` at `/<name>`.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        self.shared
            .files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.trim_start_matches('/').to_string(), Arc::new(bytes));
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

    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            return;
        }
    }
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let file = shared
        .files
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(path.trim_start_matches('/'))
        .cloned();
    let Some(body) = file.filter(|_| method == "GET") else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    };
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(header.as_bytes()).await.is_err() {
        return;
    }
    for chunk in body.chunks(CHUNK) {
        let rate = shared.throttle.load(Ordering::Relaxed);
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / rate as f64)).await;
        }
        if stream.write_all(chunk).await.is_err() {
            return;
        }
    }
    let _ = stream.shutdown().await;
}
