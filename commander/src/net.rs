//! Addresses and listeners both of the commander's servers (gRPC and the
//! dashboard) use: binding with a real backlog, the URL a local client
//! uses, and the endpoint files a running server records in its data dir.
//! Below `server` and `web`, so neither imports the other for these.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

use crate::{CommanderError, Result};

/// Pending connections the kernel queues for us. The standard 128 is too
/// few for a swarm: after a commander restart every agent reconnects at
/// once, and a SYN dropped from a full queue costs its agent a one-second
/// retransmit (measured: 14 of 200 simultaneous registrations). 1024 covers
/// the largest household swarm with room to spare; the kernel caps it at
/// `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds the commander's listener on `addr` with [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> Result<TcpListener> {
    let resolved = tokio::net::lookup_host(addr)
        .await
        .map_err(CommanderError::io("resolving listen address", addr))?
        .next()
        .ok_or_else(|| {
            CommanderError::Invalid(format!("listen address {addr:?} resolves to nothing"))
        })?;
    let socket = if resolved.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(CommanderError::io("creating a socket for", addr))?;
    socket
        .set_reuseaddr(true)
        .map_err(CommanderError::io("configuring the socket for", addr))?;
    socket
        .bind(resolved)
        .map_err(CommanderError::io("binding", addr))?;
    socket
        .listen(LISTEN_BACKLOG)
        .map_err(CommanderError::io("listening on", addr))
}

/// The URL a local client uses to reach a commander bound to `addr`.
pub fn local_url(addr: SocketAddr) -> String {
    format!("https://{}", local_authority(addr))
}

/// `host:port` a local client uses for a server bound to `addr` (an
/// unspecified address becomes loopback).
pub fn local_authority(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => "127.0.0.1".to_string(),
            SocketAddr::V6(_) => "[::1]".to_string(),
        }
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("{ip}:{}", addr.port())
}

/// Reads an endpoint file a running server recorded; `missing` says what
/// to do when there is none.
pub fn read_endpoint(path: &Path, missing: impl FnOnce(&Path) -> String) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|_| CommanderError::NotFound(missing(path)))
}
