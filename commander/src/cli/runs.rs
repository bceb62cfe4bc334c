//! `ark-commander runs`: runs newest first, with their reasons; `runs show
//! ID`: one run, its events, and where it was placed and why not elsewhere.

use std::path::Path;

use ark_proto::{GetRunRequest, ListEventsRequest, ListRunsRequest};

use super::output::{ago, human_bytes, print_json, rpc, run_json};

#[derive(Debug, clap::Args)]
pub struct RunsCmd {
    #[command(subcommand)]
    show: Option<RunsSub>,
    /// How many runs to show.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum RunsSub {
    /// One run: its state, its events in order, and its placement (which
    /// agent was chosen, and why each other agent was not).
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

impl RunsCmd {
    pub async fn run(self, data: &Path, url: Option<&str>) -> anyhow::Result<()> {
        let mut admin = crate::admin::connect(data, url)?;
        if let Some(RunsSub::Show { id, json }) = self.show {
            let run = admin
                .get_run(GetRunRequest { id })
                .await
                .map_err(rpc("reading the run"))?
                .into_inner();
            let events = admin
                .list_events(ListEventsRequest {
                    run_id: id,
                    limit: 1000,
                })
                .await
                .map_err(rpc("reading the run's events"))?
                .into_inner()
                .events;
            if json {
                return print_json(&serde_json::json!({
                    "run": run_json(&run),
                    "events": events.iter().map(|e| serde_json::json!({
                        "at_ms": e.at_ms, "agent": e.agent, "kind": e.kind, "message": e.message,
                    })).collect::<Vec<_>>(),
                }));
            }
            println!(
                "run {} of {} ({} {})",
                run.id, run.target, run.kind, run.url
            );
            println!(
                "state     {} (attempt {}, agent {})",
                run.state,
                run.attempts,
                if run.agent.is_empty() {
                    "none"
                } else {
                    &run.agent
                }
            );
            if !run.reason.is_empty() {
                println!("reason    {}", run.reason);
            }
            let mut events = events;
            events.sort_by_key(|e| (e.at_ms, e.id));
            for e in &events {
                if e.kind == "placed" {
                    let mut parts = e.message.split("; ");
                    println!(
                        "{:<9} placement: {}",
                        ago(e.at_ms),
                        parts.next().unwrap_or_default()
                    );
                    for other in parts {
                        println!("{:<9}   not {other}", "");
                    }
                } else {
                    println!("{:<9} {}: {}", ago(e.at_ms), e.kind, e.message);
                }
            }
            return Ok(());
        }
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
