//! Running the commander: open state and PKI in the data dir, start the
//! background sweep and the dashboard ([`crate::web`], on its own address),
//! and serve the three gRPC services on an already-bound listener until
//! `shutdown` resolves. Taking the listener (rather than an
//! address) lets every test start a real commander on 127.0.0.1:0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ark_core::unix_ms;
use ark_proto::admin_server::AdminServer;
use ark_proto::agent_session_server::AgentSessionServer;
use ark_proto::enrollment_server::EnrollmentServer;
use tokio::net::TcpListener;

use crate::archive::Archive;
use crate::config::CommanderConfig;
use crate::pki::{server_sans, Pki};
use crate::scheduler::{placement, Scheduler};
use crate::service::Services;
use crate::state::Store;
use crate::{tls, CommanderError, Result};

/// File in the data dir holding the URL the local CLI should use.
pub const ENDPOINT_FILE: &str = "endpoint";

/// Name of the state database in the data dir.
pub const STATE_FILE: &str = "state.sqlite";

/// Longest pause between two sweeps (lease expiry, due runs): expiry is
/// noticed within this much of the deadline even when no agent heartbeats.
const SWEEP_EVERY_MAX: Duration = Duration::from_secs(1);

/// How often the WAL is checkpointed (off the writers' path): often enough
/// that the WAL stays a few MiB even with hundreds of agents heartbeating.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);

/// How often a sweep failure that repeats is logged again.
const SWEEP_ERROR_EVERY: Duration = Duration::from_secs(30);

/// HTTP/2 ping interval and answer timeout on agent connections: a
/// connection that answers no ping within it is closed with its streams.
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(10);

/// The largest HTTP/2 frame an agent may send (HTTP/2's default is 16
/// KiB): one upload piece (256 KiB) travels as one DATA frame instead of
/// sixteen, and both ends handle a sixteenth of the frames. On loopback
/// the upload leg of 2 GiB fell from 2.93–3.30 s to 2.48–2.83 s with it
/// (bench/RESULTS.md §15). A frame is read whole before it is handled, so
/// this is also what one connection may make the commander buffer.
const MAX_FRAME: u32 = 256 * 1024;

pub use crate::net::{bind, local_authority, local_url, LISTEN_BACKLOG};

/// Reads the URL a running commander recorded in its data dir.
pub fn endpoint(data: &Path) -> Result<String> {
    crate::net::read_endpoint(&data.join(ENDPOINT_FILE), |path| {
        format!(
            "{} not found: no commander has started with this data dir; start one with \
             `ark-commander --data {} serve`, or point at a running one with --commander URL",
            path.display(),
            data.display()
        )
    })
}

/// How long [`running`] waits for the recorded endpoint to accept.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// True when a commander is serving from `data`: the endpoint it recorded
/// accepts a connection. A commander that stopped (or was killed) leaves
/// its endpoint file behind, so the file alone says nothing.
pub fn running(data: &Path) -> bool {
    let Ok(url) = endpoint(data) else {
        return false;
    };
    let authority = url.trim_start_matches("https://").trim_end_matches('/');
    let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(authority) else {
        return false;
    };
    addrs
        .into_iter()
        .any(|addr| std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok())
}

/// Finishes or rolls back every half-landed version (see
/// [`Archive::recover`]); a finished one completes its run.
pub fn recover(scheduler: &Scheduler, archive: &Archive) -> Result<(usize, usize)> {
    let now = unix_ms();
    let derive =
        |v: &crate::archive::Version| crate::upload::derive(archive, &scheduler.store, v, now);
    archive.recover(&scheduler.store, now, derive, |tx, v, derived| {
        crate::upload::record_derived(tx, v, derived, now)?;
        let (etag, last_modified): (String, String) = tx.query_row(
            "SELECT etag, last_modified FROM versions WHERE id = ?1",
            [v.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        scheduler.finish_run(
            tx,
            v.run_id,
            &v.agent,
            crate::state::run_state::SUCCEEDED,
            v.size,
            &v.blake3,
            Some((&etag, &last_modified)),
            &format!("landed {} (finished after a restart)", v.path),
            unix_ms(),
        )
    })
}

/// The endpoints an agent must never fetch: every address the commander
/// listens on (`*:port` when on every interface), and its certificate's
/// extra names on those ports.
fn own_endpoints(listening: impl Iterator<Item = SocketAddr>, sans: &[String]) -> Vec<String> {
    let mut endpoints = Vec::new();
    for addr in listening {
        let port = addr.port();
        if addr.ip().is_unspecified() {
            endpoints.push(format!("*:{port}"));
        } else {
            endpoints.push(local_authority(addr));
        }
        endpoints.extend(sans.iter().map(|san| format!("{san}:{port}")));
    }
    endpoints
}

/// Serves the commander from `data` on `listener` until `shutdown`.
pub async fn run(
    data: &Path,
    config: CommanderConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    ark_link::tls::install_crypto_provider();
    config
        .validate()
        .map_err(|message| CommanderError::Config {
            path: data.join(crate::config::CONFIG_FILE),
            message,
        })?;
    std::fs::create_dir_all(data).map_err(CommanderError::io("creating data dir", data))?;
    let addr = listener
        .local_addr()
        .map_err(CommanderError::io("reading listen address of", data))?;
    let pki = Pki::load_or_create(data, &server_sans(&addr, &config.san))?;
    let tls_config = tls::server_config(&pki)?;
    let store = Arc::new(Store::open(&data.join(STATE_FILE))?);
    let scheduler = Scheduler::new(store, config.clone()).with_archive(config.archive_dir(data));
    let extended = scheduler.restart_grace(unix_ms())?;
    let archive = Archive::open(&config, data)?;
    match recover(&scheduler, &archive) {
        Ok((finished, rolled_back)) if finished + rolled_back > 0 => {
            tracing::warn!(finished, rolled_back, "recovered half-landed versions");
        }
        Ok(_) => {}
        // The NAS is not up yet: serve anyway, landings wait for the
        // recovery the sweep retries.
        Err(CommanderError::StoreUnavailable(why)) => {
            tracing::error!("recovery waits for the archive's store (landings are deferred until it answers): {why}");
            archive.set_recovery_pending(Some(why));
        }
        Err(e) => return Err(e),
    }
    let replica = crate::replica::start(&config, data)?;
    // Quorum groups caught landing are settled again by the first sweep.
    crate::upload::quorum::reopen_landing(&scheduler.store)?;
    let web = crate::web::start(data, &config, &scheduler).await?;
    let listening = std::iter::once(addr).chain(web.as_ref().map(|w| w.addr));
    let scheduler = scheduler.with_own_endpoints(own_endpoints(listening, &config.san));
    let url = local_url(addr);
    ark_core::write_atomic(&data.join(ENDPOINT_FILE), url.as_bytes(), 0o644)
        .map_err(CommanderError::io("writing", data.join(ENDPOINT_FILE)))?;
    tracing::info!(%url, extended, ca = %&pki.ca_fingerprint[..16], "commander listening");

    let sweeper = scheduler.clone();
    let reclaimer = archive.clone();
    let every = config.heartbeat.min(SWEEP_EVERY_MAX);
    let sweep_task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        let mut last_checkpoint = std::time::Instant::now();
        // A failure that repeats (a full disk) is logged when it starts,
        // again each [`SWEEP_ERROR_EVERY`] while it lasts, and when it ends.
        let mut failing: Option<(String, std::time::Instant, u64)> = None;
        loop {
            ticker.tick().await;
            let s = sweeper.clone();
            let a = reclaimer.clone();
            let checkpoint = last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
            if checkpoint {
                last_checkpoint = std::time::Instant::now();
            }
            let work = move || {
                if a.recovery_pending().is_some() {
                    match recover(&s, &a) {
                        Ok(_) => {
                            tracing::info!(
                                "the archive's store answers: recovered, landings resume"
                            );
                            a.set_recovery_pending(None);
                        }
                        Err(CommanderError::StoreUnavailable(why)) => {
                            a.set_recovery_pending(Some(why));
                        }
                        Err(e) => return Err(e),
                    }
                }
                s.sweep(unix_ms())?;
                crate::upload::quorum::settle_all(&s, &a)?;
                a.reclaim_quarantine(&s.store)?;
                a.finish_undoing(&s.store)?;
                if checkpoint {
                    s.store.checkpoint()?;
                }
                Ok::<_, CommanderError>(())
            };
            let failed = match tokio::task::spawn_blocking(work).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("sweep failed: {e}")),
                Err(e) => Some(format!("sweep task failed: {e}")),
            };
            match (failed, failing.as_mut()) {
                (None, None) => {}
                (None, Some((_, _, times))) => {
                    tracing::info!("sweep works again after {times} failed rounds");
                    failing = None;
                }
                (Some(error), Some((last, logged, times))) if *last == error => {
                    *times += 1;
                    if logged.elapsed() >= SWEEP_ERROR_EVERY {
                        tracing::error!("{error} (still, {times} rounds)");
                        *logged = std::time::Instant::now();
                    }
                }
                (Some(error), _) => {
                    tracing::error!("{error}");
                    failing = Some((error, std::time::Instant::now(), 1));
                }
            }
        }
    });
    let placer = scheduler.clone();
    let snapshot_task = tokio::spawn(async move {
        // Placement's view of the swarm, read beside the heartbeats.
        let every = Duration::from_millis(placement::SNAPSHOT_MS as u64 / 2);
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticker.tick().await;
            let s = placer.clone();
            match tokio::task::spawn_blocking(move || s.refresh_swarm(unix_ms())).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("reading the swarm for placement failed: {e}"),
                Err(e) => tracing::error!("swarm snapshot task failed: {e}"),
            }
        }
    });
    let waker = tokio::spawn(crate::scheduler::wake::wake_task(scheduler.clone(), every));
    let resolver = tokio::spawn(crate::sources::resolve_task(scheduler.clone(), every));
    let household = tokio::spawn(crate::household::watch_task(
        scheduler.clone(),
        config.pause_when.clone(),
        config.pause_check,
    ));
    let sampler = tokio::spawn(crate::history::sample_task(
        scheduler.store.clone(),
        config.clone(),
    ));
    let services = Services::new(scheduler, archive, pki, url);
    // A stream whose agent vanished behind a partition is reaped by the
    // keepalive (its run's upload is then free to resume), not by TCP's
    // retransmission timeout a quarter of an hour later.
    let served = tonic::transport::Server::builder()
        .max_frame_size(Some(MAX_FRAME))
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE))
        .add_service(EnrollmentServer::new(services.clone()))
        .add_service(AgentSessionServer::new(services.clone()))
        .add_service(AdminServer::new(services))
        .serve_with_incoming_shutdown(tls::incoming(listener, tls_config), shutdown)
        .await;
    sweep_task.abort();
    snapshot_task.abort();
    waker.abort();
    resolver.abort();
    household.abort();
    sampler.abort();
    if let Some(replica) = replica {
        replica.abort();
    }
    if let Some(web) = web {
        web.stop().await;
    }
    served.map_err(|e| CommanderError::Tls(format!("gRPC server: {e}")))
}

/// A commander running in this process (tests, the demo, benchmarks).
#[derive(Debug)]
pub struct Handle {
    pub addr: SocketAddr,
    pub url: String,
    pub data: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Handle {
    /// Stops the commander and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| CommanderError::Tls(format!("commander task: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a commander on `listen` in a background task and waits until its
/// data dir is ready for clients.
pub async fn spawn(data: &Path, config: CommanderConfig, listen: &str) -> Result<Handle> {
    let listener = bind(listen).await?;
    let addr = listener
        .local_addr()
        .map_err(CommanderError::io("binding", listen))?;
    let endpoint = data.join(ENDPOINT_FILE);
    let _ = std::fs::remove_file(&endpoint);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let owned = data.to_path_buf();
    let task = tokio::spawn(async move {
        run(&owned, config, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    while !endpoint.exists() {
        if task.is_finished() {
            return match task.await {
                Ok(Err(e)) => Err(e),
                _ => Err(CommanderError::Tls(
                    "commander stopped during start-up".into(),
                )),
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Handle {
        addr,
        url: local_url(addr),
        data: data.to_path_buf(),
        stop: Some(stop),
        task: Some(task),
    })
}
