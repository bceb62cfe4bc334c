//! `ark-demo`: a whole swarm on this machine (see the library).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Run a whole swarm on this machine: a commander, agents and local origins
/// serving a file, a ZIM, a podcast feed and a Git repository.
#[derive(Debug, Parser)]
#[command(name = "ark-demo", version)]
struct DemoCmd {
    /// Where the demo keeps its data dirs.
    #[arg(long, default_value = "ark-demo")]
    dir: PathBuf,
    /// How many agents to start.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Exit after the first harvest instead of running until Ctrl-C.
    #[arg(long)]
    once: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cmd = DemoCmd::parse();
    ark_link::process::init_logging("warn");
    let demo = ark_demo::DemoConfig {
        dir: cmd.dir,
        agents: cmd.agents.max(1),
        once: cmd.once,
    };
    match ark_demo::run(demo, ark_link::process::shutdown_signal()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ark-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
