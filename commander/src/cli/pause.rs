//! `ark-commander pause [AGENT]` / `resume [AGENT]`. Effective at each
//! agent's next heartbeat: no new leases; running jobs finish.

use std::path::Path;

use ark_proto::{PauseRequest, ResumeRequest};

use super::output::rpc;

#[derive(Debug, clap::Args)]
pub struct PauseCmd {
    /// One agent; omitted, the whole swarm.
    agent: Option<String>,
}

impl PauseCmd {
    pub async fn run(self, data: &Path, url: Option<&str>, pause: bool) -> anyhow::Result<()> {
        let mut admin = crate::admin::connect(data, url)?;
        let agent = self.agent.unwrap_or_default();
        if pause {
            admin
                .pause(PauseRequest {
                    agent: agent.clone(),
                })
                .await
                .map_err(rpc("pausing"))?;
        } else {
            admin
                .resume(ResumeRequest {
                    agent: agent.clone(),
                })
                .await
                .map_err(rpc("resuming"))?;
        }
        let who = if agent.is_empty() {
            "the whole swarm".to_string()
        } else {
            format!("agent {agent}")
        };
        let what = if pause {
            "paused: no new leases; running jobs finish"
        } else {
            "resumed"
        };
        println!("{who} {what} (at the next heartbeat)");
        Ok(())
    }
}
