//! Self-yield: the agent notices by itself that its transfers fill the
//! household's uplink queue, and backs off before a video call stutters.
//! It owns the probes, the controller's state and the limit it puts on
//! the agent's [`Throttle`]; it does not own the caps (the session sets
//! those) or the fetch (which only registers its transfers here).
//!
//! Design: one [`probe_task`] for the whole agent, idle unless a transfer
//! runs. While one does, it measures the round trip every
//! [`PROBE_EVERY`] with a TCP connect (SYN → SYN-ACK: the answer queues
//! behind the agent's own download) to the configured `yield-reflector`,
//! else to the origin of the oldest running transfer (the address the
//! fetch is connected to, so it was already checked by the destination
//! guard). Each sample goes to the [`controller::Controller`], whose rate
//! becomes the throttle's self-yield limit — the lowest of that, the
//! commander's uplink budget and every cap wins. The commander's word
//! (`agent set NAME --yield off`, the uplink budget) arrives with each
//! heartbeat; the reading goes back in the next one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::fetch::{lower_cap, Limit, Throttle};
use crate::telemetry::ByteCounter;

pub mod controller;

pub use controller::{Controller, Reading, Settings};

/// Time between probes while a transfer runs: fast enough to catch a queue
/// within a few hundred milliseconds, and a TCP handshake ten times a
/// second is nothing beside the transfer it watches.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// Most probes of a fresh path's idle baseline, and the spacing between
/// them: the transfer waits (reads nothing) until its queue has drained.
pub const BASELINE_PROBES: u32 = 20;
pub const BASELINE_EVERY: Duration = Duration::from_millis(50);

/// A probe unanswered this long counts as this long: a SYN lost in a full
/// queue is the loudest signal of all, not a missing sample.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Default `yield-target`: the queuing delay the agent may add. 25 ms is
/// LEDBAT's ceiling for a scavenger flow (RFC 6817 §2.5: at most 100 ms,
/// 25 ms in practice) and under what a video call tolerates before it
/// stutters.
pub const DEFAULT_TARGET: Duration = Duration::from_millis(25);

/// The lowest rate self-yield cuts to: the household floor's 32 KiB/s,
/// which keeps every lease alive.
pub const DEFAULT_FLOOR: u64 = 32 << 10;

/// What `agent.toml` says about self-yield.
#[derive(Debug, Clone, PartialEq)]
pub struct YieldConfig {
    /// The queuing delay the agent may add (`yield-target`).
    pub target: Duration,
    /// `HOST:PORT` probed instead of the origin (`yield-reflector`).
    pub reflector: Option<String>,
    /// The lowest rate it cuts to (bytes/s).
    pub floor: u64,
}

impl Default for YieldConfig {
    fn default() -> Self {
        Self {
            target: DEFAULT_TARGET,
            reflector: None,
            floor: DEFAULT_FLOOR,
        }
    }
}

/// The agent's self-yield: shared by the session (the commander's word),
/// every fetch (its transfers) and the probe task.
#[derive(Debug, Clone)]
pub struct SelfYield {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: YieldConfig,
    /// The agent's throttle, whose self-yield limit this sets.
    throttle: Throttle,
    /// Every byte all transfers received: the delivered rate.
    bytes: ByteCounter,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Off by the operator (`agent set --yield off`); on by default.
    enabled: bool,
    /// The commander's budget for this agent while another on its uplink
    /// backs off (bytes/s, 0 = none).
    budget: u64,
    /// Running transfers: (id, the origin's address), oldest first.
    transfers: Vec<(u64, SocketAddr)>,
    next_id: u64,
    /// The path probed and its controller.
    path: Option<SocketAddr>,
    controller: Controller,
}

impl SelfYield {
    pub fn new(config: YieldConfig, throttle: Throttle, bytes: ByteCounter) -> Self {
        let controller = Controller::new(Settings {
            target: config.target,
            floor: config.floor,
        });
        Self {
            inner: Arc::new(Shared {
                config,
                throttle,
                bytes,
                state: Mutex::new(State {
                    enabled: true,
                    budget: 0,
                    transfers: Vec::new(),
                    next_id: 0,
                    path: None,
                    controller,
                }),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A transfer from `origin` runs until the returned guard drops. On a
    /// path it has no base for yet, it first learns the idle round trip
    /// (see [`SelfYield::baseline`]).
    pub async fn transfer(&self, origin: SocketAddr) -> Transfer {
        if let Some(path) = self.path_for(origin).await {
            if self.on_path(path) {
                self.baseline(path).await;
            }
        }
        let mut state = self.state();
        let id = state.next_id;
        state.next_id += 1;
        state.transfers.push((id, origin));
        Transfer {
            owner: self.clone(),
            id,
        }
    }

    /// The commander's word from a heartbeat: on or off, and the uplink
    /// budget (0 = none).
    pub fn set_commanded(&self, enabled: bool, budget: u64) {
        let changed = {
            let mut state = self.state();
            let changed = (state.enabled, state.budget) != (enabled, budget);
            state.enabled = enabled;
            state.budget = budget;
            changed
        };
        if changed {
            info!(
                enabled,
                uplink_budget = budget,
                "self-yield {}{}",
                if enabled { "on" } else { "off" },
                if budget > 0 {
                    format!("; another agent on this uplink backs off: {budget} bytes/s at most")
                } else {
                    String::new()
                }
            );
            self.apply();
        }
    }

    /// What the next heartbeat reports.
    pub fn telemetry(&self) -> ark_proto::SelfYield {
        let state = self.state();
        let r = if state.enabled && !state.transfers.is_empty() {
            state.controller.reading()
        } else {
            Reading::default()
        };
        ark_proto::SelfYield {
            enabled: state.enabled,
            backing_off: state.enabled && r.backing_off,
            rate_limit: self.inner.throttle.limit(Limit::SelfYield),
            queuing_delay_ms: r.queuing.as_secs_f32() * 1e3,
            base_delay_ms: r.base.as_secs_f32() * 1e3,
            uplink_budget: state.budget,
        }
    }

    /// Sets the throttle's self-yield limit from the state.
    fn apply(&self) {
        let limit = {
            let state = self.state();
            if state.enabled && !state.transfers.is_empty() {
                lower_cap(state.controller.reading().rate, state.budget)
            } else {
                0
            }
        };
        let throttle = &self.inner.throttle;
        if throttle.limit(Limit::SelfYield) != limit {
            debug!(bytes_per_second = limit, "self-yield limit");
            throttle.set_limit(Limit::SelfYield, limit);
        }
    }

    /// Where to probe now: the reflector, else the oldest transfer's origin
    /// (None: nothing to watch).
    async fn path(&self) -> Option<SocketAddr> {
        let origin = self.state().transfers.first()?.1;
        self.path_for(origin).await
    }

    /// The path that watches a transfer from `origin`: the reflector, else
    /// the origin (None: self-yield is off).
    async fn path_for(&self, origin: SocketAddr) -> Option<SocketAddr> {
        if !self.state().enabled {
            return None;
        }
        let Some(reflector) = &self.inner.config.reflector else {
            return Some(origin);
        };
        match tokio::net::lookup_host(reflector.as_str()).await {
            Ok(mut addrs) => addrs.next(),
            Err(e) => {
                warn!(%reflector, "yield-reflector does not resolve ({e}); probing the origin");
                Some(origin)
            }
        }
    }

    /// Makes `path` the one the controller watches (another path, another
    /// base: a fresh controller); true when it has no base yet.
    fn on_path(&self, path: SocketAddr) -> bool {
        let mut state = self.state();
        if state.path != Some(path) {
            state.path = Some(path);
            state.controller = Controller::new(Settings {
                target: self.inner.config.target,
                floor: self.inner.config.floor,
            });
        }
        !state.controller.has_base()
    }

    /// The idle round trip of a fresh path, before its first transfer
    /// reads a byte: probing only once the body streams would take the
    /// queue the transfer's first window already built for the base
    /// (LEDBAT's latecomer problem), and the agent would never see the
    /// queue it adds. The transfer reads nothing meanwhile, so the sender
    /// stops at its window and the queue drains; probes continue until
    /// the round trip stops falling (or [`BASELINE_PROBES`]).
    async fn baseline(&self, path: SocketAddr) {
        let mut lowest: Option<Duration> = None;
        for _ in 0..BASELINE_PROBES {
            let Some(rtt) = probe_rtt(path).await else {
                return;
            };
            self.state().controller.note_idle(Instant::now(), rtt);
            let settled = lowest.is_some_and(|low| rtt + BASELINE_SETTLED >= low);
            lowest = Some(lowest.map_or(rtt, |low| low.min(rtt)));
            if settled {
                break;
            }
            tokio::time::sleep(BASELINE_EVERY).await;
        }
        debug!(%path, base_ms = lowest.unwrap_or_default().as_secs_f64() * 1e3, "self-yield baseline");
    }

    /// One probe of `path` and its sample; false when the path changed or
    /// went idle meanwhile.
    async fn probe(&self, path: SocketAddr) -> bool {
        let rtt = probe_rtt(path).await;
        let ceiling = self.inner.throttle.limit(Limit::Cap);
        let bytes = self.inner.bytes.total();
        {
            let mut state = self.state();
            if state.transfers.is_empty() || !state.enabled {
                return false;
            }
            if state.path != Some(path) {
                return false;
            }
            let Some(rtt) = rtt else { return true };
            let before = state.controller.reading();
            let r = state.controller.sample(Instant::now(), rtt, bytes, ceiling);
            if r.rate != before.rate && (r.rate == 0 || before.rate == 0) {
                info!(
                    %path,
                    queuing_ms = r.queuing.as_millis() as u64,
                    base_ms = r.base.as_millis() as u64,
                    bytes_per_second = r.rate,
                    "self-yield {}",
                    if r.rate > 0 { "backs off: the uplink queues" } else { "lifted: the queue drained" }
                );
            }
        }
        self.apply();
        true
    }

    /// No transfer, or off: the limit goes.
    fn idle(&self) {
        self.state().controller.idle();
        self.apply();
    }
}

/// Holds a transfer open in [`SelfYield`]; dropping it ends the transfer.
#[derive(Debug)]
pub struct Transfer {
    owner: SelfYield,
    id: u64,
}

impl Drop for Transfer {
    fn drop(&mut self) {
        let idle = {
            let mut state = self.owner.state();
            state.transfers.retain(|(id, _)| *id != self.id);
            state.transfers.is_empty()
        };
        if idle {
            self.owner.idle();
        }
    }
}

/// Two baseline probes this close (or rising) mean the queue has drained.
const BASELINE_SETTLED: Duration = Duration::from_millis(1);

/// The round trip to `path`: the time a TCP connect takes. A refusal
/// (RST) is a round trip too; a timeout counts as [`PROBE_TIMEOUT`]; a
/// path that cannot be reached at all gives no sample.
async fn probe_rtt(path: SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(path)).await {
        Err(_) => Some(PROBE_TIMEOUT),
        Ok(Ok(_)) => Some(started.elapsed()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(started.elapsed()),
        Ok(Err(e)) => {
            debug!(%path, "self-yield probe: {e}");
            None
        }
    }
}

/// The agent's probe loop: samples while a transfer runs, idles (and
/// lifts the limit) otherwise. Runs until aborted.
pub async fn probe_task(self_yield: SelfYield) {
    let mut ticks = tokio::time::interval(PROBE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watching = false;
    loop {
        ticks.tick().await;
        let Some(path) = self_yield.path().await else {
            if watching {
                self_yield.idle();
                watching = false;
            }
            continue;
        };
        self_yield.on_path(path);
        watching = self_yield.probe(path).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limit_lives_while_transfers_run_and_the_commander_can_turn_it_off() {
        let throttle = Throttle::new(0);
        let sy = SelfYield::new(
            YieldConfig::default(),
            throttle.clone(),
            ByteCounter::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let origin = listener.local_addr().expect("addr");
        let transfer = sy.transfer(origin).await;
        assert!(sy.state().controller.has_base(), "the baseline came first");
        assert_eq!(sy.path().await, Some(origin));
        // Force a limit as the controller would set it.
        {
            let mut state = sy.state();
            state.controller = Controller::new(Settings {
                target: Duration::from_millis(1),
                floor: 1000,
            });
            let now = Instant::now();
            state.controller.sample(now, Duration::from_millis(1), 0, 0);
            state.controller.sample(
                now + Duration::from_millis(300),
                Duration::from_millis(1),
                300_000,
                0,
            );
            for i in 1..=controller::CURRENT_SAMPLES as u64 {
                state.controller.sample(
                    now + Duration::from_millis(300 + 100 * i),
                    Duration::from_millis(50),
                    300_000 + 100_000 * i,
                    0,
                );
            }
            assert!(state.controller.reading().rate > 0);
        }
        sy.apply();
        let limited = throttle.rate();
        assert!(limited > 0);
        assert!(sy.telemetry().backing_off);
        sy.set_commanded(true, 5000);
        assert_eq!(throttle.rate(), 5000, "the uplink budget is lower");
        sy.set_commanded(false, 0);
        assert_eq!(throttle.rate(), 0, "--yield off lifts it");
        assert_eq!(sy.path().await, None, "off: nothing probed");
        assert!(!sy.telemetry().backing_off);
        sy.set_commanded(true, 0);
        assert_eq!(throttle.rate(), limited);
        drop(transfer);
        assert_eq!(throttle.rate(), 0, "no transfer, no limit");
        assert_eq!(sy.path().await, None);
    }

    #[tokio::test]
    async fn a_probe_measures_a_connect_and_a_refusal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = listener.local_addr().expect("addr");
        assert!(probe_rtt(open).await.is_some_and(|d| d < PROBE_TIMEOUT));
        drop(listener);
        assert!(
            probe_rtt(open).await.is_some_and(|d| d < PROBE_TIMEOUT),
            "a refused connect is a round trip"
        );
    }
}
