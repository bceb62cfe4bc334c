//! `ark-commander demo`: a whole swarm on this machine.

use std::path::PathBuf;

use crate::demo::DemoConfig;

#[derive(Debug, clap::Args)]
pub struct DemoCmd {
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

impl DemoCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        let demo = DemoConfig {
            dir: self.dir,
            agents: self.agents.max(1),
            once: self.once,
        };
        crate::demo::run(demo, super::shutdown_signal()).await?;
        Ok(())
    }
}
