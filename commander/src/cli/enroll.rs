//! `ark-commander enroll NAME`: issue a one-time enrolment token.

use std::path::Path;
use std::time::Duration;

use ark_proto::CreateEnrollTokenRequest;

use super::output::rpc;

#[derive(Debug, clap::Args)]
pub struct EnrollCmd {
    /// The new agent's name.
    name: String,
    /// How long the token stays valid (default: the commander's, 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
}

impl EnrollCmd {
    pub async fn run(self, data: &Path, url: Option<&str>) -> anyhow::Result<()> {
        let mut admin = crate::admin::connect(data, url)?;
        let response = admin
            .create_enroll_token(CreateEnrollTokenRequest {
                agent_name: self.name.clone(),
                ttl_ms: self.ttl.map(|d| d.as_millis() as u64).unwrap_or(0),
            })
            .await
            .map_err(rpc("issuing a token"))?
            .into_inner();
        println!("{}", response.token);
        let endpoint = url
            .map(str::to_string)
            .or_else(|| crate::server::endpoint(data).ok())
            .unwrap_or_default();
        eprintln!(
            "one-time token for {:?}, valid until {} (ms since epoch). On the device:\n  ark-agent enroll --commander {} --token {}",
            self.name, response.expires_at_ms, endpoint, response.token
        );
        Ok(())
    }
}
