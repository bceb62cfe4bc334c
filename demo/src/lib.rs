//! `ark-demo`: a whole swarm on one machine, through the same code
//! paths as a real deployment — a commander on loopback, agents enrolled
//! with real one-time tokens over mutual TLS, each in its own data dir, and
//! local origins serving real formats: a file, a ZIM made by `zimwriterfs`,
//! a podcast feed with its enclosures, and a Git repository over smart HTTP
//! (`git http-backend`). What this machine lacks the tools for is skipped
//! with the reason.

pub mod git_origin;
pub mod lfs_origin;
pub mod origin;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ark_agent::config::AgentConfig;
use ark_proto::{AddTargetRequest, CreateEnrollTokenRequest, ListRunsRequest};

use anyhow::Result;
use ark_commander::config::CommanderConfig;
use ark_commander::{admin, server, CommanderError};
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
    /// From start to the first landed file.
    pub first_landed: Duration,
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
        .map_err(|s| ark_link::LinkError::rpc("token", s))?
        .into_inner()
        .token;
    ark_agent::enroll::enroll(url, &token.parse()?, agent_dir).await?;
    Ok(())
}

/// The demo's 48×48 illustration: a ZIM must carry one.
const ILLUSTRATION: &[u8] = include_bytes!("illustration.png");

/// One thing the demo harvests.
#[derive(Debug, Clone)]
pub struct DemoTarget {
    pub kind: &'static str,
    pub name: &'static str,
    pub url: String,
}

/// The demo's origins: the HTTP origin (files, the ZIM, the feed and its
/// enclosures) and, when `git` is installed, `git http-backend`. Public
/// so a test can harvest the demo's kinds into two archives at once.
#[derive(Debug)]
pub struct Sources {
    pub targets: Vec<DemoTarget>,
    /// Enclosures the feed lists: each becomes a media run.
    pub enclosures: usize,
    /// What could not be set up on this machine, and why.
    pub skipped: Vec<String>,
    _git: Option<git_origin::GitHttp>,
}

/// Builds a small real ZIM with `zimwriterfs` (Debian's zim-tools) from a
/// few generated pages: Some(bytes), or Err(why not).
pub fn build_zim(dir: &Path) -> std::result::Result<Vec<u8>, String> {
    let html = dir.join("zim-html");
    std::fs::create_dir_all(&html).map_err(|e| e.to_string())?;
    let pages = [
        ("index.html", "Ark handbook", "<p>Ark keeps a household's copy of what matters.</p><ul><li><a href=\"agents.html\">Agents</a></li><li><a href=\"archive.html\">The archive</a></li></ul>"),
        ("agents.html", "Agents", "<p>Spare devices harvest; the commander verifies every byte.</p>"),
        ("archive.html", "The archive", "<p>Versions side by side, each with its manifest.</p>"),
    ];
    for (file, title, body) in pages {
        let page = format!("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>");
        std::fs::write(html.join(file), page).map_err(|e| e.to_string())?;
    }
    std::fs::write(html.join("illustration.png"), ILLUSTRATION).map_err(|e| e.to_string())?;
    let out = dir.join("ark-handbook.zim");
    let status = std::process::Command::new("zimwriterfs")
        .args([
            "-w",
            "index.html",
            "-I",
            "illustration.png",
            "-l",
            "eng",
            "-t",
            "Ark handbook",
        ])
        .args([
            "-d",
            "A tiny handbook for the demo",
            "-c",
            "Ark",
            "-p",
            "Ark",
            "-n",
            "ark_handbook",
        ])
        .arg(&html)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            format!("zimwriterfs: {e} (apt-get install zim-tools, or scripts/setup.sh)")
        })?;
    if !status.success() {
        return Err(format!("zimwriterfs failed ({status})"));
    }
    std::fs::read(&out).map_err(|e| e.to_string())
}

/// A podcast feed with two episodes, served with its enclosures.
fn put_feed(origin: &Origin) -> usize {
    let episodes = [
        ("episode-1.mp3", 256 * 1024, "Soil"),
        ("episode-2.mp3", 384 * 1024, "Seeds"),
    ];
    let mut items = String::new();
    for (i, (file, size, title)) in episodes.iter().enumerate() {
        origin.put(&format!("radio/{file}"), sample_bytes(*size, 40 + i as u8));
        items.push_str(&format!(
            "<item><title>Episode {n}: {title}</title><guid isPermaLink=\"false\">ark-radio-{n}</guid>\
             <pubDate>Mon, {day} Nov 2026 06:00:00 +0000</pubDate><description>About {title}.</description>\
             <enclosure url=\"{url}\" length=\"{size}\" type=\"audio/mpeg\"/></item>",
            n = i + 1,
            day = 16 + i,
            url = origin.url(&format!("radio/{file}")),
        ));
    }
    let feed = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\" \
         xmlns:itunes=\"http://www.itunes.com/dtds/podcast-1.0.dtd\"><channel><title>Ark Radio</title>\
         <link>{}</link><description>A demo podcast</description><itunes:author>Ark</itunes:author>{items}</channel></rss>",
        origin.url("radio/")
    );
    origin.put_typed("radio/feed.xml", feed.into_bytes(), "application/rss+xml");
    episodes.len()
}

/// Sets up every origin the demo harvests from; what this machine cannot
/// serve (no zimwriterfs, no git) is skipped with the reason.
pub fn start_sources(dir: &Path, origin: &Origin) -> Sources {
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    origin.put("welcome.txt", sample_bytes(4 * 1024, 1));
    targets.push(DemoTarget {
        kind: ark_core::Kind::File.as_str(),
        name: "welcome",
        url: origin.url("welcome.txt"),
    });
    match build_zim(dir) {
        Ok(zim) => {
            origin.put("ark-handbook.zim", zim);
            targets.push(DemoTarget {
                kind: ark_core::Kind::Zim.as_str(),
                name: "handbook",
                url: origin.url("ark-handbook.zim"),
            });
        }
        Err(why) => skipped.push(format!("ZIM: {why}")),
    }
    let enclosures = put_feed(origin);
    targets.push(DemoTarget {
        kind: ark_core::Kind::Rss.as_str(),
        name: "ark-radio",
        url: origin.url("radio/feed.xml"),
    });
    let repos = dir.join("git");
    let git = std::fs::create_dir_all(&repos)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            ark_agent::git::fixture::Upstream::populated(&repos, "notes").map_err(|e| e.to_string())
        })
        .and_then(|_| git_origin::GitHttp::start(&repos).map_err(|e| format!("{e:#}")));
    let git = match git {
        Ok(http) => {
            targets.push(DemoTarget {
                kind: ark_core::Kind::Git.as_str(),
                name: "notes",
                url: http.url("notes.git"),
            });
            Some(http)
        }
        Err(why) => {
            skipped.push(format!("Git: {why} (install git)"));
            None
        }
    };
    Sources {
        targets,
        enclosures,
        skipped,
        _git: git,
    }
}

/// Runs the demo; with `once`, returns after the first harvest, otherwise
/// keeps the swarm up until `shutdown` resolves.
pub async fn run(
    demo: DemoConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<DemoReport> {
    let started = Instant::now();
    // A demo starts afresh: its origins get new ports, so old targets and
    // runs would only point nowhere.
    for stale in ["commander", "origin", "archive"] {
        let _ = std::fs::remove_dir_all(demo.dir.join(stale));
    }
    let commander_dir = demo.dir.join("commander");
    let archive_dir = std::path::absolute(demo.dir.join("archive"))
        .map_err(CommanderError::io("resolving", demo.dir.join("archive")))?;
    let config = demo_config(&commander_dir, &archive_dir)?;
    let commander = server::spawn(&commander_dir, config, "127.0.0.1:0").await?;
    let origin = Origin::start().await.map_err(CommanderError::io(
        "starting the demo origin on",
        "127.0.0.1",
    ))?;
    let origin_dir = demo.dir.join("origin");
    std::fs::create_dir_all(&origin_dir).map_err(CommanderError::io("creating", &origin_dir))?;
    let sources = start_sources(&origin_dir, &origin);
    println!(
        "commander  {}  (data in {})",
        commander.url,
        commander_dir.display()
    );
    if let Ok(dashboard) = ark_commander::web::endpoint(&commander_dir) {
        println!("dashboard  {dashboard}/");
    }
    println!("origin     http://{}", origin.addr);
    for why in &sources.skipped {
        println!("skipped    {why}");
    }

    let (stop_agents, _) = tokio::sync::broadcast::channel::<()>(1);
    let agent_tasks = start_agents(&demo, &commander.url, &commander_dir, &stop_agents).await?;

    let mut admin = admin::connect(&commander_dir, Some(&commander.url))?;
    for t in &sources.targets {
        admin
            .add_target(AddTargetRequest {
                kind: t.kind.into(),
                url: t.url.clone(),
                name: t.name.into(),
                ..Default::default()
            })
            .await
            .map_err(|s| ark_link::LinkError::rpc("adding a target", s))?;
        println!("target     {:<10} {:<5} {}", t.name, t.kind, t.url);
    }

    // Every target's run, and one media run per enclosure of the feed.
    let expected = sources.targets.len() + sources.enclosures;
    let (landed, first_landed) = wait_for_landings(&mut admin, expected, started).await?;
    let report = DemoReport {
        landed,
        elapsed: started.elapsed(),
        first_landed: first_landed.unwrap_or_default(),
    };
    print_summary(&report, &archive_dir, &commander_dir);
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

/// The demo's agents, each enrolled afresh (each demo has a new commander
/// and CA) and running in this process until `stop`.
async fn start_agents(
    demo: &DemoConfig,
    url: &str,
    commander_dir: &Path,
    stop: &tokio::sync::broadcast::Sender<()>,
) -> Result<Vec<tokio::task::JoinHandle<ark_agent::Result<()>>>> {
    let mut agent_tasks = Vec::new();
    for i in 1..=demo.agents {
        let name = format!("agent-{i}");
        let agent_dir = demo.dir.join(&name);
        let _ = std::fs::remove_dir_all(&agent_dir);
        enroll_agent(url, commander_dir, &agent_dir, &name).await?;
        let mut stop = stop.subscribe();
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

    Ok(agent_tasks)
}

/// The demo commander's config, written to its data dir so
/// `ark-commander --data <dir>/commander archive …` finds the archive too.
fn demo_config(commander_dir: &Path, archive_dir: &Path) -> Result<CommanderConfig> {
    std::fs::create_dir_all(commander_dir)
        .map_err(CommanderError::io("creating", commander_dir))?;
    let config = CommanderConfig {
        heartbeat: DEMO_HEARTBEAT,
        lease_ttl: DEMO_LEASE_TTL,
        archive: archive_dir.to_string_lossy().into_owned(),
        // The dashboard on a free loopback port: a demo never clashes with
        // a commander already serving 8447.
        http: "127.0.0.1:0".into(),
        ..CommanderConfig::default()
    };
    // Written out, so `ark-commander --data <dir>/commander archive …` finds
    // the archive too.
    let config_file = commander_dir.join(ark_commander::config::CONFIG_FILE);
    std::fs::write(&config_file, config.to_toml())
        .map_err(CommanderError::io("writing", &config_file))?;
    Ok(config)
}

/// Waits until `expected` runs have landed, showing them as they do;
/// returns them and when the first one landed.
async fn wait_for_landings(
    admin: &mut ark_proto::admin_client::AdminClient<tonic::transport::Channel>,
    expected: usize,
    started: Instant,
) -> Result<(Vec<Landed>, Option<Duration>)> {
    let progress = indicatif::ProgressBar::new(expected as u64).with_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} landed  {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.enable_steady_tick(Duration::from_millis(120));
    let mut first_landed: Option<Duration> = None;
    let mut announced = std::collections::HashSet::new();
    let landed = loop {
        let runs = admin
            .list_runs(ListRunsRequest { limit: 200 })
            .await
            .map_err(|s| ark_link::LinkError::rpc("listing runs", s))?
            .into_inner()
            .runs;
        if let Some(failed) = runs.iter().find(|r| r.state == "failed") {
            progress.abandon();
            anyhow::bail!(
                "demo run {} of {} ({}) failed: {}",
                failed.id,
                failed.target,
                failed.kind,
                failed.reason
            );
        }
        let done: Vec<_> = runs.iter().filter(|r| r.state == "succeeded").collect();
        for r in &done {
            if announced.insert(r.id) {
                first_landed.get_or_insert_with(|| started.elapsed());
                progress.inc(1);
                progress.set_message(format!("{} {} by {}", r.kind, r.target, r.agent));
                if progress.is_hidden() {
                    println!("landed     {:<5} {:<10} by {}", r.kind, r.target, r.agent);
                }
            }
        }
        if done.len() >= expected {
            break done
                .iter()
                .map(|r| Landed {
                    target: format!("{} {}", r.kind, r.target),
                    agent: r.agent.clone(),
                    size: r.size_bytes,
                    blake3: r.blake3.clone(),
                })
                .collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    progress.finish_and_clear();
    Ok((landed, first_landed))
}

/// What landed, where, and how to look at it.
fn print_summary(report: &DemoReport, archive_dir: &Path, commander_dir: &Path) {
    println!(
        "\nharvested, verified and landed in {:.1?} (first file after {:.1?}):",
        report.elapsed, report.first_landed
    );
    for l in &report.landed {
        println!(
            "  {:<22} {:>9} bytes  blake3 {}  by {}",
            l.target, l.size, &l.blake3, l.agent
        );
    }
    println!(
        "archive: {}  (`ark-commander --data {} archive ls` / `archive verify`)",
        archive_dir.display(),
        commander_dir.display()
    );
    if let Ok(dashboard) = ark_commander::web::endpoint(commander_dir) {
        println!("dashboard: {dashboard}/  (live: agents, runs, the archive; pause/resume)");
    }
}
