//! Enrolment: the one-time token format and the exchange that turns a token
//! into a client certificate.
//!
//! A token reads `ark1-<secret>-<ca-pin>`: a 128-bit random secret (the
//! commander stores only its SHA-256 and marks it used on first use) and the
//! SHA-256 of the commander's CA certificate, which the agent pins for the
//! enrolment handshake. The agent makes its own key; only a CSR leaves the
//! device, so the commander never holds an agent's private key.

use std::path::Path;

use ark_proto::enrollment_client::EnrollmentClient;
use ark_proto::EnrollRequest;

pub use ark_link::token::EnrollToken;

use crate::identity::{Credentials, Identity};
use crate::{link, AgentError, Result};

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
        return Err(AgentError::tls(
            "the commander returned a CA that does not match the token's pin",
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
