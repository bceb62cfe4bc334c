//! The agent's session with the commander: the long-lived loop behind
//! `ark-agent run`.
//!
//! Design: one loop, one channel. Each turn it (re-)registers if needed,
//! sends a heartbeat (telemetry, free slots, the leases it holds) and applies
//! what comes back: pause state, leases to drop, new leases to start. Job
//! tasks talk to the commander on their own (progress, completion), so a
//! job keeps going while the heartbeat loop is reconnecting. When the
//! commander is away the loop backs off exponentially up to
//! `max-reconnect-backoff`, and registers again once it answers.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ark_proto::agent_session_client::AgentSessionClient;
use ark_proto::{command, HeartbeatRequest, RegisterRequest};
use tracing::{debug, info, warn};

use crate::config::AgentConfig;
use crate::fetch::{lower_cap, Limit};
use crate::identity::Identity;
use crate::jobs::{self, HeldLease, JobContext, JobHandle};
use crate::self_yield::SelfYield;
use crate::status::{AgentStatus, JobStatus};
use crate::telemetry::{ByteCounter, Sampler};
use crate::{link, AgentError, Result};

/// Heartbeat interval until the commander tells us its own.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// First pause after a failed heartbeat; doubles up to the configured cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Exponential backoff between reconnect attempts.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self {
            next: FIRST_BACKOFF,
            max,
        }
    }
    fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }
    fn step(&mut self) -> Duration {
        let now = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        now
    }
}

/// Runs the agent in `data` until `shutdown` resolves.
///
/// On shutdown, running jobs are stopped but their lease files stay, so the
/// next start reports on them and the commander decides: resume or drop.
pub async fn run(
    data: PathBuf,
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let (identity, commander, mut client, mut sampler, mut ctx) = connect(&data, &config)?;
    let mut jobs: HashMap<i64, JobHandle> = HashMap::new();
    let recovered = HeldLease::load_all(&data);
    let mut status = AgentStatus {
        name: identity.name.clone(),
        commander: commander.clone(),
        pid: std::process::id(),
        link: "connecting".into(),
        ..AgentStatus::default()
    };
    info!(agent = %identity.name, %commander, recovered = recovered.len(), "agent session starting");

    let mut interval = DEFAULT_HEARTBEAT;
    let mut registered = false;
    let mut backoff = Backoff::new(config.max_reconnect_backoff);
    let mut ctx_arc = Arc::new(ctx.clone());
    for held in recovered {
        jobs.insert(held.run_id, jobs::spawn(ctx_arc.clone(), held, true)?);
    }
    // Woken by the commander's Watch stream when a run is due for us.
    let wake = Arc::new(tokio::sync::Notify::new());
    let watch_unsupported = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut watcher: Option<tokio::task::JoinHandle<()>> = None;
    let probes = tokio::spawn(crate::self_yield::probe_task(ctx.self_yield.clone()));
    tokio::pin!(shutdown);
    loop {
        let before = jobs.len();
        jobs.retain(|_, job| !job.is_finished());
        status.completed += (before - jobs.len()) as u64;

        let reading = ctx.self_yield.telemetry();
        let wait = match turn(
            &mut client,
            &config,
            &mut sampler,
            reading,
            (&jobs, &ctx.staging),
            &mut registered,
        )
        .await
        {
            Ok((register_interval, response)) => {
                backoff.reset();
                if let Some(every) = register_interval {
                    interval = every;
                    ctx.progress_every = every;
                    ctx_arc = Arc::new(ctx.clone());
                }
                if response.heartbeat_interval_ms > 0 {
                    interval = Duration::from_millis(response.heartbeat_interval_ms);
                }
                apply_cap(
                    &ctx.throttle,
                    config.bandwidth_cap,
                    response.agent_bandwidth_cap,
                );
                ctx.self_yield
                    .set_commanded(!response.self_yield_off, response.uplink_budget);
                status.connected();
                apply_commands(response.commands, &jobs, &mut status);
                jobs::kept::drop_kept(&ctx.staging, &jobs, &response.drop_kept).await;
                start_jobs(response.leases, &mut jobs, &ctx_arc);
                let watching = watcher.as_ref().is_some_and(|w| !w.is_finished());
                if !watching && !watch_unsupported.load(Ordering::Relaxed) {
                    let task = watch(client.clone(), wake.clone(), watch_unsupported.clone());
                    watcher = Some(tokio::spawn(task));
                }
                interval
            }
            Err(e) => {
                registered = false;
                status.link = "reconnecting".into();
                status.last_error = e.to_string();
                let wait = backoff.step();
                warn!("commander link: {e}; retrying in {wait:?}");
                wait
            }
        };
        status.jobs = job_statuses(&jobs);
        if let Err(e) = status.save(&data) {
            warn!("cannot write status: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            _ = &mut shutdown => break,
        }
    }
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    info!("agent shutting down; held leases stay on disk for the next start");
    for job in jobs.values() {
        job.abort();
    }
    probes.abort();
    status.link = "stopped".into();
    let _ = status.save(&data);
    Ok(())
}

/// What a session starts from: the identity, the commander's address, the
/// mTLS client, the telemetry sampler and the context every job gets.
fn connect(
    data: &std::path::Path,
    config: &AgentConfig,
) -> Result<(
    Identity,
    String,
    AgentSessionClient<tonic::transport::Channel>,
    Sampler,
    JobContext,
)> {
    link::install_crypto_provider();
    let identity = Identity::load(data)?;
    let commander = if config.commander.is_empty() {
        identity.commander.clone()
    } else {
        config.commander.clone()
    };
    let staging = config.staging_dir(data);
    std::fs::create_dir_all(&staging).map_err(AgentError::io("creating staging dir", &staging))?;
    let tls = link::mtls_client_config(&identity.credentials)?;
    let client = AgentSessionClient::new(link::channel(&commander, tls.clone())?);
    let bulk = AgentSessionClient::new(link::bulk_channel(&commander, tls)?);
    let bytes = ByteCounter::default();
    let sysfs = (!config.sysfs.as_os_str().is_empty()).then(|| config.sysfs.clone());
    let sampler = Sampler::new(&staging, bytes.clone()).with_sysfs(sysfs);
    let ctx = job_context(
        data,
        config,
        &identity,
        &commander,
        staging,
        (client.clone(), bulk),
        bytes.clone(),
    )?;
    Ok((identity, commander, client, sampler, ctx))
}

/// What every job of this session gets.
fn job_context(
    data: &std::path::Path,
    config: &AgentConfig,
    identity: &Identity,
    commander: &str,
    staging: PathBuf,
    (client, bulk): (
        AgentSessionClient<tonic::transport::Channel>,
        AgentSessionClient<tonic::transport::Channel>,
    ),
    bytes: ByteCounter,
) -> Result<JobContext> {
    let http =
        crate::fetch::http_client().map_err(|e| AgentError::tls(format!("HTTP client: {e}")))?;
    let throttle = jobs::Throttle::new(config.bandwidth_cap);
    let self_yield = SelfYield::new(config.self_yield(), throttle.clone(), bytes.clone());
    Ok(JobContext {
        client,
        bulk,
        http,
        data: data.to_path_buf(),
        staging,
        bytes,
        throttle,
        self_yield,
        limits: config.limits(),
        progress_every: DEFAULT_HEARTBEAT,
        registry: Arc::new(crate::registry::Registry::open_when_room(data)?),
        agent_name: identity.name.clone(),
        credentials: identity.credentials.clone(),
        fault_flip_upload_byte: jobs::fault_flip_upload_byte(),
        commander_host: reqwest::Url::parse(commander)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string)),
    })
}

/// Applies the lower of the operator's cap and our own to every job.
fn apply_cap(throttle: &jobs::Throttle, ours: u64, operators: u64) {
    let cap = lower_cap(ours, operators);
    if throttle.limit(Limit::Cap) != cap {
        info!(
            bytes_per_second = cap,
            "download cap now {cap} bytes/s (0 = none)"
        );
        throttle.set_rate(cap);
    }
}

/// Carries out what the commander asked in a heartbeat's answer.
fn apply_commands(
    commands: Vec<ark_proto::Command>,
    jobs: &HashMap<i64, JobHandle>,
    status: &mut AgentStatus,
) {
    for cmd in commands.into_iter().filter_map(|c| c.command) {
        match cmd {
            command::Command::Pause(p) => {
                if !status.paused {
                    info!(scope = %p.scope, "paused by the commander: taking no new jobs");
                }
                status.paused = true;
            }
            command::Command::Resume(_) => {
                if status.paused {
                    info!("resumed by the commander");
                }
                status.paused = false;
            }
            command::Command::DropLease(lease) => {
                if let Some(job) = jobs.get(&lease.run_id) {
                    if job.lease.generation == lease.generation {
                        job.drop_lease();
                    }
                }
            }
        }
    }
}

/// Starts a job for every new lease.
fn start_jobs(
    leases: Vec<ark_proto::Lease>,
    jobs: &mut HashMap<i64, JobHandle>,
    ctx: &Arc<JobContext>,
) {
    for lease in leases {
        let held = HeldLease::from_lease(&lease);
        if jobs.contains_key(&held.run_id) {
            continue;
        }
        // Its size on the wire: a git job's refs go by digest (issue 14).
        let lease_bytes = prost::Message::encoded_len(&lease);
        info!(run = lease.run_id, kind = %held.kind, lease_bytes, "lease received");
        match jobs::spawn(ctx.clone(), held, false) {
            Ok(job) => {
                jobs.insert(lease.run_id, job);
            }
            Err(e) => warn!(run = lease.run_id, "cannot start job: {e}"),
        }
    }
}

/// The running jobs, for `ark-agent status`.
fn job_statuses(jobs: &HashMap<i64, JobHandle>) -> Vec<JobStatus> {
    jobs.values()
        .map(|job| JobStatus {
            run_id: job.lease.run_id,
            generation: job.lease.generation,
            target: job.lease.target.clone(),
            url: job.lease.url.clone(),
            bytes_done: job.progress.done.load(Ordering::Relaxed),
        })
        .collect()
}

/// Holds the commander's `Watch` stream open: each wake ends the loop's
/// wait, so a run that is due for us is leased now, not at the next
/// heartbeat. Returns when the stream ends (the next successful turn opens
/// another); a commander without `Watch` (UNIMPLEMENTED) is only polled.
async fn watch(
    mut client: AgentSessionClient<tonic::transport::Channel>,
    wake: Arc<tokio::sync::Notify>,
    unsupported: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut wakes = match client.watch(ark_proto::WatchRequest {}).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            info!("the commander sends no wakes (an older version): polling every heartbeat");
            unsupported.store(true, Ordering::Relaxed);
            return;
        }
        Err(status) => {
            debug!("watch stream refused: {status}");
            return;
        }
    };
    loop {
        match wakes.message().await {
            Ok(Some(woken)) => {
                debug!(run = woken.run_id, "woken for a due run");
                wake.notify_one();
            }
            Ok(None) => return,
            Err(status) => {
                debug!("watch stream ended: {status}");
                return;
            }
        }
    }
}

/// One turn of the loop: register when needed, then heartbeat.
async fn turn(
    client: &mut AgentSessionClient<tonic::transport::Channel>,
    config: &AgentConfig,
    sampler: &mut Sampler,
    self_yield: ark_proto::SelfYield,
    (jobs, staging): (&HashMap<i64, JobHandle>, &std::path::Path),
    registered: &mut bool,
) -> Result<(Option<Duration>, ark_proto::HeartbeatResponse)> {
    let mut register_interval = None;
    if !*registered {
        let capabilities = ark_proto::Capabilities {
            device_class: config.device_class.clone(),
            uplink: config.uplink.clone(),
            ..sampler.capabilities(&config.kinds, config.max_jobs, config.bandwidth_cap)
        };
        let response = client
            .register(RegisterRequest {
                capabilities: Some(capabilities),
            })
            .await
            .map_err(|s| AgentError::rpc("registration", s))?
            .into_inner();
        info!(name = %response.agent_name, "registered with the commander");
        *registered = true;
        if response.heartbeat_interval_ms > 0 {
            register_interval = Some(Duration::from_millis(response.heartbeat_interval_ms));
        }
    }
    let running = jobs.len() as u32;
    let request = HeartbeatRequest {
        telemetry: Some(ark_proto::Telemetry {
            self_yield: Some(self_yield),
            ..sampler.sample()
        }),
        free_slots: config.max_jobs.saturating_sub(running),
        active: jobs.values().map(|job| job.lease.lease_ref()).collect(),
        kept: jobs::kept::kept(staging, jobs).into_keys().collect(),
    };
    let response = client
        .heartbeat(request)
        .await
        .map_err(|s| AgentError::rpc("heartbeat", s))?
        .into_inner();
    Ok((register_interval, response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1));
        let steps: Vec<_> = (0..5).map(|_| backoff.step()).collect();
        assert_eq!(
            steps,
            [250, 500, 1000, 1000, 1000]
                .map(Duration::from_millis)
                .to_vec()
        );
        backoff.reset();
        assert_eq!(backoff.step(), Duration::from_millis(250));
    }
}
