//! `ark-commander demo`: a whole swarm on one machine, through the same code
//! paths as a real deployment — a commander on loopback, agents enrolled
//! with real one-time tokens over mutual TLS, each in its own data dir, and
//! a local origin serving files to harvest.

pub mod origin;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ark_agent::config::AgentConfig;
use ark_proto::{AddTargetRequest, CreateEnrollTokenRequest, ListRunsRequest};

use crate::config::CommanderConfig;
use crate::{admin, server, CommanderError, Result};
use origin::Origin;

/// Demo timings: a quicker heartbeat than production so the demo shows its
/// work within seconds.
const DEMO_HEARTBEAT: Duration = Duration::from_millis(500);
const DEMO_LEASE_TTL: Duration = Duration::from_secs(5);

/// What the demo should do.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub dir: PathBuf,
    pub agents: usize,
    pub once: bool,
}

/// A harvested file, for the summary.
#[derive(Debug, Clone)]
pub struct Landed {
    pub target: String,
    pub agent: String,
    pub size: u64,
    pub blake3: String,
}

/// The demo's outcome.
#[derive(Debug)]
pub struct DemoReport {
    pub landed: Vec<Landed>,
    pub elapsed: Duration,
}

/// Deterministic bytes for the demo's files (no randomness needed).
pub fn sample_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn enroll_agent(url: &str, data: &Path, agent_dir: &Path, name: &str) -> Result<()> {
    if ark_agent::identity::Identity::load(agent_dir).is_ok() {
        return Ok(());
    }
    let mut admin = admin::connect(data, Some(url))?;
    let token = admin
        .create_enroll_token(CreateEnrollTokenRequest {
            agent_name: name.into(),
            ttl_ms: 0,
        })
        .await
        .map_err(|s| ark_agent::AgentError::rpc("token", s))?
        .into_inner()
        .token;
    ark_agent::enroll::enroll(url, &token.parse()?, agent_dir).await?;
    Ok(())
}

/// Runs the demo; with `once`, returns after the first harvest, otherwise
/// keeps the swarm up until `shutdown` resolves.
pub async fn run(
    demo: DemoConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<DemoReport> {
    let started = Instant::now();
    let commander_dir = demo.dir.join("commander");
    std::fs::create_dir_all(&commander_dir)
        .map_err(CommanderError::io("creating", &commander_dir))?;
    let config = CommanderConfig {
        heartbeat: DEMO_HEARTBEAT,
        lease_ttl: DEMO_LEASE_TTL,
        // The dashboard on a free loopback port: a demo never clashes with
        // a commander already serving 8447.
        http: "127.0.0.1:0".into(),
        ..CommanderConfig::default()
    };
    let commander = server::spawn(&commander_dir, config, "127.0.0.1:0").await?;
    let origin = Origin::start().await.map_err(CommanderError::io(
        "starting the demo origin on",
        "127.0.0.1",
    ))?;
    let files = [
        ("welcome.txt", 4 * 1024),
        ("photos.tar", 3 * 1024 * 1024),
        ("podcast.mp3", 1536 * 1024),
    ];
    for (i, (name, size)) in files.iter().enumerate() {
        origin.put(name, sample_bytes(*size, i as u8));
    }
    println!(
        "commander  {}  (data in {})",
        commander.url,
        commander_dir.display()
    );
    if let Ok(dashboard) = crate::web::endpoint(&commander_dir) {
        println!("dashboard  {dashboard}/");
    }
    println!("origin     http://{}", origin.addr);

    let (stop_agents, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut agent_tasks = Vec::new();
    for i in 1..=demo.agents {
        let name = format!("agent-{i}");
        let agent_dir = demo.dir.join(&name);
        enroll_agent(&commander.url, &commander_dir, &agent_dir, &name).await?;
        let mut stop = stop_agents.subscribe();
        agent_tasks.push(tokio::spawn(async move {
            let config = AgentConfig {
                commander: String::new(),
                ..AgentConfig::default()
            };
            ark_agent::session::run(agent_dir, config, async move {
                let _ = stop.recv().await;
            })
            .await
        }));
        println!("agent      {name} enrolled (mutual TLS, one-time token)");
    }

    let mut admin = admin::connect(&commander_dir, Some(&commander.url))?;
    for (name, _) in files {
        let added = admin
            .add_target(AddTargetRequest {
                kind: ark_proto::KIND_FILE.into(),
                url: origin.url(name),
                name: name.replace('.', "-"),
                every_ms: 0,
                keep: 0,
                ..Default::default()
            })
            .await;
        if let Err(status) = added {
            if status.code() != tonic::Code::AlreadyExists {
                return Err(ark_agent::AgentError::rpc("adding a target", status).into());
            }
        }
    }

    let landed = loop {
        let runs = admin
            .list_runs(ListRunsRequest { limit: 100 })
            .await
            .map_err(|s| ark_agent::AgentError::rpc("listing runs", s))?
            .into_inner()
            .runs;
        let done: Vec<_> = runs.iter().filter(|r| r.state == "succeeded").collect();
        if let Some(failed) = runs.iter().find(|r| r.state == "failed") {
            return Err(CommanderError::Invalid(format!(
                "demo run {} of {} failed: {}",
                failed.id, failed.target, failed.reason
            )));
        }
        if done.len() >= files.len() {
            break done
                .iter()
                .map(|r| Landed {
                    target: r.target.clone(),
                    agent: r.agent.clone(),
                    size: r.size_bytes,
                    blake3: r.blake3.clone(),
                })
                .collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let report = DemoReport {
        landed,
        elapsed: started.elapsed(),
    };
    println!(
        "\nharvested, verified and landed in {:.1?}:",
        report.elapsed
    );
    for l in &report.landed {
        println!(
            "  {:<14} {:>9} bytes  blake3 {}  by {}",
            l.target, l.size, &l.blake3, l.agent
        );
    }
    let archive_dir = CommanderConfig::default().archive_dir(&commander_dir);
    println!(
        "archive: {}  (`ark-commander --data {} archive ls` / `archive verify`)",
        archive_dir.display(),
        commander_dir.display()
    );
    if !demo.once {
        println!("\nswarm running; try `ark-commander --data {} agents` in another shell. Ctrl-C to stop.", commander_dir.display());
        shutdown.await;
    }
    let _ = stop_agents.send(());
    for task in agent_tasks {
        let _ = task.await;
    }
    commander.stop().await?;
    Ok(report)
}
