//! The commander's certificate authority and the certificates it issues.
//!
//! On first start the commander creates, under `<data>/pki/`: its CA, the
//! admin client credentials the CLI uses, and (on every start, so new
//! `--san`s take effect) its server certificate. Agents never send us a
//! key: they send a CSR and get back a certificate for the name the operator
//! chose when issuing their token. Keys are written 0600.
//!
//! Who a peer is comes from the SHA-256 fingerprint of the certificate it
//! presented, looked up in the state database — not from any name inside
//! the certificate — so re-enrolling an agent retires its old certificate.

use std::path::{Path, PathBuf};

use ark_core::write_atomic;
use ark_link::tls::Credentials;
use ark_link::tls::{fingerprint, parse_certs};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::{CommanderError, Result};

/// The commander's PKI, loaded.
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    ca_key_pem: String,
    /// SHA-256 of the CA certificate: the pin in every enrolment token.
    pub ca_fingerprint: String,
    /// Server certificate chain (server, CA) and key, PEM.
    pub server_chain_pem: String,
    pub server_key_pem: String,
    /// The only certificate allowed to call the admin service.
    pub admin_fingerprint: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

/// `bytes` bytes from the system's CSPRNG, hex-encoded: enrolment token
/// secrets and the dashboard's admin token.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut secret = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| CommanderError::Tls("no randomness available".into()))?;
    Ok(hex::encode(secret))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(CommanderError::io("reading", path))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    write_atomic(path, text.as_bytes(), mode).map_err(CommanderError::io("writing", path))
}

/// Where the PKI lives inside a data dir.
pub fn dir(data: &Path) -> PathBuf {
    data.join("pki")
}

/// Reads the admin credentials the CLI presents.
pub fn admin_credentials(data: &Path) -> Result<Credentials> {
    let dir = dir(data);
    if !dir.join("admin.pem").exists() {
        return Err(CommanderError::NotFound(format!(
            "no admin credentials in {}: start the commander once with `ark-commander serve --data {}`",
            dir.display(),
            data.display()
        )));
    }
    Ok(Credentials {
        ca_pem: read(&dir.join("ca.pem"))?,
        cert_pem: read(&dir.join("admin.pem"))?,
        key_pem: read(&dir.join("admin.key"))?,
    })
}

fn leaf_params(
    common_name: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(sans)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn pem_fingerprint(pem: &str, what: &str) -> Result<String> {
    let certs = parse_certs(pem, what)?;
    Ok(fingerprint(&certs[0]))
}

impl Pki {
    /// Loads the PKI from `<data>/pki`, creating the CA and admin
    /// credentials on first start, and issues a fresh server certificate for
    /// `sans`.
    pub fn load_or_create(data: &Path, sans: &[String]) -> Result<Self> {
        let dir = dir(data);
        std::fs::create_dir_all(&dir).map_err(CommanderError::io("creating", &dir))?;
        let (ca_pem_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !ca_pem_path.exists() || !ca_key_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            params
                .distinguished_name
                .push(DnType::CommonName, "Ark commander CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key)?;
            // Key first: a CA certificate without its key is useless, and a
            // crash between the two writes regenerates both next time.
            write(&ca_key_path, &key.serialize_pem(), 0o600)?;
            write(&ca_pem_path, &cert.pem(), 0o644)?;
            tracing::info!(dir = %dir.display(), "created the commander's CA");
        }
        let ca_pem = read(&ca_pem_path)?;
        let ca_key_pem = read(&ca_key_path)?;
        let mut pki = Self {
            ca_fingerprint: pem_fingerprint(&ca_pem, "CA certificate")?,
            dir,
            ca_pem,
            ca_key_pem,
            server_chain_pem: String::new(),
            server_key_pem: String::new(),
            admin_fingerprint: String::new(),
        };
        pki.ensure_admin()?;
        pki.issue_server(sans)?;
        Ok(pki)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(&self.ca_key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&self.ca_pem, key)?)
    }

    fn ensure_admin(&mut self) -> Result<()> {
        let (pem_path, key_path) = (self.dir.join("admin.pem"), self.dir.join("admin.key"));
        if !pem_path.exists() || !key_path.exists() {
            let key = KeyPair::generate()?;
            let params = leaf_params("ark-admin", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?;
            let cert = params.signed_by(&key, &self.issuer()?)?;
            write(&key_path, &key.serialize_pem(), 0o600)?;
            write(&pem_path, &cert.pem(), 0o600)?;
        }
        self.admin_fingerprint = pem_fingerprint(&read(&pem_path)?, "admin certificate")?;
        Ok(())
    }

    fn issue_server(&mut self, sans: &[String]) -> Result<()> {
        let key = KeyPair::generate()?;
        let params = leaf_params(
            "ark-commander",
            sans.to_vec(),
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        self.server_chain_pem = format!("{}{}", cert.pem(), self.ca_pem);
        self.server_key_pem = key.serialize_pem();
        write(&self.dir.join("server.pem"), &self.server_chain_pem, 0o644)?;
        write(&self.dir.join("server.key"), &self.server_key_pem, 0o600)?;
        Ok(())
    }

    /// Signs an agent's CSR. The certificate carries only what we choose
    /// (name, client-auth usage); nothing in the CSR but its key is used.
    /// Returns the certificate PEM and its fingerprint.
    pub fn sign_agent(&self, csr_pem: &str, agent: &str) -> Result<(String, String)> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            CommanderError::Invalid(format!("the certificate request is not valid: {e}"))
        })?;
        csr.params = leaf_params(
            &format!("ark-agent {agent}"),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let cert = csr.signed_by(&self.issuer()?)?;
        Ok((cert.pem(), fingerprint(cert.der())))
    }
}

/// The names the server certificate should carry: loopback, this host's
/// name, the listen address when it is specific, and whatever was asked for.
pub fn server_sans(listen: &std::net::SocketAddr, extra: &[String]) -> Vec<String> {
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !listen.ip().is_unspecified() {
        sans.push(listen.ip().to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            sans.push(host.to_string());
        }
    }
    sans.extend(extra.iter().cloned());
    sans.sort();
    sans.dedup();
    sans
}
