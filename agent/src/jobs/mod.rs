//! One leased job, from grant to completion.
//!
//! A job task owns its lease: it persists the lease to `<data>/leases/` so a
//! restarted agent can ask the commander about it, runs the harvest, renews
//! the lease with a progress report every heartbeat interval, and completes
//! the run. The commander is the authority on the lease:
//! - a refused report (stale generation, reassigned run) stops the job; what
//!   it staged is kept until the commander says whether the run comes back
//!   ([`kept`]);
//! - while the commander is unreachable the job keeps going, and gives up
//!   only once the lease's time has run out without a renewal (its staged
//!   bytes kept the same way).
//!
//! The harvest itself is the kind's ([`crate::harvest`]); what follows is
//! the same for every kind ([`deliver`]): record the body in the dedupe
//! registry, ask the commander `Have` with a signed manifest, and upload the
//! bytes with their tree unless the archive holds them already. The
//! commander lands a verified upload and completes the run; the agent then
//! drops its staging copy. [`supervise`] keeps the lease while a step runs.

mod deliver;
mod fetched;
#[cfg(debug_assertions)]
mod forge;
pub mod kept;
mod supervise;

pub use crate::fetch::Throttle;
pub use deliver::{fault_flip_upload_byte, FAULT_FLIP_UPLOAD_BYTE};
use supervise::{report, Supervisor};

pub use crate::lease::{failure, HeldLease, JobContext, LEASES_DIR};

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ark_proto::agent_session_client::AgentSessionClient;
use ark_proto::{
    complete_request, upload_chunk, CompleteRequest, HaveRequest, JobFailure, JobResult, LeaseRef,
    ProgressRequest, UploadChunk, UploadHeader, UploadResponse,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::fetch::{self, Fetched, Progress};
use crate::manifest::Manifest;
use crate::registry::Harvest;
use crate::tree::{outboard_path, GroupVerifier};
use crate::{AgentError, Result};

/// Pause between completion attempts while the commander is unreachable.
const COMPLETE_RETRY: Duration = Duration::from_millis(500);

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
    if let Err(abandon) = drive(&ctx, &lease, recovered, &staged, &progress, &drop_lease).await {
        let why = match abandon {
            Abandon::Refused(message) => format!("the commander refused our report: {message}"),
            Abandon::Expired => "the lease ran out while the commander was unreachable".into(),
            Abandon::Dropped => "the commander dropped the lease".into(),
        };
        // The bytes are sound (their resume state is durable): they stay
        // until the commander says whether the run comes back here
        // (`kept`), so a lease lost to a partition costs no refetch.
        warn!(
            run = lease.run_id,
            generation = lease.generation,
            "stopping the job, keeping its staged bytes for the run's next lease: {why}"
        );
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
        confirm_recovered(&mut supervisor, lease).await?;
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
            if let Some(whole) = fetched::recall(&staged, &lease.url).await {
                return Ok((whole, None));
            }
            let (body, published) =
                crate::harvest::harvest(ctx, lease.clone(), staged.clone(), progress)
                    .await
                    .map_err(Stop::Fail)?;
            fetched::record(&staged, &lease.url, &body).await;
            Ok((body, published))
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
            #[cfg(debug_assertions)]
            let (size, root, published) = match forge::forged(staged).await {
                Some((size, root)) => (size, root, None),
                None => (size, root, published),
            };
            let fetched = (size, root, validators, resumes, restarts);
            let mut manifest = manifest_of(ctx, lease, fetched, published.as_ref(), started_ms);
            if lease.kind.parse() == Ok(ark_core::Kind::Git) {
                manifest.refs = bundle_refs(staged).await;
            }
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
    complete(&mut supervisor, lease, outcome).await
}

/// The refs of the bundle the agent made (its manifest claims them).
async fn bundle_refs(staged: &Path) -> std::collections::BTreeMap<String, String> {
    let path = staged.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        ark_core::formats::bundle::header_refs(std::io::BufReader::new(file))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|refs| refs);
    read.unwrap_or_else(|e| {
        warn!("reading the refs of the bundle: {e}");
        Default::default()
    })
}

/// The manifest the agent signs for a fetched body.
fn manifest_of(
    ctx: &JobContext,
    lease: &HeldLease,
    (size, root, validators, resumes, restarts): (
        u64,
        blake3::Hash,
        crate::fetch::Validators,
        u32,
        u32,
    ),
    published: Option<&(crate::digests::Published, String)>,
    started_ms: i64,
) -> Manifest {
    Manifest {
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
            .into_iter()
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
        refs: Default::default(),
    }
}

/// Reports the run's end to the commander, retrying while it is away and
/// the lease lasts.
async fn complete(
    supervisor: &mut Supervisor<'_>,
    lease: &HeldLease,
    outcome: complete_request::Outcome,
) -> std::result::Result<(), Abandon> {
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

/// Reports on a lease found on disk after a restart before doing anything:
/// the commander may have given the run to someone else meanwhile.
async fn confirm_recovered(
    supervisor: &mut Supervisor<'_>,
    lease: &HeldLease,
) -> std::result::Result<(), Abandon> {
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
    Ok(())
}
