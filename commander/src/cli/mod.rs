//! The `ark-commander` command line: one file per subcommand. `serve` runs
//! the server (the demo swarm is `ark-demo`, its own binary); `archive` and `ingest` work on the archive and the
//! ledger in the data dir directly (they are the NAS side, and must work
//! with the commander stopped); `completions` prints shell completions;
//! every other command is a client of the running commander's admin API
//! (never of its database).

mod agents;
mod archive;
mod check;
mod enroll;
mod ingest;
mod opml;
mod output;
mod pause;
mod restore;
mod runs;
mod serve;
mod show_config;
mod status;
mod target;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Top-level arguments.
#[derive(Debug, Parser)]
#[command(
    name = "ark-commander",
    version,
    about = "Ark's commander: targets, leases, the operator CLI"
)]
pub struct Cli {
    /// The commander's data dir (state, PKI, config).
    #[arg(
        long,
        env = "ARK_DATA",
        default_value = "ark-commander-data",
        global = true
    )]
    pub data: PathBuf,
    /// Address of the running commander, for client commands (default: the
    /// one it recorded in the data dir).
    #[arg(long, global = true)]
    pub commander: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the commander (creates its CA and credentials on first start).
    Serve(serve::ServeCmd),
    /// Issue a one-time enrolment token for a new agent.
    Enroll(enroll::EnrollCmd),
    /// Manage harvest targets.
    #[command(subcommand)]
    Target(target::TargetCmd),
    /// Queue a run of a target now.
    RunNow(target::RunNowCmd),
    /// List agents.
    Agents(output::ListArgs),
    /// Set an agent's bandwidth cap and window.
    #[command(subcommand)]
    Agent(agents::AgentCmd),
    /// List runs, newest first.
    Runs(runs::RunsCmd),
    /// Stop handing out new leases (whole swarm, or one agent). Running jobs finish.
    Pause(pause::PauseCmd),
    /// Hand out leases again.
    Resume(pause::PauseCmd),
    /// One-screen overview.
    Status(output::ListArgs),
    /// Print the effective configuration.
    ShowConfig(serve::ConfigOverrides),
    /// The archive: list landed versions, re-verify them.
    #[command(subcommand)]
    Archive(archive::ArchiveCmd),
    /// Check files offline the way the commander does before landing them.
    #[command(subcommand)]
    Check(check::CheckCmd),
    /// NAS upkeep for a timer: recover, re-verify, prune, refresh the
    /// Kiwix library and the archive index. Exit 1 when anything is wrong.
    Ingest(ingest::IngestCmd),
    /// Bring up a standby commander in an empty data dir from the state
    /// replicated to an S3 archive (`--from s3://bucket/prefix`).
    Restore(restore::RestoreCmd),
    /// Print shell completions (bash, zsh, fish, …) to stdout.
    Completions(ark_link::process::CompletionsCmd),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let data = cli.data;
    let url = cli.commander;
    runtime.block_on(async move {
        match cli.cmd {
            Cmd::Serve(cmd) => cmd.run(&data).await,
            Cmd::Enroll(cmd) => cmd.run(&data, url.as_deref()).await,
            Cmd::Target(cmd) => cmd.run(&data, url.as_deref()).await,
            Cmd::RunNow(cmd) => cmd.run(&data, url.as_deref()).await,
            Cmd::Agents(args) => agents::run(&data, url.as_deref(), args).await,
            Cmd::Agent(cmd) => cmd.run(&data, url.as_deref()).await,
            Cmd::Runs(cmd) => cmd.run(&data, url.as_deref()).await,
            Cmd::Pause(cmd) => cmd.run(&data, url.as_deref(), true).await,
            Cmd::Resume(cmd) => cmd.run(&data, url.as_deref(), false).await,
            Cmd::Status(args) => status::run(&data, url.as_deref(), args).await,
            Cmd::ShowConfig(overrides) => show_config::run(&data, overrides),
            Cmd::Archive(cmd) => cmd.run(&data),
            Cmd::Check(cmd) => cmd.run(),
            Cmd::Ingest(cmd) => cmd.run(&data),
            Cmd::Restore(cmd) => cmd.run(&data),
            Cmd::Completions(cmd) => {
                cmd.print(<Cli as clap::CommandFactory>::command());
                Ok(())
            }
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub use ark_link::process::shutdown_signal;
