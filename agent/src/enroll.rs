//! Enrolment: the one-time token format and the exchange that turns a token
//! into a client certificate.
//!
//! A token reads `ark1-<secret>-<ca-pin>`: a 128-bit random secret (the
//! commander stores only its SHA-256 and marks it used on first use) and the
//! SHA-256 of the commander's CA certificate, which the agent pins for the
//! enrolment handshake. The agent makes its own key; only a CSR leaves the
//! device, so the commander never holds an agent's private key.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ark_proto::enrollment_client::EnrollmentClient;
use ark_proto::EnrollRequest;

use crate::identity::{Credentials, Identity};
use crate::{link, AgentError, Result};

const TOKEN_PREFIX: &str = "ark1";
const SECRET_HEX_LEN: usize = 32;
const PIN_HEX_LEN: usize = 64;

/// A parsed enrolment token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// Hex of 16 random bytes.
    pub secret: String,
    /// Hex SHA-256 of the commander's CA certificate (DER).
    pub ca_pin: String,
}

impl fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollToken")
            .field("ca_pin", &self.ca_pin)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}-{}-{}", self.secret, self.ca_pin)
    }
}

impl FromStr for EnrollToken {
    type Err = AgentError;

    fn from_str(s: &str) -> Result<Self> {
        let mut parts = s.trim().split('-');
        let (Some(prefix), Some(secret), Some(pin), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AgentError::BadToken("expected ark1-SECRET-PIN".into()));
        };
        if prefix != TOKEN_PREFIX {
            return Err(AgentError::BadToken(format!(
                "unknown token version {prefix:?}"
            )));
        }
        let is_hex =
            |v: &str, len: usize| v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex(secret, SECRET_HEX_LEN) {
            return Err(AgentError::BadToken(
                "the secret part is not 32 hex digits".into(),
            ));
        }
        if !is_hex(pin, PIN_HEX_LEN) {
            return Err(AgentError::BadToken(
                "the CA pin is not 64 hex digits".into(),
            ));
        }
        Ok(Self {
            secret: secret.to_ascii_lowercase(),
            ca_pin: pin.to_ascii_lowercase(),
        })
    }
}

/// Enrols with the commander at `commander` using `token`, and stores the
/// resulting identity in `data`. Returns the name the commander gave us.
pub async fn enroll(commander: &str, token: &EnrollToken, data: &Path) -> Result<Identity> {
    link::install_crypto_provider();
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ark-agent");
    let csr = params.serialize_request(&key)?;
    let channel = link::channel(commander, link::pinned_client_config(&token.ca_pin)?)?;
    let response = EnrollmentClient::new(channel)
        .enroll(EnrollRequest {
            token: token.secret.clone(),
            csr_pem: csr.pem()?,
        })
        .await
        .map_err(|status| AgentError::rpc("enrolment", status))?
        .into_inner();
    // The CA we got must be the one we pinned: the handshake proved the
    // server holds it, this proves the commander handed us the same one.
    let ca = link::parse_certs(&response.ca_pem, "CA from the commander")?;
    if ca
        .iter()
        .all(|cert| link::fingerprint(cert) != token.ca_pin)
    {
        return Err(AgentError::Tls(
            "the commander returned a CA that does not match the token's pin".into(),
        ));
    }
    let identity = Identity {
        name: response.agent_name,
        commander: commander.to_string(),
        credentials: Credentials {
            ca_pem: response.ca_pem,
            cert_pem: response.certificate_pem,
            key_pem: key.serialize_pem(),
        },
    };
    // Refuse to store something we could not use.
    link::mtls_client_config(&identity.credentials)?;
    identity.save(data)?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let token = EnrollToken {
            secret: "0123456789abcdef0123456789abcdef".into(),
            ca_pin: "ab".repeat(32),
        };
        let parsed: EnrollToken = token.to_string().parse().expect("round trip");
        assert_eq!(parsed, token);
        for bad in [
            "",
            "ark1-00",
            "ark2-0123456789abcdef0123456789abcdef-abab",
            &format!("ark1-0123456789abcdef0123456789abcdeg-{}", "ab".repeat(32)),
            &format!(
                "ark1-0123456789abcdef0123456789abcdef-{}-x",
                "ab".repeat(32)
            ),
        ] {
            assert!(bad.parse::<EnrollToken>().is_err(), "{bad:?} parsed");
        }
    }
}
