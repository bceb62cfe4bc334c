//! `ark-commander runs`: runs newest first, with their reasons.

use std::path::Path;

use ark_proto::ListRunsRequest;

use super::output::{ago, human_bytes, print_json, rpc, run_json};

#[derive(Debug, clap::Args)]
pub struct RunsCmd {
    /// How many runs to show.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

impl RunsCmd {
    pub async fn run(self, data: &Path, url: Option<&str>) -> anyhow::Result<()> {
        let mut admin = crate::admin::connect(data, url)?;
        let runs = admin
            .list_runs(ListRunsRequest { limit: self.limit })
            .await
            .map_err(rpc("listing runs"))?
            .into_inner()
            .runs;
        if self.json {
            return print_json(&runs.iter().map(run_json).collect());
        }
        println!(
            "{:>5} {:<20} {:<10} {:>3} {:<12} {:>11} {:<15} {:<9} REASON",
            "RUN", "TARGET", "STATE", "TRY", "AGENT", "BYTES", "PROGRESS", "CREATED"
        );
        for r in runs {
            let progress = if r.state == "leased" && r.bytes_total > 0 {
                format!(
                    "{}% {}/s",
                    r.bytes_done * 100 / r.bytes_total,
                    human_bytes(r.bytes_per_second)
                )
            } else {
                String::new()
            };
            println!(
                "{:>5} {:<20} {:<10} {:>3} {:<12} {:>11} {:<15} {:<9} {}",
                r.id,
                r.target,
                r.state,
                r.attempts,
                r.agent,
                r.bytes_done,
                progress,
                ago(r.created_at_ms),
                r.reason
            );
        }
        Ok(())
    }
}
