//! One leased job, from grant to completion.
//!
//! A job task owns its lease: it persists the lease to `<data>/leases/` so a
//! restarted agent can ask the commander about it, runs the harvest, renews
//! the lease with a progress report every heartbeat interval, and completes
//! the run. The commander is the authority on the lease:
//! - a refused report (stale generation, reassigned run) stops the job and
//!   removes what it staged;
//! - while the commander is unreachable the job keeps going, and gives up
//!   (cleaning up) only once the lease's time has run out without a renewal.
//!
//! The harvest itself is the kind's ([`crate::harvest`]); what follows is
//! the same for every kind ([`deliver`]): record the body in the dedupe
//! registry, ask the commander `Have` with a signed manifest, and upload the
//! bytes with their tree unless the archive holds them already. The
//! commander lands a verified upload and completes the run; the agent then
//! drops its staging copy. [`supervise`] keeps the lease while a step runs.

mod deliver;
mod supervise;

pub use crate::fetch::Throttle;
pub use deliver::{fault_flip_upload_byte, FAULT_FLIP_UPLOAD_BYTE};
use supervise::{report, Supervisor};

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ark_proto::agent_session_client::AgentSessionClient;
use ark_proto::{
    complete_request, upload_chunk, CompleteRequest, HaveRequest, JobFailure, JobResult, Lease,
    LeaseRef, ProgressRequest, UploadChunk, UploadHeader, UploadResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::fetch::{self, Fetched, Limits, Progress, Validators};
use crate::manifest::Manifest;
use crate::registry::{Harvest, Registry};
use crate::telemetry::ByteCounter;
use crate::tree::{outboard_path, GroupVerifier};
use crate::{write_atomic, AgentError, Result};

/// Where held leases are persisted inside the data dir.
pub const LEASES_DIR: &str = "leases";

/// Pause between completion attempts while the commander is unreachable.
const COMPLETE_RETRY: Duration = Duration::from_millis(500);

/// What every job needs from the session.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub client: AgentSessionClient<Channel>,
    pub http: reqwest::Client,
    pub data: PathBuf,
    pub staging: PathBuf,
    pub bytes: ByteCounter,
    /// The agent's bandwidth cap, shared by all its jobs.
    pub throttle: Throttle,
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
    /// For a git job: what the commander's mirror holds.
    #[serde(default)]
    pub known_refs: crate::git::Refs,
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

    fn persist(&self, data: &Path) -> Result<()> {
        let path = self.path(data);
        let json = serde_json::to_vec(self).unwrap_or_default();
        write_atomic(&path, &json, 0o600).map_err(AgentError::io("writing lease", path))
    }

    fn forget(&self, data: &Path) {
        let _ = std::fs::remove_file(self.path(data));
    }

    /// Every lease a previous process left behind.
    pub fn load_all(data: &Path) -> Vec<Self> {
        let Ok(entries) = std::fs::read_dir(data.join(LEASES_DIR)) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok())
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

/// The session's handle on a running job.
#[derive(Debug)]
pub struct JobHandle {
    pub lease: HeldLease,
    pub progress: Arc<Progress>,
    drop_lease: Arc<Notify>,
    task: JoinHandle<()>,
}

impl JobHandle {
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
    /// The commander no longer recognises this lease: stop and clean up.
    pub fn drop_lease(&self) {
        self.drop_lease.notify_one();
    }
    /// Stops the task without touching its lease file (agent shutdown).
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Starts a job for `lease`. `recovered` marks a lease found on disk after a
/// restart: the job first asks the commander whether the lease still stands.
pub fn spawn(ctx: Arc<JobContext>, lease: HeldLease, recovered: bool) -> Result<JobHandle> {
    lease.persist(&ctx.data)?;
    let progress = Arc::new(Progress::default());
    let drop_lease = Arc::new(Notify::new());
    let task = tokio::spawn(run(
        ctx,
        lease.clone(),
        recovered,
        progress.clone(),
        drop_lease.clone(),
    ));
    Ok(JobHandle {
        lease,
        progress,
        drop_lease,
        task,
    })
}

/// Why a job ended without completing its run.
pub(crate) enum Abandon {
    Refused(String),
    Expired,
    Dropped,
}

/// How a supervised step (fetch, delivery) can stop short.
pub(crate) enum Stop {
    /// The lease is gone: clean up, report nothing.
    Abandon(Abandon),
    /// The job failed: report it, so the commander can retry or fail the run.
    Fail(JobFailure),
}

async fn run(
    ctx: Arc<JobContext>,
    lease: HeldLease,
    recovered: bool,
    progress: Arc<Progress>,
    drop_lease: Arc<Notify>,
) {
    let staged = lease.staged_path(&ctx.staging);
    match drive(&ctx, &lease, recovered, &staged, &progress, &drop_lease).await {
        Ok(()) => {}
        Err(abandon) => {
            let why = match abandon {
                Abandon::Refused(message) => format!("the commander refused our report: {message}"),
                Abandon::Expired => {
                    "the lease ran out while the commander was unreachable".to_string()
                }
                Abandon::Dropped => "the commander dropped the lease".to_string(),
            };
            warn!(
                run = lease.run_id,
                generation = lease.generation,
                "abandoning job and removing its staged bytes: {why}"
            );
            fetch::remove_staged(&staged).await;
        }
    }
    lease.forget(&ctx.data);
}

async fn drive(
    ctx: &Arc<JobContext>,
    lease: &HeldLease,
    recovered: bool,
    staged: &Path,
    progress: &Arc<Progress>,
    drop_lease: &Notify,
) -> std::result::Result<(), Abandon> {
    let mut supervisor = Supervisor {
        ctx,
        lease,
        client: ctx.client.clone(),
        deadline: Instant::now() + Duration::from_millis(lease.ttl_ms),
        progress,
        drop_lease,
    };
    if recovered {
        // Report on the old lease before doing anything: the commander may
        // have given the run to someone else while we were down.
        match report(&mut supervisor.client, lease, &Progress::default(), 0).await {
            Ok(ttl) => {
                info!(
                    run = lease.run_id,
                    "commander still honours our lease: resuming"
                );
                supervisor.deadline = Instant::now() + ttl;
            }
            Err(e) if e.is_refusal() => return Err(Abandon::Refused(e.to_string())),
            Err(e) => warn!(
                run = lease.run_id,
                "cannot confirm recovered lease yet: {e}"
            ),
        }
    }
    info!(run = lease.run_id, generation = lease.generation, url = %lease.url, "job started");
    let started = Instant::now();
    let started_ms = crate::unix_ms();
    let fetch = tokio::spawn({
        let (ctx, lease, staged, progress) = (
            ctx.clone(),
            lease.clone(),
            staged.to_path_buf(),
            progress.clone(),
        );
        async move {
            crate::harvest::harvest(ctx, lease, staged, progress)
                .await
                .map_err(Stop::Fail)
        }
    });
    let fetched = supervisor.watch(fetch).await;
    let (fetched, published) = match fetched {
        Ok((fetched, published)) => (Ok(fetched), published),
        Err(stop) => (Err(stop), None),
    };
    let outcome = match fetched {
        Ok(Fetched::NotModified) => complete_request::Outcome::Success(JobResult {
            unchanged: true,
            duration_ms: started.elapsed().as_millis() as u64,
            ..JobResult::default()
        }),
        Ok(Fetched::Body {
            size,
            root,
            validators,
            resumes,
            restarts,
            ..
        }) => {
            let manifest = Manifest {
                format: crate::manifest::FORMAT,
                agent: ctx.agent_name.clone(),
                run_id: lease.run_id,
                generation: lease.generation,
                target: lease.target.clone(),
                kind: lease.kind.clone(),
                url: lease.url.clone(),
                size,
                blake3: root.to_hex().to_string(),
                digests: published
                    .iter()
                    .map(|(p, hex)| (p.algorithm.to_string(), hex.clone()))
                    .collect(),
                digest_source: published
                    .as_ref()
                    .map(|(p, _)| p.source.clone())
                    .unwrap_or_else(|| "none published".into()),
                etag: validators.etag.clone().unwrap_or_default(),
                last_modified: validators.last_modified.clone().unwrap_or_default(),
                fetch_started_ms: started_ms,
                fetch_finished_ms: crate::unix_ms(),
                resumes,
                restarts,
            };
            let task = tokio::spawn(deliver::deliver(
                ctx.clone(),
                staged.to_path_buf(),
                manifest,
            ));
            match supervisor.watch(task).await {
                Ok(path) => {
                    info!(run = lease.run_id, size, %path, "landed: dropping the staging copy");
                    fetch::remove_staged(staged).await;
                    return Ok(());
                }
                Err(Stop::Abandon(abandon)) => return Err(abandon),
                Err(Stop::Fail(f)) => {
                    fetch::remove_staged(staged).await;
                    complete_request::Outcome::Failure(f)
                }
            }
        }
        Err(Stop::Abandon(abandon)) => return Err(abandon),
        Err(Stop::Fail(f)) => {
            fetch::remove_staged(staged).await;
            complete_request::Outcome::Failure(f)
        }
    };
    let mut client = supervisor.client.clone();
    loop {
        let request = CompleteRequest {
            lease: Some(lease.lease_ref()),
            outcome: Some(outcome.clone()),
        };
        match client.complete(request).await {
            Ok(_) => {
                match &outcome {
                    complete_request::Outcome::Success(_) => {
                        info!(run = lease.run_id, "origin unchanged: run completed")
                    }
                    complete_request::Outcome::Failure(f) => {
                        warn!(run = lease.run_id, reason = %f.reason, "run failed")
                    }
                }
                return Ok(());
            }
            Err(status) => {
                let e = AgentError::rpc("completion", status);
                if e.is_refusal() {
                    return Err(Abandon::Refused(e.to_string()));
                }
                if Instant::now() >= supervisor.deadline {
                    return Err(Abandon::Expired);
                }
                tokio::time::sleep(COMPLETE_RETRY).await;
            }
        }
    }
}

pub(crate) fn failure(reason: String, retryable: bool) -> JobFailure {
    JobFailure { reason, retryable }
}
