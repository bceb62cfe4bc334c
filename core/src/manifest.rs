//! The manifest an agent signs for each harvested body: what it fetched,
//! from where, under which lease, and the BLAKE3 root it claims.
//!
//! It travels as JSON bytes with a detached signature made with the agent's
//! enrolled key (ECDSA P-256 / SHA-256, the key `ark-agent enroll` made), so
//! the commander can tie every landed file to the device that fetched it and
//! keep that proof beside the file. The signature binds the claim to the
//! agent; it proves nothing about the bytes: the commander hashes those
//! itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the manifest format.
pub const FORMAT: u32 = 1;

/// One agent's signed claim about one harvested body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The agent's name, as enrolled.
    pub agent: String,
    pub run_id: i64,
    pub generation: u64,
    pub target: String,
    pub kind: String,
    pub url: String,
    pub size: u64,
    /// BLAKE3 root of the body (hex), equal to `b3sum`'s.
    pub blake3: String,
    /// Digests the origin published for this body and that matched
    /// ("sha256" → hex, …); empty when it published none.
    #[serde(default)]
    pub digests: BTreeMap<String, String>,
    /// Where those digests were published, or "none published".
    #[serde(default)]
    pub digest_source: String,
    #[serde(default)]
    pub etag: String,
    #[serde(default)]
    pub last_modified: String,
    /// When the fetch began and ended (ms since the Unix epoch).
    pub fetch_started_ms: i64,
    pub fetch_finished_ms: i64,
    #[serde(default)]
    pub resumes: u32,
    #[serde(default)]
    pub restarts: u32,
    /// For a git bundle: the ref → object id map it carries, which a quorum
    /// compares (two agents' packs of the same refs differ byte for byte).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refs: BTreeMap<String, String>,
}

impl Manifest {
    /// The exact bytes that are signed and sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Signs `to_bytes()` with the agent's PEM private key; returns the
    /// bytes and the signature (ASN.1 DER).
    pub fn sign(&self, key_pem: &str) -> Result<(Vec<u8>, Vec<u8>), ManifestError> {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        use rustls_pki_types::pem::PemObject;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| ManifestError::Key(format!("agent key: not a PEM private key: {e}")))?;
        let rng = ring::rand::SystemRandom::new();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.secret_der(), &rng)
                .map_err(|e| {
                    ManifestError::Key(format!(
                        "agent key is not an ECDSA P-256 PKCS#8 key ({e}); enrol again"
                    ))
                })?;
        let bytes = self.to_bytes();
        let signature = pair
            .sign(&rng, &bytes)
            .map_err(|e| ManifestError::Key(format!("signing the manifest: {e}")))?;
        Ok((bytes, signature.as_ref().to_vec()))
    }

    /// Checks `signature` over `bytes` with the public key of the client
    /// certificate (DER) the agent presented, then parses the manifest.
    pub fn verify(bytes: &[u8], signature: &[u8], cert_der: &[u8]) -> Result<Self, ManifestError> {
        use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) = X509Certificate::from_der(cert_der)
            .map_err(|e| ManifestError::Invalid(format!("client certificate unreadable: {e}")))?;
        let key = cert.public_key().subject_public_key.data.to_vec();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key)
            .verify(bytes, signature)
            .map_err(|_| ManifestError::BadSignature)?;
        serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Invalid(format!("the manifest is not valid: {e}")))
    }
}

/// Why a manifest could not be signed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The agent's own key is unusable.
    #[error("{0}")]
    Key(String),
    #[error("the manifest's signature does not verify with this agent's certificate: refused")]
    BadSignature,
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            agent: "pi".into(),
            run_id: 7,
            generation: 2,
            target: "wiki".into(),
            kind: "file".into(),
            url: "http://127.0.0.1/x.zim".into(),
            size: 5,
            blake3: blake3::hash(b"hello").to_hex().to_string(),
            digests: BTreeMap::new(),
            digest_source: String::new(),
            etag: "\"e\"".into(),
            last_modified: String::new(),
            fetch_started_ms: 1,
            fetch_finished_ms: 2,
            resumes: 0,
            restarts: 0,
            refs: Default::default(),
        }
    }

    #[test]
    fn a_signature_verifies_with_the_public_key_and_fails_on_any_change() {
        use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
        let key = rcgen::KeyPair::generate().expect("key");
        let (bytes, signature) = manifest().sign(&key.serialize_pem()).expect("sign");
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key_raw());
        assert!(public.verify(&bytes, &signature).is_ok());
        let mut forged = bytes.clone();
        let at = forged.len() / 2;
        forged[at] ^= 1;
        assert!(public.verify(&forged, &signature).is_err());
        let parsed: Manifest = serde_json::from_slice(&bytes).expect("parse");
        assert_eq!(parsed, manifest());
    }
}
