//! `heartbeat-load`: how fast does the commander answer heartbeats when a
//! whole swarm is talking to it?
//!
//! Starts a real commander in this process (its own tokio runtime, a fresh
//! temp data dir, loopback only), enrols N agents through the real enrolment
//! path (admin token, CSR, pinned TLS), gives each agent its own mutual-TLS
//! connection, registers it, then lets all N heartbeat concurrently every
//! INTERVAL for SECONDS, each agent's first beat spread evenly over one
//! interval (real agents start at different times). Every call's latency is
//! recorded on the client side and summarised at the end; the last line is
//! machine-readable (`RESULT key=value ...`).
//!
//! The load generator (the simulated agents) runs on a second runtime in the
//! same process, so on a small machine it competes with the commander for
//! CPU: the figures are an upper bound on what real, separate agents would
//! see over loopback. The `sched_lag_max_ms` figure tells how late the
//! generator itself fired its ticks; when it is large, the generator (not
//! the commander) was the bottleneck.
//!
//! ```text
//! heartbeat-load [--agents 200] [--seconds 30] [--interval-ms 5000]
//!                [--enroll-concurrency 8]
//! ```
//!
//! Bounded: N enrolments (overall time limit), then SECONDS of heartbeats,
//! every RPC capped by the agent's own 10 s timeout; then it stops by itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ark_agent::enroll::EnrollToken;
use ark_agent::identity::Identity;
use ark_commander::config::CommanderConfig;
use ark_proto::agent_session_client::AgentSessionClient;
use ark_proto::{
    Capabilities, CreateEnrollTokenRequest, HeartbeatRequest, RegisterRequest, StatusRequest,
    Telemetry,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// Upper bound on the whole set-up phase (enrolment and registration).
const SETUP_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Args {
    agents: usize,
    seconds: u64,
    interval: Duration,
    enroll_concurrency: usize,
    /// Runs queued before the load starts (the grant's scan and placement
    /// under a long queue).
    queued: u64,
    /// Free slots every agent reports (0: the grant returns at once).
    free_slots: u32,
    /// Every agent holds a `Watch` stream open, as real agents do.
    watch: bool,
}

const USAGE: &str = "usage: heartbeat-load [--agents N (200)] [--seconds S (30)] \
[--interval-ms MS (5000, the production default)] [--enroll-concurrency C (8)] \
[--queued R (0)] [--free-slots K (0)] [--watch]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        agents: 200,
        seconds: 30,
        interval: Duration::from_millis(5000),
        enroll_concurrency: 8,
        queued: 0,
        free_slots: 0,
        watch: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--watch" {
            args.watch = true;
            continue;
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.clone(), None),
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))?,
        };
        let number = |v: &str| -> anyhow::Result<u64> {
            v.parse::<u64>()
                .with_context(|| format!("{name}: {v:?} is not a whole number\n{USAGE}"))
        };
        match name.as_str() {
            "--agents" => args.agents = number(&value)? as usize,
            "--seconds" => args.seconds = number(&value)?,
            "--interval-ms" => args.interval = Duration::from_millis(number(&value)?),
            "--enroll-concurrency" => args.enroll_concurrency = number(&value)? as usize,
            "--queued" => args.queued = number(&value)?,
            "--free-slots" => args.free_slots = number(&value)? as u32,
            other => bail!("unknown flag {other:?}\n{USAGE}"),
        }
    }
    if args.agents == 0 || args.agents > 10_000 {
        bail!("--agents must be 1..=10000");
    }
    if args.seconds == 0 || args.seconds > 3600 {
        bail!("--seconds must be 1..=3600");
    }
    if args.interval < Duration::from_millis(10) {
        bail!("--interval-ms must be at least 10");
    }
    args.enroll_concurrency = args.enroll_concurrency.clamp(1, 64);
    Ok(args)
}

/// Queues `n` runs of a file target straight into the commander's state
/// (one transaction), as an account of many repositories or a feed of many
/// enclosures would.
fn queue_runs(commander_dir: &std::path::Path, n: u64) -> anyhow::Result<()> {
    let store = ark_commander::state::Store::open(&commander_dir.join("state.sqlite"))?;
    let now = ark_core::unix_ms();
    store.tx(|tx| {
        let target = ark_proto::AddTargetRequest {
            kind: "file".into(),
            url: "http://127.0.0.1:9/queued.bin".into(),
            name: "queued".into(),
            ..Default::default()
        };
        ark_commander::state::add_target(tx, &target, now)?;
        tx.execute("UPDATE targets SET next_due = NULL WHERE name = 'queued'", [])?;
        let mut insert = tx.prepare(
            "INSERT INTO runs (target, kind, url, state, not_before, created_at) VALUES ('queued', 'file', ?1, 'queued', ?2, ?2)",
        )?;
        for i in 0..n {
            insert.execute(rusqlite::params![format!("http://127.0.0.1:9/queued-{i}.bin"), now])?;
        }
        Ok(())
    })?;
    println!("queued {n} runs before the load");
    Ok(())
}

/// One simulated agent after set-up.
struct SimAgent {
    name: String,
    client: AgentSessionClient<Channel>,
}

/// What one agent's heartbeat loop measured.
#[derive(Default)]
struct AgentLog {
    latencies: Vec<Duration>,
    /// (seconds since the measured phase began, latency) of every call.
    timeline: Vec<(f64, Duration)>,
    errors: Vec<String>,
    max_sched_lag: Duration,
}

/// Latency summary in milliseconds.
struct Summary {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

fn summarise(latencies: &mut [Duration]) -> Option<Summary> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let n = latencies.len();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // Nearest-rank percentile.
    let pct = |p: f64| {
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        ms(latencies[rank.clamp(1, n) - 1])
    };
    let total: Duration = latencies.iter().sum();
    Some(Summary {
        n,
        p50: pct(50.0),
        p90: pct(90.0),
        p99: pct(99.0),
        max: ms(latencies[n - 1]),
        mean: ms(total) / n as f64,
    })
}

/// VmRSS and VmHWM of this process, in KiB.
/// CPU seconds this process (the commander and the load generator) has
/// used, user and system, from /proc/self/stat.
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command's ")" start at field 3 (state).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15: indices 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

fn own_memory_kib() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// TcpExt ListenOverflows from /proc/net/netstat: SYNs dropped because a
/// listener's accept queue was full (each costs the client a 1 s SYN
/// retransmit). Counted for the whole network namespace, so other programs
/// on the host add to it too.
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (keys, values) = (lines.next()?, lines.next()?);
    let index = keys
        .split_whitespace()
        .position(|k| k == "ListenOverflows")?;
    values.split_whitespace().nth(index)?.parse().ok()
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    ark_agent::link::install_crypto_provider();

    let work = tempfile::Builder::new()
        .prefix("ark-heartbeat-load-")
        .tempdir()?;
    let commander_dir = work.path().join("commander");
    let agents_dir = work.path().join("agents");
    std::fs::create_dir_all(&agents_dir)?;

    // The commander gets its own runtime, as it would in its own process.
    let commander_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("commander")
        .enable_all()
        .build()?;
    let clients_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("agents")
        .enable_all()
        .build()?;

    let config = CommanderConfig {
        heartbeat: args.interval,
        // Production keeps six heartbeats of slack; so do we.
        lease_ttl: (args.interval * 6).max(ark_commander::config::DEFAULT_LEASE_TTL),
        http: "off".into(),
        ..CommanderConfig::default()
    };
    let handle = commander_rt
        .block_on(ark_commander::server::spawn(
            &commander_dir,
            config,
            "127.0.0.1:0",
        ))
        .context("starting the commander")?;
    let url = handle.url.clone();
    if args.queued > 0 {
        queue_runs(&commander_dir, args.queued)?;
    }

    println!(
        "heartbeat-load: {} agents, heartbeat every {} ms for {} s, commander {} (in-process, data {})",
        args.agents,
        args.interval.as_millis(),
        args.seconds,
        url,
        commander_dir.display()
    );
    println!(
        "host: {} cores; commander and load generator share them (2 tokio runtimes)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    let outcome = clients_rt.block_on(drive(&args, &commander_dir, &agents_dir, &url));
    drop(clients_rt);
    commander_rt
        .block_on(handle.stop())
        .context("stopping the commander")?;
    drop(commander_rt);
    outcome
}

async fn drive(
    args: &Args,
    commander_dir: &Path,
    agents_dir: &Path,
    url: &str,
) -> anyhow::Result<()> {
    // ---- set-up: tokens, enrolment, one mTLS channel per agent, register.
    let setup_start = Instant::now();
    let agents = tokio::time::timeout(SETUP_LIMIT, enrol_all(args, commander_dir, agents_dir, url))
        .await
        .with_context(|| format!("set-up took longer than {SETUP_LIMIT:?}"))??;
    let enrol_secs = setup_start.elapsed().as_secs_f64();
    println!(
        "set-up: enrolled {} agents in {:.2} s ({:.1} enrolments/s, {} at a time)",
        agents.len(),
        enrol_secs,
        agents.len() as f64 / enrol_secs,
        args.enroll_concurrency
    );

    let overflows_before = listen_overflows();
    let register_start = Instant::now();
    let mut register_latencies = Vec::with_capacity(agents.len());
    let mut set = JoinSet::new();
    for mut agent in agents {
        set.spawn(async move {
            let started = Instant::now();
            let response = agent
                .client
                .register(RegisterRequest {
                    capabilities: Some(Capabilities {
                        kinds: vec![ark_core::Kind::File.as_str().into()],
                        max_jobs: 1,
                        agent_version: ark_agent::VERSION.into(),
                        ..Default::default()
                    }),
                })
                .await;
            (agent, started.elapsed(), response)
        });
    }
    let mut registered = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (agent, took, response) = joined?;
        let response = response
            .with_context(|| format!("registering {}", agent.name))?
            .into_inner();
        if response.agent_name != agent.name {
            bail!(
                "registered {} but the commander says {}",
                agent.name,
                response.agent_name
            );
        }
        register_latencies.push(took);
        registered.push(agent);
    }
    let register_secs = register_start.elapsed().as_secs_f64();
    registered.sort_by(|a, b| a.name.cmp(&b.name));
    let register_overflows = match (overflows_before, listen_overflows()) {
        (Some(a), Some(b)) => b.saturating_sub(a).to_string(),
        _ => "unknown".to_string(),
    };
    let register_slow = register_latencies
        .iter()
        .filter(|d| **d >= Duration::from_millis(900))
        .count();
    let register_summary = summarise(&mut register_latencies);
    if let Some(s) = &register_summary {
        println!(
            "register (all {} at once, each on a new TCP+TLS 1.3 connection): {:.2} s total; \
             latency ms p50={:.2} p90={:.2} p99={:.2} max={:.2}; {register_slow} took >= 900 ms; \
             host ListenOverflows during it: {register_overflows}",
            s.n, register_secs, s.p50, s.p90, s.p99, s.max
        );
    }

    // ---- real agents hold a Watch stream open: idle, it must cost nothing.
    let mut watches = JoinSet::new();
    if args.watch {
        for agent in &registered {
            let mut client = agent.client.clone();
            watches.spawn(async move {
                if let Ok(stream) = client.watch(ark_proto::WatchRequest {}).await {
                    let mut stream = stream.into_inner();
                    while let Ok(Some(_)) = stream.message().await {}
                }
            });
        }
    }

    // ---- the measured phase.
    let cpu_before = own_cpu_seconds();
    let n = registered.len();
    let duration = Duration::from_secs(args.seconds);
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let end = start + duration;
    let mut set = JoinSet::new();
    for (i, agent) in registered.into_iter().enumerate() {
        // Spread the first beats evenly over one interval.
        let offset = args.interval.mul_f64(i as f64 / n as f64);
        let interval = args.interval;
        set.spawn(beat(
            agent,
            start,
            start + offset,
            end,
            (interval, args.free_slots),
        ));
    }
    let mut latencies = Vec::new();
    let mut timeline = Vec::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut max_sched_lag = Duration::ZERO;
    while let Some(joined) = set.join_next().await {
        let log = joined?;
        latencies.extend(log.latencies);
        timeline.extend(log.timeline);
        for e in log.errors {
            *errors.entry(e).or_default() += 1;
        }
        max_sched_lag = max_sched_lag.max(log.max_sched_lag);
    }
    let wall = (tokio::time::Instant::now() - start).as_secs_f64();
    let cpu_s = own_cpu_seconds() - cpu_before;
    watches.abort_all();
    let error_count: usize = errors.values().sum();
    let calls = latencies.len() + error_count;
    let calls_per_s = calls as f64 / duration.as_secs_f64();

    // ---- what the commander itself thinks.
    let mut admin = ark_commander::admin::connect(commander_dir, Some(url))?;
    let status = admin.status(StatusRequest {}).await?.into_inner();
    let (rss_kib, hwm_kib) = own_memory_kib();

    println!(
        "heartbeats: {calls} calls in {:.1} s ({calls_per_s:.1} calls/s; expected {:.1}), {error_count} errors, \
         {} ok",
        duration.as_secs_f64(),
        n as f64 / args.interval.as_secs_f64(),
        latencies.len()
    );
    for (message, count) in &errors {
        println!("  error x{count}: {message}");
    }
    let summary = summarise(&mut latencies);
    // When the slowest calls happened: periodic outliers point at something
    // periodic in the commander (sweep, SQLite WAL checkpoint).
    timeline.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    let slowest: Vec<String> = timeline
        .iter()
        .take(5)
        .map(|(at, took)| format!("{:.2} ms at t={at:.2} s", took.as_secs_f64() * 1e3))
        .collect();
    if !slowest.is_empty() {
        println!("slowest calls: {}", slowest.join(", "));
    }
    match &summary {
        Some(s) => println!(
            "heartbeat latency ms: p50={:.2} p90={:.2} p99={:.2} max={:.2} mean={:.2}",
            s.p50, s.p90, s.p99, s.max, s.mean
        ),
        None => println!("heartbeat latency: no successful call"),
    }
    println!(
        "load generator: latest tick fired {:.2} ms after its schedule (wall {:.1} s)",
        max_sched_lag.as_secs_f64() * 1e3,
        wall
    );
    println!(
        "commander: agents_online={} agents_lost={}; bench process (commander + {} clients) VmRSS={} KiB VmHWM={} KiB",
        status.agents_online, status.agents_lost, n, rss_kib, hwm_kib
    );
    let s = summary.unwrap_or(Summary {
        n: 0,
        p50: f64::NAN,
        p90: f64::NAN,
        p99: f64::NAN,
        max: f64::NAN,
        mean: f64::NAN,
    });
    println!(
        "RESULT agents={n} interval_ms={} seconds={} calls={calls} ok={} errors={error_count} \
         calls_per_s={calls_per_s:.1} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} mean_ms={:.2} \
         enroll_s={enrol_secs:.2} register_s={register_secs:.2} register_p50_ms={:.2} \
         register_max_ms={:.2} register_slow={register_slow} register_listen_overflows={register_overflows} sched_lag_max_ms={:.2} \
         agents_online={} process_hwm_kib={hwm_kib} cpu_s={cpu_s:.2} watch={}",
        args.interval.as_millis(),
        args.seconds,
        s.n,
        s.p50,
        s.p90,
        s.p99,
        s.max,
        s.mean,
        register_summary.as_ref().map_or(f64::NAN, |r| r.p50),
        register_summary.as_ref().map_or(f64::NAN, |r| r.max),
        max_sched_lag.as_secs_f64() * 1e3,
        status.agents_online,
        args.watch,
    );
    if error_count > 0 || status.agents_online as usize != n {
        bail!(
            "{error_count} heartbeat errors, {} of {n} agents online at the end",
            status.agents_online
        );
    }
    Ok(())
}

/// Issues N tokens and enrols N agents through the real enrolment path,
/// `enroll_concurrency` at a time; returns each with its own mTLS client.
async fn enrol_all(
    args: &Args,
    commander_dir: &Path,
    agents_dir: &Path,
    url: &str,
) -> anyhow::Result<Vec<SimAgent>> {
    let admin = ark_commander::admin::connect(commander_dir, Some(url)).context("admin client")?;
    let gate = Arc::new(Semaphore::new(args.enroll_concurrency));
    let mut set = JoinSet::new();
    for i in 0..args.agents {
        let name = format!("bench-{i:05}");
        let dir: PathBuf = agents_dir.join(&name);
        let mut admin = admin.clone();
        let gate = gate.clone();
        let url = url.to_string();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let token = admin
                .create_enroll_token(CreateEnrollTokenRequest {
                    agent_name: name.clone(),
                    ttl_ms: 0,
                })
                .await
                .with_context(|| format!("token for {name}"))?
                .into_inner()
                .token
                .parse::<EnrollToken>()?;
            let identity: Identity = ark_agent::enroll::enroll(&url, &token, &dir)
                .await
                .with_context(|| format!("enrolling {name}"))?;
            if identity.name != name {
                bail!("enrolled {name} but got the name {}", identity.name);
            }
            let channel = ark_agent::link::channel(
                &url,
                ark_agent::link::mtls_client_config(&identity.credentials)?,
            )?;
            Ok(SimAgent {
                name,
                client: AgentSessionClient::new(channel),
            })
        });
    }
    let mut agents = Vec::with_capacity(args.agents);
    while let Some(joined) = set.join_next().await {
        agents.push(joined??);
    }
    Ok(agents)
}

/// One agent's heartbeat loop: a beat every `interval` from `first` until `end`.
async fn beat(
    mut agent: SimAgent,
    origin: tokio::time::Instant,
    first: tokio::time::Instant,
    end: tokio::time::Instant,
    (interval, free_slots): (Duration, u32),
) -> AgentLog {
    let mut log = AgentLog::default();
    let mut ticker = tokio::time::interval_at(first, interval);
    // Like the real agent: a slow answer delays the next beat, no catch-up burst.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let scheduled = tokio::select! {
            scheduled = ticker.tick() => scheduled,
            _ = tokio::time::sleep_until(end) => break,
        };
        let fired = tokio::time::Instant::now();
        if fired >= end {
            break;
        }
        log.max_sched_lag = log.max_sched_lag.max(fired - scheduled);
        let request = HeartbeatRequest {
            telemetry: Some(Telemetry {
                cpu_percent: 3.5,
                memory_used_bytes: 180 << 20,
                memory_total_bytes: 1 << 30,
                temperature_celsius: Some(48.0),
                staging_free_bytes: 20 << 30,
                bytes_per_second: 0,
                load_average_1m: 0.2,
                on_battery: None,
                self_yield: None,
                low_disk: false,
            }),
            free_slots,
            active: vec![],
            kept: vec![],
        };
        let started = Instant::now();
        match agent.client.heartbeat(request).await {
            Ok(_) => {
                let took = started.elapsed();
                log.latencies.push(took);
                log.timeline.push(((fired - origin).as_secs_f64(), took));
            }
            Err(status) => log
                .errors
                .push(format!("{:?}: {}", status.code(), status.message())),
        }
    }
    log
}
