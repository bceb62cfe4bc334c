//! `ark-commander target add|ls|rm|import|export` and `run-now`.

use std::path::Path;
use std::time::Duration;

use ark_proto::{AddTargetRequest, ListTargetsRequest, RemoveTargetRequest, RunNowRequest};

use super::output::{ago, print_json, rpc, run_json, target_json, ListArgs};

#[derive(Debug, clap::Subcommand)]
pub enum TargetCmd {
    /// Add a target: KIND (file, zim, rss, git, git-account) and URL; or a Kiwix book
    /// followed to its newest release: `zim --book NAME --from URL`.
    Add(Box<AddCmd>),
    /// Add targets from a list: `import opml FILE` (feeds, as readers and
    /// podcast apps export them; nested outlines become categories).
    Import {
        #[command(subcommand)]
        list: super::opml::ImportCmd,
    },
    /// Write the targets as a list: `export opml [--out FILE]`.
    Export {
        #[command(subcommand)]
        list: super::opml::ExportCmd,
    },
    /// List targets.
    Ls(ListArgs),
    /// Remove a target (its past runs stay in the history).
    Rm { name: String },
}

/// `target add`: what to harvest and how.
#[derive(Debug, clap::Args)]
pub struct AddCmd {
    pub kind: String,
    /// What to harvest (not with --book).
    #[arg(required_unless_present = "book", conflicts_with = "book")]
    pub url: Option<String>,
    /// A Kiwix book (kind zim) to follow to its newest dated release:
    /// its name with its flavour and without the date, e.g.
    /// wikipedia_en_all_nopic. Needs --from.
    #[arg(long, requires = "from")]
    pub book: Option<String>,
    /// Where the book's releases are listed: a Kiwix mirror directory
    /// (e.g. https://download.kiwix.org/zim/wikipedia/) or an OPDS
    /// catalog in Kiwix's v2 format.
    #[arg(long, requires = "book")]
    pub from: Option<String>,
    /// Oldest the target may get before it is stale (e.g. 120d);
    /// default: the commander's `max-age`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_age: Option<Duration>,
    /// Name (default: from the URL).
    #[arg(long)]
    pub name: Option<String>,
    /// Harvest again every DUR (e.g. 6h); default: once.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub every: Option<Duration>,
    /// Versions to keep in the archive (older ones are pruned once a new
    /// one has landed); default: the commander's `keep` (3).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// Cap on this target's download rate, e.g. 500KB/s, 5MiB/s or a
    /// plain number of bytes/s (the agent's own cap applies as well).
    #[arg(long, value_parser = parse_rate)]
    pub bandwidth: Option<u64>,
    /// Largest body a run may fetch, e.g. 500MB or 2GiB (for a feed:
    /// each enclosure; larger ones are skipped with the reason).
    #[arg(long, value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Off-peak hours it may run, local time, e.g. 01:00-06:00 (or
    /// 22:00-06:00 across midnight); a due run waits queued until then.
    #[arg(long)]
    pub window: Option<String>,
    /// Independent agents that must agree before a version lands: 1 to
    /// 9, or `adaptive` (confirm an agent until it has a record for the
    /// kind, then a sample); default: the commander's `quorum` (1).
    #[arg(long)]
    pub quorum: Option<String>,
    /// Before landing, the commander fetches K random 16 KiB chunk
    /// groups from the origin itself and checks them against the
    /// upload (git: the origin's advertised refs); default off.
    #[arg(long, value_name = "K")]
    pub spot_check: Option<u32>,
    #[command(flatten)]
    pub feed: FeedArgs,
    #[command(flatten)]
    pub account: AccountArgs,
    /// A git or git-account target: also fetch the Git LFS objects the
    /// repositories point at (through the LFS batch API, held to their
    /// SHA-256 oids), landed beside the mirror under lfs/objects/.
    #[arg(long)]
    pub lfs: bool,
    /// A category tag, e.g. News/Tech.
    #[arg(long)]
    pub category: Option<String>,
    /// °C at which an agent gets none of this target's runs (default: the
    /// agent's or the commander's cap).
    #[arg(long, value_name = "CELSIUS")]
    pub max_temp: Option<f32>,
}

impl TargetCmd {
    pub async fn run(self, data: &Path, url: Option<&str>) -> anyhow::Result<()> {
        let mut admin = crate::admin::connect(data, url)?;
        match self {
            TargetCmd::Add(add) => {
                let AddCmd {
                    kind,
                    url,
                    book,
                    from,
                    max_age,
                    name,
                    every,
                    keep,
                    bandwidth,
                    max_size,
                    window,
                    quorum,
                    spot_check,
                    feed,
                    account,
                    lfs,
                    category,
                    max_temp,
                } = *add;
                let t = admin
                    .add_target(AddTargetRequest {
                        kind,
                        url: url.or(from).unwrap_or_default(),
                        book: book.unwrap_or_default(),
                        max_age_ms: max_age.map(|d| d.as_millis() as u64).unwrap_or(0),
                        name: name.unwrap_or_default(),
                        every_ms: every.map(|d| d.as_millis() as u64).unwrap_or(0),
                        keep: keep.unwrap_or(0),
                        bandwidth_cap: bandwidth.unwrap_or(0),
                        max_size: max_size.unwrap_or(0),
                        window: window.unwrap_or_default(),
                        quorum: quorum.unwrap_or_default(),
                        spot_check: spot_check.unwrap_or(0),
                        media: feed.media.unwrap_or_default(),
                        keep_media: feed.keep_media.unwrap_or(0),
                        category: category.unwrap_or_default(),
                        account: account.options(),
                        max_temp: max_temp.unwrap_or(0.0),
                        lfs,
                    })
                    .await
                    .map_err(rpc("adding the target"))?
                    .into_inner();
                println!("added {} ({} {})", t.name, t.kind, t.url);
            }
            TargetCmd::Ls(args) => {
                let targets = admin
                    .list_targets(ListTargetsRequest {})
                    .await
                    .map_err(rpc("listing targets"))?
                    .into_inner()
                    .targets;
                if args.json {
                    return print_json(&targets.iter().map(target_json).collect());
                }
                println!(
                    "{:<24} {:<6} {:<10} {:<12} {:<11} {:<10} URL",
                    "NAME", "KIND", "EVERY", "LAST", "WINDOW", "CURRENT"
                );
                for t in targets {
                    let every = if t.every_ms == 0 {
                        "once".to_string()
                    } else {
                        humantime::format_duration(Duration::from_millis(t.every_ms)).to_string()
                    };
                    println!(
                        "{:<24} {:<6} {:<10} {:<12} {:<11} {:<10} {}",
                        t.name,
                        t.kind,
                        every,
                        t.last_state,
                        if t.window.is_empty() {
                            "always"
                        } else {
                            &t.window
                        },
                        if t.confirmed_at_ms == 0 {
                            "never".to_string()
                        } else {
                            ago(t.confirmed_at_ms)
                        },
                        t.url
                    );
                    if t.lfs {
                        println!("  with its Git LFS objects (--lfs)");
                    }
                    if !t.book.is_empty() {
                        println!(
                            "  book {}: release {}, newest upstream {}, checked {}",
                            t.book,
                            or_none(&t.release),
                            or_none(&t.upstream_newest),
                            if t.checked_at_ms == 0 {
                                "never".to_string()
                            } else {
                                ago(t.checked_at_ms)
                            }
                        );
                    }
                    if let Some(o) = &t.account_options {
                        println!(
                            "  account on {}: include {:?}, exclude {:?}{}{}{}{}",
                            o.forge,
                            o.include,
                            o.exclude,
                            if o.no_forks { ", no forks" } else { "" },
                            if o.no_archived { ", no archived" } else { "" },
                            if o.no_wikis { ", no wikis" } else { "" },
                            if o.token_file.is_empty() {
                                ""
                            } else {
                                ", with a token"
                            }
                        );
                    }
                    if !t.gone.is_empty() {
                        println!("  GONE UPSTREAM ({}): {}", t.account, t.gone);
                    }
                    if !t.stale.is_empty() {
                        println!("  STALE: {}", t.stale);
                    }
                }
            }
            TargetCmd::Import { list } => list.run(&mut admin).await?,
            TargetCmd::Export { list } => list.run(&mut admin).await?,
            TargetCmd::Rm { name } => {
                admin
                    .remove_target(RemoveTargetRequest { name: name.clone() })
                    .await
                    .map_err(rpc("removing the target"))?;
                println!("removed {name}");
            }
        }
        Ok(())
    }
}

/// How a git-account target (a whole forge account) is listed.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AccountArgs {
    /// The forge's API: github, gitlab or gitea (Forgejo too); default:
    /// from the URL's host (github.com, gitlab.com, codeberg.org).
    #[arg(long)]
    pub forge: Option<String>,
    /// A file on the commander holding the API token (never logged or
    /// shown; read at every listing, so it can be rotated in place).
    #[arg(long)]
    pub token_file: Option<String>,
    /// Mirror only repositories whose path in the account matches GLOB
    /// (repeatable; e.g. 'tools-*', 'infra/*').
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out repositories whose path matches GLOB (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Leave out forks.
    #[arg(long)]
    pub no_forks: bool,
    /// Leave out archived repositories.
    #[arg(long)]
    pub no_archived: bool,
    /// Leave out the repositories' wikis (mirrored where the forge has one).
    #[arg(long)]
    pub no_wikis: bool,
}

impl AccountArgs {
    /// The options, when any was given (the commander refuses them for a
    /// target that is not a git-account).
    fn options(self) -> Option<ark_proto::AccountOptions> {
        let given = self.forge.is_some()
            || self.token_file.is_some()
            || !self.include.is_empty()
            || !self.exclude.is_empty()
            || self.no_forks
            || self.no_archived
            || self.no_wikis;
        given.then(|| ark_proto::AccountOptions {
            forge: self.forge.unwrap_or_default(),
            token_file: self.token_file.unwrap_or_default(),
            include: self.include,
            exclude: self.exclude,
            no_forks: self.no_forks,
            no_archived: self.no_archived,
            no_wikis: self.no_wikis,
        })
    }
}

/// What a feed target does with its enclosures.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FeedArgs {
    /// A feed's enclosures: all (default), none, or newest:N (only the
    /// feed's newest N are fetched, on the first harvest and after).
    #[arg(long, value_name = "all|none|newest:N")]
    pub media: Option<String>,
    /// Landed enclosures a feed keeps (older ones are pruned and never
    /// fetched again); default: all.
    #[arg(long, value_name = "N")]
    pub keep_media: Option<u32>,
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

#[derive(Debug, clap::Args)]
pub struct RunNowCmd {
    name: String,
    #[arg(long)]
    json: bool,
}

impl RunNowCmd {
    pub async fn run(self, data: &Path, url: Option<&str>) -> anyhow::Result<()> {
        let mut admin = crate::admin::connect(data, url)?;
        let run = admin
            .run_now(RunNowRequest { name: self.name })
            .await
            .map_err(rpc("queueing the run"))?
            .into_inner();
        if self.json {
            return print_json(&run_json(&run));
        }
        println!(
            "run {} of {} is {} (created {})",
            run.id,
            run.target,
            run.state,
            ago(run.created_at_ms)
        );
        Ok(())
    }
}

/// Parses a rate: bytes/s as a number, or with a unit (`kB`, `KiB`, `MB`,
/// `MiB`, `GB`, `GiB`), an optional `/s`.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    parse_bytes(
        t.strip_suffix("/s").unwrap_or(t),
        text,
        "a rate (try 500KB/s, 5MiB/s or 1000000)",
    )
}

/// Parses a size: bytes as a number, or with a unit as in [`parse_rate`].
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_bytes(text, text, "a size (try 500MB, 2GiB or 1000000)")
}

fn parse_bytes(t: &str, text: &str, what: &str) -> Result<u64, String> {
    let t = t.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not {what}"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1_048_576.0,
        "g" | "gb" => 1e9,
        "gib" => 1_073_741_824.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (B, kB, KiB, MB, MiB, GB, GiB)"
            ))
        }
    };
    Ok((number * factor).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::{parse_rate, parse_size};

    #[test]
    fn rates_read_like_people_write_them() {
        assert_eq!(parse_rate("1000000"), Ok(1_000_000));
        assert_eq!(parse_rate("500KB/s"), Ok(500_000));
        assert_eq!(parse_rate("5MiB/s"), Ok(5 * 1_048_576));
        assert_eq!(parse_rate("1.5 MB"), Ok(1_500_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5 parsecs").is_err());
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("big").is_err_and(|e| e.contains("not a size")));
    }
}
