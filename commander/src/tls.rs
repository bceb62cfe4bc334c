//! The commander's TLS front door: a TLS 1.3-only rustls server (ring
//! provider, passed explicitly) in which a client certificate is optional at
//! the handshake — enrolment has none yet — but, when presented, must chain
//! to the commander's CA. Each service then decides what it requires from
//! the [`PeerInfo`] attached to every request.
//!
//! Handshakes run in their own tasks with a timeout, so one slow or hostile
//! client never stalls the accept loop. Beneath rustls, the socket wakes
//! its reader once per TLS record, not per TCP segment ([`WholeRecords`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ark_link::tls::{fingerprint, parse_certs, parse_key, provider};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

mod whole_records;

use crate::pki::Pki;
use crate::{CommanderError, Result};
use whole_records::WholeRecords;

/// A client gets this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// SHA-256 of the client certificate, when one was presented (and so
    /// verified against our CA during the handshake).
    pub cert_fingerprint: Option<String>,
    /// That certificate (DER): its public key checks signed manifests.
    pub cert_der: Option<Arc<[u8]>>,
}

/// Builds the server configuration from the PKI.
pub fn server_config(pki: &Pki) -> Result<Arc<ServerConfig>> {
    let tls = |e: &dyn std::fmt::Display| CommanderError::Tls(e.to_string());
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(pki.ca_pem(), "CA certificate")? {
        roots.add(cert).map_err(|e| tls(&e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls(&e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            parse_certs(&pki.server_chain_pem, "server certificate")?,
            parse_key(&pki.server_key_pem, "server key")?,
        )
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS connection with what we learned about the peer.
#[derive(Debug)]
pub struct TlsConn {
    inner: TlsStream<WholeRecords>,
    info: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener` and yields completed TLS sessions.
/// The accept task stops when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => break,
            };
            let (tcp, addr) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    acceptor.accept(WholeRecords::new(tcp)),
                )
                .await
                {
                    Ok(Ok(inner)) => {
                        let cert = inner
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first());
                        let info = PeerInfo {
                            addr,
                            cert_fingerprint: cert.map(|cert| fingerprint(cert)),
                            cert_der: cert.map(|cert| Arc::from(cert.as_ref())),
                        };
                        let _ = tx.send(Ok(TlsConn { inner, info })).await;
                    }
                    Ok(Err(e)) => tracing::info!(%addr, "TLS handshake refused: {e}"),
                    Err(_) => tracing::info!(%addr, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
