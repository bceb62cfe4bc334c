//! The agent's last known state, written atomically to `<data>/status.json`
//! after every heartbeat so `ark-agent status` can answer without talking to
//! the running agent (or when it is not running at all).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{write_atomic, AgentError, Result};

/// File name inside the data dir.
pub const STATUS_FILE: &str = "status.json";

/// One job as the agent sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobStatus {
    pub run_id: i64,
    pub generation: u64,
    pub target: String,
    pub url: String,
    pub bytes_done: u64,
}

/// Snapshot of the session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    pub name: String,
    pub commander: String,
    pub pid: u32,
    /// "connected", "reconnecting" or "stopped".
    pub link: String,
    pub paused: bool,
    pub last_heartbeat_ms: i64,
    pub last_error: String,
    pub jobs: Vec<JobStatus>,
    pub completed: u64,
}

impl AgentStatus {
    /// A heartbeat was answered.
    pub fn connected(&mut self) {
        self.link = "connected".into();
        self.last_heartbeat_ms = crate::unix_ms();
        self.last_error.clear();
    }

    pub fn save(&self, data: &Path) -> Result<()> {
        let path = data.join(STATUS_FILE);
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_atomic(&path, &json, 0o644).map_err(AgentError::io("writing", path))
    }

    pub fn load(data: &Path) -> Result<Option<Self>> {
        let path = data.join(STATUS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| AgentError::Config {
                    path,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentError::io("reading", path)(e)),
        }
    }
}

pub use ark_core::ago;
