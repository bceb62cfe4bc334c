//! A lease as the agent keeps it (persisted under `<data>/leases/` so a
//! restarted agent can ask the commander about it), and what every job gets
//! from the session. Below both [`crate::jobs`] (which runs a job) and
//! [`crate::harvest`] (what a kind does in it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ark_proto::agent_session_client::AgentSessionClient;
use ark_proto::{JobFailure, Lease, LeaseRef};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use tracing::warn;

use crate::fetch::{Limits, Throttle, Validators};
use crate::registry::Registry;
use crate::telemetry::ByteCounter;
use crate::{write_atomic, AgentError, Result};

/// Where held leases are persisted inside the data dir.
pub const LEASES_DIR: &str = "leases";

/// What every job needs from the session.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub client: AgentSessionClient<Channel>,
    /// The same commander on a channel without a bound per call: uploads.
    pub bulk: AgentSessionClient<Channel>,
    pub http: reqwest::Client,
    pub data: PathBuf,
    pub staging: PathBuf,
    pub bytes: ByteCounter,
    /// The agent's bandwidth cap, shared by all its jobs.
    pub throttle: Throttle,
    /// Self-yield: every fetch registers its transfer, so the agent
    /// watches the uplink's queue while it downloads.
    pub self_yield: crate::self_yield::SelfYield,
    /// Size, timeout and speed limits for every fetch.
    pub limits: Limits,
    /// How often progress is reported (and so the lease renewed).
    pub progress_every: Duration,
    /// The local dedupe registry.
    pub registry: Arc<Registry>,
    /// Who signs the manifests, and with which key (PEM).
    pub agent_name: String,
    pub credentials: crate::identity::Credentials,
    /// Test hook: see [`FAULT_FLIP_UPLOAD_BYTE`].
    pub fault_flip_upload_byte: Option<u64>,
    /// The host this agent reaches the commander at: a job never fetches
    /// from the commander's endpoints there.
    pub commander_host: Option<String>,
}

/// A lease as the agent keeps it on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeldLease {
    pub run_id: i64,
    pub generation: u64,
    pub ttl_ms: u64,
    pub target: String,
    pub kind: String,
    pub url: String,
    /// Validators of the last harvest, for a conditional GET.
    #[serde(default)]
    pub conditional: Validators,
    /// This run's bandwidth cap (bytes/s, 0 = none).
    #[serde(default)]
    pub bandwidth_cap: u64,
    /// This run's size limit (bytes, 0 = the agent's own).
    #[serde(default)]
    pub max_size: u64,
    /// For a git job: what the commander's mirror holds — whole only when
    /// it has `known_refs_count` refs, else asked for when needed
    /// (`KnownRefs`); its digest tells an unchanged mirror without them.
    #[serde(default)]
    pub known_refs: crate::git::Refs,
    /// Empty from a commander that always sends the whole set.
    #[serde(default)]
    pub known_refs_digest: String,
    #[serde(default)]
    pub known_refs_count: u64,
    /// Where this job may fetch beyond public addresses (see
    /// [`crate::destination`]): networks, and the target's own origin.
    #[serde(default)]
    pub fetch_allow: Vec<String>,
    #[serde(default)]
    pub own_origin: String,
    /// The commander's endpoints, never fetched.
    #[serde(default)]
    pub commander_endpoints: Vec<String>,
}

impl HeldLease {
    pub fn from_lease(lease: &Lease) -> Self {
        let job = lease.job.clone().unwrap_or_default();
        Self {
            run_id: lease.run_id,
            generation: lease.generation,
            ttl_ms: lease.ttl_ms,
            target: job.target,
            kind: job.kind,
            url: job.url,
            conditional: Validators {
                etag: Some(job.etag).filter(|v| !v.is_empty()),
                last_modified: Some(job.last_modified).filter(|v| !v.is_empty()),
            },
            bandwidth_cap: job.bandwidth_cap,
            max_size: job.max_size,
            known_refs: job.known_refs.into_iter().collect(),
            known_refs_digest: job.known_refs_digest,
            known_refs_count: job.known_refs_count,
            fetch_allow: job.fetch_allow,
            own_origin: job.own_origin,
            commander_endpoints: job.commander_endpoints,
        }
    }

    /// The destinations this job may reach; `commander_host` is the host
    /// this agent reaches its commander at.
    pub fn guard(&self, commander_host: Option<String>) -> crate::destination::Guard {
        crate::destination::Guard::new(
            &self.fetch_allow,
            Some(self.own_origin.clone()).filter(|o| !o.is_empty()),
            self.commander_endpoints.clone(),
            commander_host,
        )
    }

    pub fn lease_ref(&self) -> LeaseRef {
        LeaseRef {
            run_id: self.run_id,
            generation: self.generation,
        }
    }

    fn path(&self, data: &Path) -> PathBuf {
        data.join(LEASES_DIR).join(format!("{}.json", self.run_id))
    }

    /// Where this lease's bytes are staged. The target name is reduced to a
    /// safe file name: it comes from the commander, not from us.
    pub fn staged_path(&self, staging: &Path) -> PathBuf {
        staging.join(format!("{}-{}.part", self.run_id, self.safe_target()))
    }

    /// Where this target's git mirror lives under `mirrors`: one per target
    /// and URL, kept across runs so later runs fetch only what is new.
    pub fn mirror_path(&self, mirrors: &Path) -> PathBuf {
        let url = blake3::hash(self.url.as_bytes()).to_hex();
        mirrors.join(format!("{}-{}.git", self.safe_target(), &url[..12]))
    }

    fn safe_target(&self) -> String {
        self.target
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    pub(crate) fn persist(&self, data: &Path) -> Result<()> {
        let path = self.path(data);
        let json = serde_json::to_vec(self).unwrap_or_default();
        write_atomic(&path, &json, 0o600).map_err(AgentError::io("writing lease", path))
    }

    pub(crate) fn forget(&self, data: &Path) {
        let _ = std::fs::remove_file(self.path(data));
    }

    /// Every lease a previous process left behind. A lease file whose
    /// write a crash cut (its temporary file, never renamed into place) is
    /// removed: the lease beside it, if any, is the one last persisted, and
    /// without one the commander's lease simply runs out.
    pub fn load_all(data: &Path) -> Vec<Self> {
        let Ok(entries) = std::fs::read_dir(data.join(LEASES_DIR)) else {
            return Vec::new();
        };
        let entries: Vec<_> = entries.filter_map(|entry| entry.ok()).collect();
        for entry in &entries {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                warn!(path = %path.display(), "removing a lease file a crash left half-written");
                let _ = std::fs::remove_file(&path);
            }
        }
        entries
            .into_iter()
            .filter(|entry| entry.path().extension().is_some_and(|e| e == "json"))
            .filter_map(|entry| {
                let bytes = std::fs::read(entry.path()).ok()?;
                match serde_json::from_slice(&bytes) {
                    Ok(held) => Some(held),
                    Err(e) => {
                        warn!(path = %entry.path().display(), "ignoring unreadable lease file: {e}");
                        None
                    }
                }
            })
            .collect()
    }
}

/// A job's failure, as the commander hears it.
pub fn failure(reason: String, retryable: bool) -> JobFailure {
    JobFailure {
        reason,
        retryable,
        ..Default::default()
    }
}

/// A job this agent gives back because it cannot finish it here (its
/// staging disk cannot hold `size` bytes, 0 if unknown): no attempt is
/// counted and the run goes to another agent first.
pub fn hand_back(reason: String, size: u64) -> JobFailure {
    JobFailure {
        reason,
        retryable: true,
        handed_back: true,
        size_bytes: size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the soak (issue 15): an agent killed (-9) while persisting
    /// a lease left `<run>.tmp` in its leases dir, and no later start ever
    /// removed it. Whether a lease was persisted before (the `.json` is
    /// then the last good copy) or not, the next start keeps the leases and
    /// removes the half-written files.
    #[test]
    fn a_lease_write_cut_by_a_crash_leaves_no_file_behind_after_a_restart() -> anyhow::Result<()> {
        let data = tempfile::tempdir()?;
        let dir = data.path().join(LEASES_DIR);
        std::fs::create_dir_all(&dir)?;
        let held = HeldLease::from_lease(&Lease {
            run_id: 7,
            generation: 2,
            ..Lease::default()
        });
        held.persist(data.path())?;
        // Cut mid-write: a second write of lease 7, and the first of 38.
        std::fs::write(dir.join("7.tmp"), b"{\"run_id\": 7, \"gen")?;
        std::fs::write(dir.join("38.tmp"), b"")?;
        let loaded = HeldLease::load_all(data.path());
        assert_eq!(loaded, vec![held]);
        let left: Vec<_> = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["7.json".to_string()]);
        Ok(())
    }
}
