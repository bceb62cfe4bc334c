//! `ark-commander target import opml FILE` and `target export opml`: a
//! household's feed subscriptions in and out, as every feed reader and
//! podcast app exchanges them.

use std::path::PathBuf;

use ark_proto::admin_client::AdminClient;
use ark_proto::{AddTargetRequest, ImportTargetsRequest, ListTargetsRequest};
use tonic::transport::Channel;

use super::output::{print_json, rpc, target_json};
use super::target::FeedArgs;
use crate::opml;

#[derive(Debug, clap::Subcommand)]
pub enum ImportCmd {
    /// Feeds from an OPML file (Miniflux, FreshRSS, Feedly, podcast apps):
    /// one rss target each, skipping feeds already present; all or nothing.
    Opml {
        file: PathBuf,
        /// Harvest each feed again every DUR (e.g. 1h); default: once.
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<std::time::Duration>,
        /// Snapshots each feed keeps; default: the commander's `keep`.
        #[arg(long)]
        keep: Option<u32>,
        #[command(flatten)]
        feed: FeedArgs,
        /// Say what would be added, add nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ExportCmd {
    /// The feed targets as OPML 2.0 (categories as nested outlines).
    Opml {
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

impl ImportCmd {
    pub async fn run(self, admin: &mut AdminClient<Channel>) -> anyhow::Result<()> {
        let ImportCmd::Opml {
            file,
            every,
            keep,
            feed,
            dry_run,
            json,
        } = self;
        let size = std::fs::metadata(&file)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?
            .len();
        if size > opml::MAX_BYTES {
            anyhow::bail!(
                "{} is {size} bytes, more than an OPML list can be ({} bytes); nothing was imported",
                file.display(),
                opml::MAX_BYTES
            );
        }
        let text = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
        let feeds = opml::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let mut names = std::collections::HashSet::new();
        let targets = feeds
            .iter()
            .map(|f| {
                // Two feeds of one title get distinct names.
                let base = opml::name_for(&f.title, &f.url);
                let mut name = base.clone();
                let mut n = 2;
                while !names.insert(name.clone()) {
                    name = format!("{base}-{n}");
                    n += 1;
                }
                AddTargetRequest {
                    kind: ark_core::Kind::Rss.to_string(),
                    url: f.url.clone(),
                    name,
                    every_ms: every.map(|d| d.as_millis() as u64).unwrap_or(0),
                    keep: keep.unwrap_or(0),
                    media: feed.media.clone().unwrap_or_default(),
                    keep_media: feed.keep_media.unwrap_or(0),
                    category: f.category.clone(),
                    ..Default::default()
                }
            })
            .collect();
        let response = admin
            .import_targets(ImportTargetsRequest { targets, dry_run })
            .await
            .map_err(rpc("importing the feeds"))?
            .into_inner();
        if json {
            return print_json(&serde_json::json!({
                "dry_run": dry_run,
                "added": response.added.iter().map(target_json).collect::<Vec<_>>(),
                "skipped": response.skipped,
            }));
        }
        let verb = if dry_run { "would add" } else { "added" };
        for t in &response.added {
            println!("{verb} {} ({}) {}", t.name, t.category, t.url);
        }
        for s in &response.skipped {
            println!("skipped {s}");
        }
        println!(
            "{} feeds in {}: {} {verb}, {} skipped",
            feeds.len(),
            file.display(),
            response.added.len(),
            response.skipped.len()
        );
        Ok(())
    }
}

impl ExportCmd {
    pub async fn run(self, admin: &mut AdminClient<Channel>) -> anyhow::Result<()> {
        let ExportCmd::Opml { out } = self;
        let targets = admin
            .list_targets(ListTargetsRequest {})
            .await
            .map_err(rpc("listing targets"))?
            .into_inner()
            .targets;
        let feeds: Vec<opml::Feed> = targets
            .into_iter()
            .filter(|t| t.kind == ark_core::Kind::Rss.as_str())
            .map(|t| opml::Feed {
                title: t.name,
                url: t.url,
                category: t.category,
            })
            .collect();
        let created = httpdate_now();
        let text = opml::write(&feeds, &created);
        match out {
            Some(path) => {
                ark_core::write_atomic(&path, text.as_bytes(), 0o644)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                eprintln!("{} feeds written to {}", feeds.len(), path.display());
            }
            None => print!("{text}"),
        }
        Ok(())
    }
}

/// Now as an RFC 3339 date (OPML's dateCreated; readers accept it).
fn httpdate_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
