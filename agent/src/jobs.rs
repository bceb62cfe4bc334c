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
//! the staging dir through [`crate::fetch`] (hashing as it arrives), then
//! deliver it: record it in the dedupe registry, ask the commander `Have`
//! with a signed manifest, and upload the bytes with their tree unless the
//! archive holds them already. The commander lands a verified upload and
//! completes the run; the agent then drops its staging copy.

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

use crate::fetch::{self, Fetched, Limits, Progress, Sinks, Validators};
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
enum Abandon {
    Refused(String),
    Expired,
    Dropped,
}

/// How a supervised step (fetch, delivery) can stop short.
enum Stop {
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

/// The lease-keeping side of a job: while `task` works, report progress
/// every interval (renewing the lease), stop it when the lease is dropped,
/// refused, or runs out while the commander is unreachable.
struct Supervisor<'a> {
    ctx: &'a JobContext,
    lease: &'a HeldLease,
    client: AgentSessionClient<Channel>,
    deadline: Instant,
    progress: &'a Arc<Progress>,
    drop_lease: &'a Notify,
}

impl Supervisor<'_> {
    async fn watch<T: Send + 'static>(
        &mut self,
        mut task: JoinHandle<std::result::Result<T, Stop>>,
    ) -> std::result::Result<T, Stop> {
        let mut ticker = tokio::time::interval(self.ctx.progress_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        // Rate since the previous report.
        let mut last = (Instant::now(), self.progress.done.load(Ordering::Relaxed));
        loop {
            tokio::select! {
                joined = &mut task => {
                    return joined.unwrap_or_else(|e| Err(Stop::Fail(failure(format!("job task failed: {e}"), true))));
                }
                _ = self.drop_lease.notified() => {
                    task.abort();
                    return Err(Stop::Abandon(Abandon::Dropped));
                }
                _ = ticker.tick() => {
                    let done = self.progress.done.load(Ordering::Relaxed);
                    let elapsed = last.0.elapsed().as_secs_f64();
                    let rate = if elapsed > 0.0 { (done.saturating_sub(last.1) as f64 / elapsed) as u64 } else { 0 };
                    last = (Instant::now(), done);
                    match report(&mut self.client, self.lease, self.progress, rate).await {
                        Ok(ttl) => self.deadline = Instant::now() + ttl,
                        Err(e) if e.is_refusal() => {
                            // The task may have just finished the run itself
                            // (a landing ends the lease): its word wins.
                            if task.is_finished() {
                                return (&mut task).await.unwrap_or_else(|e| Err(Stop::Fail(failure(e.to_string(), true))));
                            }
                            task.abort();
                            return Err(Stop::Abandon(Abandon::Refused(e.to_string())));
                        }
                        Err(e) => {
                            if Instant::now() >= self.deadline {
                                task.abort();
                                return Err(Stop::Abandon(Abandon::Expired));
                            }
                            warn!(run = self.lease.run_id, "progress report failed, job continues: {e}");
                        }
                    }
                }
            }
        }
    }
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
    let fetch = tokio::spawn(harvest(
        ctx.clone(),
        lease.clone(),
        staged.to_path_buf(),
        progress.clone(),
    ));
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
            let task = tokio::spawn(deliver(ctx.clone(), staged.to_path_buf(), manifest));
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

/// A harvested body and the digest its origin published, if any.
type Harvested = (Fetched, Option<(crate::digests::Published, String)>);

/// Fetches the lease's URL into `dest`: the kind's streaming check rides
/// along with the hasher (a split ZIM is fetched part by part and joined),
/// then a digest the origin publishes beside the file is compared.
async fn harvest(
    ctx: Arc<JobContext>,
    lease: HeldLease,
    dest: PathBuf,
    progress: Arc<Progress>,
) -> std::result::Result<Harvested, Stop> {
    if lease.kind == ark_proto::KIND_GIT {
        return harvest_git(&ctx, &lease, &dest).await.map(|f| (f, None));
    }
    let (http, url) = (&ctx.http, &lease.url);
    let run_throttle = Throttle::new(lease.bandwidth_cap);
    let sinks = Sinks {
        throttle: &ctx.throttle,
        run_throttle: Some(&run_throttle),
        progress: &progress,
        counter: &ctx.bytes,
    };
    let conditional = &lease.conditional;
    let mut limits = ctx.limits.clone();
    limits.guard = lease.guard(ctx.commander_host.clone());
    if lease.max_size > 0 {
        limits.max_size = limits.max_size.min(lease.max_size);
    }
    let limits = &limits;
    let kind = lease.kind.as_str();
    let mut zim = (kind == ark_proto::KIND_ZIM).then(crate::zim::StreamCheck::new);
    let mut feed = (kind == ark_proto::KIND_RSS).then(ark_core::formats::feed::FeedSniff::default);
    // A split archive (…zimaa, …zimab, …) is one target.
    let split = zim.is_some() && url.ends_with(".zimaa");
    let fetched = match (zim.as_mut(), feed.as_mut()) {
        (Some(check), _) if split => {
            crate::harvest::zim::fetch_split(http, url, &dest, conditional, limits, sinks, check)
                .await
        }
        (zim, feed) => {
            let check = zim
                .map(|c| c as &mut dyn fetch::BodyCheck)
                .or(feed.map(|c| c as &mut dyn fetch::BodyCheck));
            fetch::fetch_checked(http, url, &dest, conditional, limits, sinks, check).await
        }
    }
    .map_err(|e| Stop::Fail(failure(e.to_string(), e.retryable())))?;
    let Fetched::Body { size, .. } = &fetched else {
        return Ok((fetched, None));
    };
    if feed.is_some_and(|f| !f.decided()) {
        return Err(Stop::Fail(failure(
            format!("GET {url}: an empty document, not a feed"),
            true,
        )));
    }
    if let Some(zim) = zim {
        // Layout and MD5 need the whole file: a mismatch is damage (worth
        // another fetch), caught before any upload.
        zim.finish(*size)
            .map_err(|e| Stop::Fail(failure(format!("GET {url}: {e}"), true)))?;
    }
    if split || kind == ark_proto::KIND_RSS || kind == ark_proto::KIND_MEDIA {
        // A split archive's sidecars describe single parts; feeds and their
        // enclosures are not published with digests (and three extra
        // requests per enclosure would be waste).
        return Ok((fetched, None));
    }
    let Some(published) = crate::digests::discover(http, &limits.guard, url).await else {
        info!(%url, "the origin publishes no digest (.meta4, .sha256, .md5): BLAKE3 only");
        return Ok((fetched, None));
    };
    let hex = crate::digests::check(&dest, *size, &published)
        .await
        .map_err(|e| Stop::Fail(failure(format!("GET {url}: {e}"), true)))?;
    info!(%url, source = %published.source, algorithm = published.algorithm, "matches the published digest");
    Ok((fetched, Some((published, hex))))
}

/// Where the agent keeps its own bare mirror of each git target, so later
/// runs fetch only what is new upstream.
pub const MIRRORS_DIR: &str = "mirrors";

/// A git job: bring the agent's mirror up to date with upstream (gix, on a
/// blocking thread: its HTTP client must not run inside the runtime), then
/// write a bundle of what the commander's mirror lacks into `dest` and hash
/// it like a download. Refs equal to the commander's: unchanged, nothing
/// written (one ref advertisement was the whole cost).
async fn harvest_git(
    ctx: &JobContext,
    lease: &HeldLease,
    dest: &Path,
) -> std::result::Result<Fetched, Stop> {
    // gix follows the URL itself: it is checked here (the operator's own
    // origin, so normally allowed), not at every hop.
    let parsed = reqwest::Url::parse(&lease.url)
        .map_err(|e| Stop::Fail(failure(format!("{}: not a URL: {e}", lease.url), false)))?;
    lease
        .guard(ctx.commander_host.clone())
        .check(&parsed)
        .await
        .map_err(|r| Stop::Fail(failure(format!("{}: refused: {r}", lease.url), false)))?;
    let mirror = lease.mirror_path(&ctx.data.join(MIRRORS_DIR));
    let (url, known, dest) = (
        lease.url.clone(),
        lease.known_refs.clone(),
        dest.to_path_buf(),
    );
    let done = tokio::task::spawn_blocking(move || -> std::result::Result<Option<(u64, blake3::Hash)>, String> {
        let interrupt = std::sync::atomic::AtomicBool::new(false);
        let refs = crate::git::mirror(&url, &mirror, &interrupt).map_err(|e| e.to_string())?;
        if refs == known {
            return Ok(None);
        }
        let out = std::fs::File::create(&dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
        let mut out = std::io::BufWriter::new(out);
        let summary = crate::git::write_bundle(&mirror, &refs, &known, &mut out).map_err(|e| e.to_string())?;
        let file = out.into_inner().map_err(|e| format!("writing {}: {e}", dest.display()))?;
        file.sync_all().map_err(|e| format!("syncing {}: {e}", dest.display()))?;
        info!(%url, refs = summary.refs, objects = summary.objects, pack_bytes = summary.pack_bytes, "bundle written");
        crate::tree::hash_with_outboard(&dest)
            .map(Some)
            .map_err(|e| format!("hashing {}: {e}", dest.display()))
    })
    .await
    .map_err(|e| Stop::Fail(failure(format!("git job panicked: {e}"), true)))?
    .map_err(|e| Stop::Fail(failure(e, true)))?;
    Ok(match done {
        None => Fetched::NotModified,
        Some((size, root)) => Fetched::Body {
            size,
            root,
            validators: Default::default(),
            resumes: 0,
            restarts: 0,
            reused: 0,
        },
    })
}

/// Uploads refused for a reason other than the lease (a cut, an error on
/// the commander) before the job fails and the run is retried.
const MAX_UPLOAD_FAILURES: u32 = 3;

/// Link failures (commander unreachable mid-delivery) retried before they
/// count as an upload failure: a minute at [`COMPLETE_RETRY`], longer than a
/// commander restart. The lease deadline still applies on top.
const MAX_LINK_RETRIES: u32 = 120;

/// Bytes per upload message: well under gRPC's 4 MiB message limit, large
/// enough that framing costs nothing.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// Environment variable naming a byte offset the agent flips in every
/// upload it sends: a fault-injection hook for tests of the commander's
/// verification (TLS makes a real in-transit flip impossible to stage).
pub const FAULT_FLIP_UPLOAD_BYTE: &str = "ARK_FAULT_FLIP_UPLOAD_BYTE";

/// Reads [`FAULT_FLIP_UPLOAD_BYTE`].
pub fn fault_flip_upload_byte() -> Option<u64> {
    let offset = std::env::var(FAULT_FLIP_UPLOAD_BYTE).ok()?.parse().ok()?;
    warn!(
        "fault injection: every upload will have byte {offset} flipped ({FAULT_FLIP_UPLOAD_BYTE})"
    );
    Some(offset)
}

/// Hands a fetched body to the commander: records it in the dedupe
/// registry, asks `Have` with the signed manifest, and uploads (resuming
/// where the commander's verified bytes end) unless the archive already
/// holds it. Ok carries the archive path now holding the bytes; the
/// commander has completed the run.
async fn deliver(
    ctx: Arc<JobContext>,
    staged: PathBuf,
    manifest: Manifest,
) -> std::result::Result<String, Stop> {
    let fail = |reason: String| Stop::Fail(failure(reason, true));
    let earlier = ctx
        .registry
        .record(&Harvest {
            blake3: manifest.blake3.clone(),
            size: manifest.size,
            target: manifest.target.clone(),
            url: manifest.url.clone(),
            etag: manifest.etag.clone(),
            last_modified: manifest.last_modified.clone(),
            run_id: manifest.run_id,
            at_ms: crate::unix_ms(),
            landed_path: None,
        })
        .map_err(|e| fail(e.to_string()))?;
    if let Some(earlier) = &earlier {
        info!(
            run = manifest.run_id,
            earlier_run = earlier.run_id,
            landed = earlier.landed_path.as_deref().unwrap_or(""),
            "duplicate: this body was harvested and landed before; asking the commander"
        );
    }
    let (bytes, signature) = manifest
        .sign(&ctx.credentials.key_pem)
        .map_err(|e| fail(e.to_string()))?;
    let lease = LeaseRef {
        run_id: manifest.run_id,
        generation: manifest.generation,
    };
    let mut client = ctx.client.clone();
    let mut failures = 0u32;
    let mut link_failures = 0u32;
    loop {
        let attempt = async {
            let have = client
                .have(HaveRequest {
                    lease: Some(lease),
                    manifest: bytes.clone(),
                    signature: signature.clone(),
                })
                .await
                .map_err(|status| AgentError::rpc("have", status))?
                .into_inner();
            if have.held {
                info!(
                    run = manifest.run_id,
                    path = %have.path,
                    unchanged = have.unchanged,
                    "the archive already holds these bytes: not uploading"
                );
                return Ok(have.path);
            }
            upload(
                &mut client,
                lease,
                &staged,
                &manifest,
                have.resume_from,
                ctx.fault_flip_upload_byte,
            )
            .await
            .map(|landed| landed.path)
        };
        match attempt.await {
            Ok(path) => {
                if let Err(e) = ctx
                    .registry
                    .landed(manifest.run_id, &manifest.blake3, &path)
                {
                    warn!("dedupe registry: {e}");
                }
                return Ok(path);
            }
            Err(e) if e.is_refusal() => return Err(Stop::Abandon(Abandon::Refused(e.to_string()))),
            Err(e) if e.is_link() && link_failures < MAX_LINK_RETRIES => {
                link_failures += 1;
                warn!(run = manifest.run_id, "delivery interrupted, retrying: {e}");
                tokio::time::sleep(COMPLETE_RETRY).await;
            }
            Err(e) => {
                failures += 1;
                warn!(run = manifest.run_id, failures, "upload failed: {e}");
                if e.is_cut() {
                    // Was it the copy on our disk, or the way to the commander?
                    let checked = check_staged(&staged, &manifest).await;
                    if let Err(bad) = checked {
                        return Err(fail(format!(
                            "{e}; the staged copy itself no longer matches its hash ({bad}): it will be fetched again"
                        )));
                    }
                }
                if failures >= MAX_UPLOAD_FAILURES {
                    return Err(fail(format!(
                        "upload failed {failures} times; last: {e}{}",
                        if e.is_cut() {
                            " (the staged copy still verifies here, so the bytes changed between this agent and the commander's disk)"
                        } else {
                            ""
                        }
                    )));
                }
            }
        }
    }
}

/// Re-verifies the staged copy against its own outboard and the manifest's
/// root.
async fn check_staged(staged: &Path, manifest: &Manifest) -> std::result::Result<(), String> {
    let (staged, size, root) = (staged.to_path_buf(), manifest.size, manifest.blake3.clone());
    let checked = tokio::task::spawn_blocking(move || -> std::result::Result<(), String> {
        use std::io::Read;
        let root = blake3::Hash::from_hex(&root).map_err(|e| e.to_string())?;
        let outboard = std::fs::File::open(outboard_path(&staged)).map_err(|e| e.to_string())?;
        let mut verifier = GroupVerifier::new(root, size, std::io::BufReader::new(outboard))
            .map_err(|e| e.to_string())?;
        let mut file = std::fs::File::open(&staged).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        loop {
            let n = file.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            verifier.update(&buf[..n]).map_err(|e| e.to_string())?;
        }
        verifier.finish().map_err(|e| e.to_string())
    })
    .await;
    checked.unwrap_or_else(|e| Err(e.to_string()))
}

/// One upload: the header, the whole outboard, then the data from `offset`.
async fn upload(
    client: &mut AgentSessionClient<Channel>,
    lease: LeaseRef,
    staged: &Path,
    manifest: &Manifest,
    offset: u64,
    flip: Option<u64>,
) -> Result<UploadResponse> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let (tx, rx) = tokio::sync::mpsc::channel::<UploadChunk>(4);
    let header = UploadChunk {
        part: Some(upload_chunk::Part::Header(UploadHeader {
            lease: Some(lease),
            blake3: manifest.blake3.clone(),
            offset,
        })),
    };
    let staged = staged.to_path_buf();
    let reader = tokio::spawn(async move {
        let send = |part| {
            let tx = tx.clone();
            async move { tx.send(UploadChunk { part: Some(part) }).await.is_ok() }
        };
        if !send(header.part.expect("header")).await {
            return Ok(());
        }
        let outboard_at = outboard_path(&staged);
        let mut outboard = tokio::fs::File::open(&outboard_at)
            .await
            .map_err(AgentError::io("reading outboard", &outboard_at))?;
        let mut data = tokio::fs::File::open(&staged)
            .await
            .map_err(AgentError::io("reading staged file", &staged))?;
        data.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(AgentError::io("seeking staged file", &staged))?;
        let mut at = offset;
        for (file, path, is_data) in [
            (&mut outboard, &outboard_at, false),
            (&mut data, &staged, true),
        ] {
            loop {
                let mut buf = vec![0u8; UPLOAD_CHUNK];
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(AgentError::io("reading for upload", path))?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                let part = if is_data {
                    if let Some(flip) = flip.filter(|f| (at..at + n as u64).contains(f)) {
                        buf[(flip - at) as usize] ^= 0x01;
                    }
                    at += n as u64;
                    upload_chunk::Part::Data(buf)
                } else {
                    upload_chunk::Part::Outboard(buf)
                };
                if !send(part).await {
                    return Ok(());
                }
            }
        }
        Ok::<(), AgentError>(())
    });
    let response = client
        .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    if let Ok(Err(e)) = reader.await {
        return Err(e);
    }
    Ok(response
        .map_err(|status| AgentError::rpc("upload", status))?
        .into_inner())
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
/// at most one second of credit, so an idle hour buys no burst. The cap can
/// change while jobs run ([`Throttle::set_rate`]: the operator's `agent set
/// --bandwidth` arrives with a heartbeat).
#[derive(Debug, Clone)]
pub struct Throttle {
    inner: Arc<std::sync::Mutex<Bucket>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(0)
    }
}

#[derive(Debug)]
struct Bucket {
    /// Bytes/s; 0 = uncapped.
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Throttle {
    /// `bytes_per_second` = 0 means uncapped.
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            inner: Arc::new(std::sync::Mutex::new(Bucket {
                rate: bytes_per_second as f64,
                tokens: 0.0,
                last: Instant::now(),
            })),
        }
    }

    /// Changes the cap for every holder (0 = uncapped).
    pub fn set_rate(&self, bytes_per_second: u64) {
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if b.rate != bytes_per_second as f64 {
            b.rate = bytes_per_second as f64;
            b.tokens = b.tokens.min(b.rate);
            b.last = Instant::now();
        }
    }

    /// The current cap in bytes/s (0 = uncapped).
    pub fn rate(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).rate as u64
    }

    /// Accounts for `n` bytes, waiting as long as the cap requires.
    pub async fn take(&self, n: u64) {
        let wait = {
            let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if b.rate <= 0.0 {
                return;
            }
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
        // Lifting the cap while jobs hold the throttle frees them at once;
        // setting one again holds them again.
        throttle.set_rate(0);
        let started = Instant::now();
        tokio::join!(job(throttle.clone()), job(throttle.clone()));
        assert_eq!(throttle.rate(), 0);
        let uncapped = started.elapsed();
        throttle.set_rate(100_000);
        let started = Instant::now();
        job(throttle.clone()).await;
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "100 kB at a new cap of 100 kB/s took only {:?} (uncapped: {uncapped:?})",
            started.elapsed()
        );
    }
}
