//! The agent's identity on disk: its private key, the client certificate the
//! commander signed, the commander's CA (pinned at enrolment) and the
//! commander's address. All files are written atomically with mode 0600,
//! because the key is the agent's whole credential.

use std::path::{Path, PathBuf};

use crate::{write_atomic, AgentError, Result};

pub use ark_link::tls::Credentials;

/// An enrolled agent: who it is and where its commander is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub commander: String,
    pub credentials: Credentials,
}

/// Where the identity lives inside a data dir.
pub fn dir(data: &Path) -> PathBuf {
    data.join("identity")
}

const FILES: [&str; 5] = ["name", "commander", "ca.pem", "cert.pem", "key.pem"];

impl Identity {
    /// Writes every file of the identity (0600), key last-but-verified: a
    /// crash mid-way leaves an identity that fails to load, never a mix of
    /// two enrolments that loads.
    pub fn save(&self, data: &Path) -> Result<()> {
        let dir = dir(data);
        let values = [
            self.name.as_str(),
            self.commander.as_str(),
            self.credentials.ca_pem.as_str(),
            self.credentials.cert_pem.as_str(),
            self.credentials.key_pem.as_str(),
        ];
        for (file, value) in FILES.iter().zip(values) {
            let path = dir.join(file);
            write_atomic(&path, value.as_bytes(), 0o600)
                .map_err(AgentError::io("writing", path))?;
        }
        Ok(())
    }

    /// Loads the identity written by `ark-agent enroll`.
    pub fn load(data: &Path) -> Result<Self> {
        let dir = dir(data);
        let mut values = Vec::with_capacity(FILES.len());
        for file in FILES {
            let path = dir.join(file);
            if !path.exists() {
                return Err(AgentError::NotEnrolled(path));
            }
            let text = std::fs::read_to_string(&path).map_err(AgentError::io("reading", &path))?;
            values.push(text.trim_end_matches('\n').to_string());
        }
        let [name, commander, ca_pem, cert_pem, key_pem]: [String; 5] = values
            .try_into()
            .map_err(|_| AgentError::NotEnrolled(dir.clone()))?;
        Ok(Self {
            name,
            commander,
            credentials: Credentials {
                ca_pem,
                cert_pem,
                key_pem,
            },
        })
    }
}
