//! `ark-agent`: parses arguments, sets up logging, calls the library, maps
//! the error to an exit code. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ark_agent::config::AgentConfig;
use ark_agent::enroll::EnrollToken;
use ark_agent::status::AgentStatus;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ark-agent",
    version,
    about = "Ark's harvester agent: enrol once, then run"
)]
struct Cli {
    /// The agent's data dir (identity, config, staging, status).
    #[arg(
        long,
        env = "ARK_DATA",
        default_value = "ark-agent-data",
        global = true
    )]
    data: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Enrol with a commander using a one-time token from `ark-commander enroll NAME`.
    Enroll {
        /// The commander's address, https://HOST:PORT.
        #[arg(long)]
        commander: String,
        #[arg(long)]
        token: String,
    },
    /// Run the agent: register, heartbeat, take and run jobs, until Ctrl-C / SIGTERM.
    Run(Overrides),
    /// Show the agent's last known state (from its data dir; works offline).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration (agent.toml with flags on top).
    ShowConfig(Overrides),
    /// List what this agent harvested (its dedupe registry), newest first.
    Harvests {
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions (bash, zsh, fish, …) to stdout.
    Completions(ark_agent::process::CompletionsCmd),
}

/// Flags laid over `agent.toml`.
#[derive(Debug, clap::Args)]
struct Overrides {
    /// Commander address, overriding the one recorded at enrolment.
    #[arg(long)]
    commander: Option<String>,
    /// Jobs at once.
    #[arg(long)]
    max_jobs: Option<u32>,
    /// Bytes per second for all jobs together (0 = uncapped).
    #[arg(long)]
    bandwidth_cap: Option<u64>,
    /// Staging directory.
    #[arg(long)]
    staging: Option<PathBuf>,
}

impl Overrides {
    fn apply(self, data: &std::path::Path) -> anyhow::Result<AgentConfig> {
        let mut config = AgentConfig::load(data)?;
        if let Some(v) = self.commander {
            config.commander = v;
        }
        if let Some(v) = self.max_jobs {
            config.max_jobs = v;
        }
        if let Some(v) = self.bandwidth_cap {
            config.bandwidth_cap = v;
        }
        if let Some(v) = self.staging {
            config.staging = v;
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    ark_link::memory::tune_allocator();
    let cli = Cli::parse();
    ark_agent::process::init_logging("info");
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ark-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

///
/// Long by design: one short arm per subcommand.
fn run(cli: Cli) -> anyhow::Result<()> {
    if let Cmd::Completions(cmd) = &cli.cmd {
        cmd.print(<Cli as clap::CommandFactory>::command());
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.cmd {
        Cmd::Enroll { commander, token } => {
            let token: EnrollToken = token.parse()?;
            let identity =
                runtime.block_on(ark_agent::enroll::enroll(&commander, &token, &cli.data))?;
            println!(
                "enrolled as {:?} with {commander}; identity in {}",
                identity.name,
                cli.data.join("identity").display()
            );
            Ok(())
        }
        Cmd::Run(overrides) => {
            let config = overrides.apply(&cli.data)?;
            runtime.block_on(ark_agent::session::run(
                cli.data,
                config,
                ark_agent::process::shutdown_signal(),
            ))?;
            Ok(())
        }
        Cmd::Status { json } => {
            let status = AgentStatus::load(&cli.data)?.with_context(|| {
                format!(
                    "no status in {}: has `ark-agent run` ever started there?",
                    cli.data.display()
                )
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("agent      {}", status.name);
                println!("commander  {} ({})", status.commander, status.link);
                println!("paused     {}", status.paused);
                println!(
                    "heartbeat  {}",
                    ark_agent::status::ago(status.last_heartbeat_ms)
                );
                if !status.last_error.is_empty() {
                    println!("last error {}", status.last_error);
                }
                println!("completed  {}", status.completed);
                for job in &status.jobs {
                    println!(
                        "job        run {} gen {} {} {} bytes",
                        job.run_id, job.generation, job.url, job.bytes_done
                    );
                }
            }
            Ok(())
        }
        Cmd::ShowConfig(overrides) => {
            print!("{}", overrides.apply(&cli.data)?.to_toml());
            Ok(())
        }
        Cmd::Harvests { json } => {
            let harvests = ark_agent::registry::Registry::open(&cli.data)?.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&harvests)?);
            } else {
                println!(
                    "{:<6} {:<16} {:>12}  {:<16}  LANDED",
                    "RUN", "TARGET", "SIZE", "BLAKE3"
                );
                for h in &harvests {
                    println!(
                        "{:<6} {:<16} {:>12}  {:<16}  {}",
                        h.run_id,
                        h.target,
                        h.size,
                        &h.blake3[..16.min(h.blake3.len())],
                        h.landed_path.as_deref().unwrap_or("(not landed)")
                    );
                }
            }
            Ok(())
        }
        Cmd::Completions(_) => Ok(()),
    }
}
