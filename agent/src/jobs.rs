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
//! For this version the only kind is `file`: stream one HTTP(S) URL into
//! the staging dir through [`crate::fetch`]; the verified pipeline will
//! tee those bytes through the hasher and upload them.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ark_proto::agent_session_client::AgentSessionClient;
use ark_proto::{
    complete_request, CompleteRequest, JobFailure, JobResult, Lease, LeaseRef, ProgressRequest,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::fetch::{self, Fetched, Limits, Progress, Sinks, Validators};
use crate::telemetry::ByteCounter;
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
        }
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
        let safe: String = self
            .target
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        staging.join(format!("{}-{}.part", self.run_id, safe))
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
enum Abandon {
    Refused(String),
    Expired,
    Dropped,
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
    ctx: &JobContext,
    lease: &HeldLease,
    recovered: bool,
    staged: &Path,
    progress: &Arc<Progress>,
    drop_lease: &Notify,
) -> std::result::Result<(), Abandon> {
    let mut client = ctx.client.clone();
    let mut deadline = Instant::now() + Duration::from_millis(lease.ttl_ms);
    if recovered {
        // Report on the old lease before doing anything: the commander may
        // have given the run to someone else while we were down.
        match report(&mut client, lease, &Progress::default(), 0).await {
            Ok(ttl) => {
                info!(
                    run = lease.run_id,
                    "commander still honours our lease: resuming"
                );
                deadline = Instant::now() + ttl;
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
    let mut fetch = {
        let (http, url, dest) = (ctx.http.clone(), lease.url.clone(), staged.to_path_buf());
        let (conditional, limits) = (lease.conditional.clone(), ctx.limits.clone());
        let (throttle, progress, counter) =
            (ctx.throttle.clone(), progress.clone(), ctx.bytes.clone());
        tokio::spawn(async move {
            let sinks = Sinks {
                throttle: &throttle,
                progress: &progress,
                counter: &counter,
            };
            fetch::fetch(&http, &url, &dest, &conditional, &limits, sinks).await
        })
    };
    let mut ticker = tokio::time::interval(ctx.progress_every);
    // Rate since the previous report.
    let mut last = (Instant::now(), progress.done.load(Ordering::Relaxed));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            joined = &mut fetch => {
                break match joined {
                    Ok(Ok(fetched)) => Ok(fetched),
                    Ok(Err(e)) => Err(failure(e.to_string(), e.retryable())),
                    Err(e) => Err(failure(format!("fetch task failed: {e}"), true)),
                };
            }
            _ = drop_lease.notified() => {
                fetch.abort();
                return Err(Abandon::Dropped);
            }
            _ = ticker.tick() => {
                let done = progress.done.load(Ordering::Relaxed);
                let elapsed = last.0.elapsed().as_secs_f64();
                let rate = if elapsed > 0.0 { (done.saturating_sub(last.1) as f64 / elapsed) as u64 } else { 0 };
                last = (Instant::now(), done);
                match report(&mut client, lease, progress, rate).await {
                    Ok(ttl) => deadline = Instant::now() + ttl,
                    Err(e) if e.is_refusal() => {
                        fetch.abort();
                        return Err(Abandon::Refused(e.to_string()));
                    }
                    Err(e) => {
                        if Instant::now() >= deadline {
                            fetch.abort();
                            return Err(Abandon::Expired);
                        }
                        warn!(run = lease.run_id, "progress report failed, job continues: {e}");
                    }
                }
            }
        }
    };
    let outcome = match &result {
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
        }) => complete_request::Outcome::Success(JobResult {
            blake3: root.to_hex().to_string(),
            size_bytes: *size,
            staged_path: staged.display().to_string(),
            duration_ms: started.elapsed().as_millis() as u64,
            unchanged: false,
            etag: validators.etag.clone().unwrap_or_default(),
            last_modified: validators.last_modified.clone().unwrap_or_default(),
            resumes: *resumes,
            restarts: *restarts,
        }),
        Err(failure) => {
            fetch::remove_staged(staged).await;
            complete_request::Outcome::Failure(failure.clone())
        }
    };
    loop {
        let request = CompleteRequest {
            lease: Some(lease.lease_ref()),
            outcome: Some(outcome.clone()),
        };
        match client.complete(request).await {
            Ok(_) => {
                match &result {
                    Ok(Fetched::NotModified) => {
                        info!(run = lease.run_id, "origin unchanged: run completed")
                    }
                    Ok(Fetched::Body { size, .. }) => {
                        info!(run = lease.run_id, size, "run completed")
                    }
                    Err(f) => warn!(run = lease.run_id, reason = %f.reason, "run failed"),
                }
                return Ok(());
            }
            Err(status) => {
                let e = AgentError::rpc("completion", status);
                if e.is_refusal() {
                    return Err(Abandon::Refused(e.to_string()));
                }
                if Instant::now() >= deadline {
                    return Err(Abandon::Expired);
                }
                tokio::time::sleep(COMPLETE_RETRY).await;
            }
        }
    }
}

/// Reports progress on `lease`; Ok carries the renewed time to live.
async fn report(
    client: &mut AgentSessionClient<Channel>,
    lease: &HeldLease,
    progress: &Progress,
    bytes_per_second: u64,
) -> Result<Duration> {
    let response = client
        .report_progress(ProgressRequest {
            lease: Some(lease.lease_ref()),
            bytes_done: progress.done.load(Ordering::Relaxed),
            bytes_total: progress.total.load(Ordering::Relaxed),
            bytes_per_second,
        })
        .await
        .map_err(|status| AgentError::rpc("progress report", status))?;
    Ok(Duration::from_millis(response.into_inner().ttl_ms))
}

fn failure(reason: String, retryable: bool) -> JobFailure {
    JobFailure { reason, retryable }
}

/// A token bucket shared by every job of one agent: the agent's whole
/// download rate stays under the cap, however many jobs run. The bucket holds
/// at most one second of credit, so an idle hour buys no burst.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    inner: Option<Arc<std::sync::Mutex<Bucket>>>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Throttle {
    /// `bytes_per_second` = 0 means uncapped.
    pub fn new(bytes_per_second: u64) -> Self {
        let inner = (bytes_per_second > 0).then(|| {
            Arc::new(std::sync::Mutex::new(Bucket {
                rate: bytes_per_second as f64,
                tokens: 0.0,
                last: Instant::now(),
            }))
        });
        Self { inner }
    }

    /// Accounts for `n` bytes, waiting as long as the cap requires.
    pub async fn take(&self, n: u64) {
        let Some(bucket) = &self.inner else { return };
        let wait = {
            let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(b.last).as_secs_f64() * b.rate;
            b.tokens = (b.tokens + refill).min(b.rate) - n as f64;
            b.last = now;
            (b.tokens < 0.0).then(|| Duration::from_secs_f64(-b.tokens / b.rate))
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_throttle_holds_all_takers_together_under_the_cap() {
        let throttle = Throttle::new(400_000);
        let started = Instant::now();
        // Two "jobs" of 100 kB each in 10 kB chunks: 200 kB at 400 kB/s.
        let job = |t: Throttle| async move {
            for _ in 0..10 {
                t.take(10_000).await;
            }
        };
        tokio::join!(job(throttle.clone()), job(throttle.clone()));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(450),
            "200 kB at 400 kB/s took only {elapsed:?}"
        );
        // Uncapped has no bucket at all: nothing to wait on.
        assert!(Throttle::new(0).inner.is_none());
    }
}
