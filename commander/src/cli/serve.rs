//! `ark-commander serve` and the config flags shared with `show-config`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::config::CommanderConfig;

/// Flags laid over `commander.toml`.
#[derive(Debug, clap::Args)]
pub struct ConfigOverrides {
    /// Address to listen on (e.g. 0.0.0.0:7443 to serve the LAN).
    #[arg(long)]
    pub listen: Option<String>,
    /// Address of the dashboard and /metrics (HTTP), e.g. 0.0.0.0:8447;
    /// `off` turns it off.
    #[arg(long)]
    pub http: Option<String>,
    /// Extra DNS name or IP for the server certificate (repeatable).
    #[arg(long)]
    pub san: Vec<String>,
    /// Lease time to live, e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lease_ttl: Option<Duration>,
    /// Agent heartbeat interval, e.g. 5s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat: Option<Duration>,
    /// Failed attempts before a run fails for good.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Where verified files land (the NAS mount); relative paths are under
    /// the data dir. Default: <data>/archive.
    #[arg(long)]
    pub archive: Option<String>,
}

impl ConfigOverrides {
    pub fn apply(self, data: &Path) -> anyhow::Result<CommanderConfig> {
        let mut config = CommanderConfig::load(data)?;
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.http {
            config.http = v;
        }
        config.san.extend(self.san);
        if let Some(v) = self.lease_ttl {
            config.lease_ttl = v;
        }
        if let Some(v) = self.heartbeat {
            config.heartbeat = v;
        }
        if let Some(v) = self.max_attempts {
            config.max_attempts = v;
        }
        if let Some(v) = self.archive {
            config.archive = v;
        }
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeCmd {
    #[command(flatten)]
    overrides: ConfigOverrides,
}

impl ServeCmd {
    pub async fn run(self, data: &Path) -> anyhow::Result<()> {
        let config = self.overrides.apply(data)?;
        let listener = crate::server::bind(&config.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (in use? try --listen 127.0.0.1:0)",
                config.listen
            )
        })?;
        crate::server::run(data, config, listener, super::shutdown_signal()).await?;
        Ok(())
    }
}
