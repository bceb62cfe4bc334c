//! The link to the commander: TLS 1.3 client configurations (rustls with the
//! ring provider, chosen explicitly, never a process default) and a lazily
//! connecting gRPC channel over our own connector.
//!
//! Two trust modes exist. After enrolment the agent trusts exactly the CA it
//! pinned and presents its client certificate ([`mtls_client_config`]).
//! During enrolment it has no CA yet: the token carries the SHA-256 of the
//! commander's CA certificate and [`pinned_client_config`] accepts the
//! server only if its chain contains that very CA and the server certificate
//! verifies against it — so the token is never sent to an impostor.
//!
//! The commander's CLI uses this module too, with its admin credentials.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{LinkError, Result};

/// The PEM material one TLS client needs: trust root, own chain and key.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// How long to wait for TCP + TLS to the commander before calling it away.
/// Long enough for a Pi on a busy Wi-Fi, short enough to retry promptly.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound on any single control-plane RPC: they are small messages, so
/// anything slower means the link is broken, not busy.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// A bulk transfer (an upload) has no upper bound — 2 GiB over a Pi's
/// Wi-Fi takes minutes — so a dead link is noticed by HTTP/2 pings
/// instead: one every this long while the connection is open, and the
/// connection is closed when one goes unanswered for as long.
pub const BULK_KEEPALIVE: Duration = Duration::from_secs(10);

/// The one crypto provider Ark uses everywhere: ring. It cross-compiles to
/// every edge target without cmake or a C++ toolchain (aws-lc-rs needs both).
///
/// Its cipher suites are ordered for this machine's CPU (see
/// [`by_this_cpu`]); a rustls server follows the client's order, so the
/// agent's CPU chooses for the upload it encrypts.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    by_this_cpu(&mut provider.cipher_suites, aes_in_hardware());
    Arc::new(provider)
}

/// Orders cipher suites for a CPU with or without AES instructions, TLS 1.3
/// first either way. With them, AES-128-GCM first (the suite TLS 1.3
/// requires of every implementation): four rounds per block fewer than
/// ring's default AES-256-GCM, which counts when every byte of an upload is
/// encrypted by the agent and decrypted by the commander. Without them (a Raspberry Pi 4,
/// any armv7), ChaCha20-Poly1305 first: it is built to be fast in plain
/// integer and vector code, where AES needs table-free bit-slicing to stay
/// constant-time and is slow for it.
pub fn by_this_cpu(suites: &mut [rustls::SupportedCipherSuite], aes: bool) {
    use rustls::CipherSuite as C;
    let rank = |suite: &rustls::SupportedCipherSuite| {
        let aead = match suite.suite() {
            C::TLS13_AES_128_GCM_SHA256
            | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
            C::TLS13_AES_256_GCM_SHA384
            | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
            _ => 2,
        };
        let aead = if aes { aead } else { (aead + 1) % 3 };
        (suite.tls13().is_none(), aead)
    };
    suites.sort_by_key(rank);
}

/// Whether this CPU has AES and carry-less multiply instructions (what
/// AES-GCM needs to be fast and constant-time).
pub fn aes_in_hardware() -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
    {
        false
    }
}

/// Installs ring as the process-wide rustls provider. Ark passes its
/// provider explicitly to every config it builds; installing it too means a
/// dependency that asks for the default (reqwest, for instance) gets the same
/// one instead of panicking. Idempotent.
pub fn install_crypto_provider() {
    let _ = Arc::unwrap_or_clone(provider()).install_default();
}

/// SHA-256 of a DER certificate, lower-case hex: how Ark names a certificate
/// (agent identities, the CA pin in tokens).
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// Parses every certificate in a PEM string.
pub fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| LinkError::Tls(format!("{what}: not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(LinkError::Tls(format!("{what}: no certificate found")));
    }
    Ok(certs)
}

/// Parses a PEM private key.
pub fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| LinkError::Tls(format!("{what}: not a PEM private key: {e}")))
}

fn tls13_builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| LinkError::Tls(e.to_string()))
}

fn with_h2(mut config: ClientConfig) -> ClientConfig {
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// TLS 1.3 client config for an enrolled peer: trusts only the pinned CA and
/// presents the peer's own certificate.
pub fn mtls_client_config(credentials: &Credentials) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(&credentials.ca_pem, "CA certificate")? {
        roots
            .add(cert)
            .map_err(|e| LinkError::Tls(format!("CA certificate: {e}")))?;
    }
    let chain = parse_certs(&credentials.cert_pem, "client certificate")?;
    let key = parse_key(&credentials.key_pem, "client key")?;
    let config = tls13_builder()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| LinkError::Tls(format!("client certificate and key: {e}")))?;
    Ok(with_h2(config))
}

/// TLS 1.3 client config for enrolment: no client certificate, and a server
/// accepted only when its chain carries the CA whose fingerprint is `pin`.
pub fn pinned_client_config(pin: &str) -> Result<ClientConfig> {
    let verifier = PinnedCa {
        pin: pin.to_ascii_lowercase(),
        provider: provider(),
    };
    let config = tls13_builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(with_h2(config))
}

/// Accepts a server whose presented chain contains the pinned CA and whose
/// certificate verifies against that CA (name, validity, signature).
#[derive(Debug)]
struct PinnedCa {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|cert| fingerprint(cert) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the commander's CA does not match the pin in the enrolment token \
                     (wrong address, or a token from another commander)"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A gRPC channel to `url` (https://HOST:PORT) over TLS with `config`, for
/// control-plane RPCs (each bounded by [`RPC_TIMEOUT`]). It connects lazily
/// and reconnects on its own after a drop, so a session keeps one channel
/// for its whole life.
pub fn channel(url: &str, config: ClientConfig) -> Result<Channel> {
    lazy(url, config, |endpoint| endpoint.timeout(RPC_TIMEOUT))
}

/// A channel like [`channel`] for bulk transfers: no bound on a call, HTTP/2
/// pings ([`BULK_KEEPALIVE`]) to notice a dead link instead.
pub fn bulk_channel(url: &str, config: ClientConfig) -> Result<Channel> {
    lazy(url, config, |endpoint| {
        endpoint
            .http2_keep_alive_interval(BULK_KEEPALIVE)
            .keep_alive_timeout(BULK_KEEPALIVE)
            .keep_alive_while_idle(true)
    })
}

fn lazy(
    url: &str,
    config: ClientConfig,
    shape: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel> {
    let bad = |message: &str| LinkError::BadUrl {
        url: url.to_string(),
        message: message.to_string(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad(
            "the scheme must be https (the commander only speaks TLS)",
        ));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let server_name =
        ServerName::try_from(bare_host.clone()).map_err(|_| bad("invalid host name"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connect = tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let addr = (bare_host.clone(), port);
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT);
    Ok(shape(endpoint).connect_with_connector_lazy(connect))
}
