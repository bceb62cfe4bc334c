//! `ark-commander archive ls|verify|check-names`: the archive as the ledger
//! records it, a re-hash of every landed byte, and its names' portability. Both open the data dir directly.

use std::path::Path;

use anyhow::Context;
use serde_json::json;

use super::output::{human_bytes, print_json, ListArgs};
use crate::archive::{self, Archive};
use crate::config::CommanderConfig;
use crate::state::Store;

#[derive(Debug, clap::Subcommand)]
pub enum ArchiveCmd {
    /// List landed versions, newest first.
    Ls {
        #[command(flatten)]
        list: ListArgs,
        /// Only this target's versions.
        #[arg(long)]
        target: Option<String>,
    },
    /// Re-hash every landed file and compare with the ledger and its
    /// manifest; report files nobody landed. Exit 1 when anything is wrong.
    /// With `--suspects`: list instead the landed versions that only a
    /// suspect agent vouches for (re-harvest them with `run-now`).
    Verify {
        #[command(flatten)]
        list: ListArgs,
        #[arg(long)]
        suspects: bool,
    },
    /// One landed version: where it came from and every agent that vouched
    /// for it, with the manifest each signed.
    Show {
        version: i64,
        #[arg(long)]
        json: bool,
    },
    /// Report every landed name that would not survive a copy to exFAT,
    /// NTFS or an SMB share (too long, a refused character, a reserved
    /// device name, not NFC, two names differing only by case). Exit 1 when
    /// any.
    CheckNames(ListArgs),
    /// Copy this filesystem archive into an object store (`s3://bucket/
    /// prefix`, reached with the `[s3]` settings of commander.toml), every
    /// object read back and hashed there after the copy. Resumable (run it
    /// again after a stop) and idempotent. Then set `archive` to the same
    /// URL. Exit 1 when a source file is damaged.
    Migrate {
        /// The store: `s3://bucket/prefix`.
        #[arg(long)]
        to: String,
        #[arg(long)]
        json: bool,
    },
}

/// Opens the ledger and the archive of data dir `data` directly (the NAS
/// side: no running commander needed; SQLite's WAL lets one run beside).
pub(super) fn open(data: &Path) -> anyhow::Result<(Store, Archive, CommanderConfig)> {
    let config = CommanderConfig::load(data)?;
    let state = data.join(crate::server::STATE_FILE);
    anyhow::ensure!(
        state.exists(),
        "{} not found: no commander has run with data dir {} (pass --data)",
        state.display(),
        data.display()
    );
    let store = Store::open(&state).with_context(|| format!("opening {}", state.display()))?;
    let archive = Archive::open(&config, data)?;
    Ok((store, archive, config))
}

fn version_json(v: &archive::Version, archive: &Archive) -> serde_json::Value {
    json!({"id": v.id, "target": v.target, "kind": v.kind, "run": v.run_id, "path": v.path,
           "absolute_path": archive.locate(&v.path), "size": v.size, "blake3": v.blake3,
           "agent": v.agent, "url": v.url, "etag": v.etag, "source": v.source,
           "linked_from": v.linked_from, "landed_at_ms": v.landed_at_ms})
}

impl ArchiveCmd {
    pub fn run(self, data: &Path) -> anyhow::Result<()> {
        let (store, archive, config) = open(data)?;
        match self {
            ArchiveCmd::Ls { list, target } => ls(&store, &archive, &list, target.as_deref()),
            ArchiveCmd::CheckNames(list) => {
                let report = crate::names::check_names(archive.root());
                if list.json {
                    print_json(&serde_json::to_value(&report)?)?;
                } else {
                    for (path, why) in &report.problems {
                        println!("NAME  {path}: {why}");
                    }
                    for clash in &report.clashes {
                        println!(
                            "CLASH {} (the same name on a case-insensitive filesystem)",
                            clash.join(" / ")
                        );
                    }
                    println!(
                        "{} names, {} not portable, {} clashes",
                        report.names,
                        report.problems.len(),
                        report.clashes.len()
                    );
                }
                anyhow::ensure!(
                    report.clean(),
                    "some names in {} would not survive a copy to exFAT, NTFS or SMB",
                    archive.root().display()
                );
                Ok(())
            }
            ArchiveCmd::Show { version, json } => show(&store, &archive, version, json),
            ArchiveCmd::Migrate { to, json } => migrate(&store, &archive, &config, data, &to, json),
            ArchiveCmd::Verify {
                list,
                suspects: true,
            } => suspects(&store, &archive, &list),
            ArchiveCmd::Verify { list, .. } => {
                let progress = VerifyProgress::new(&store, list.json)?;
                let report =
                    archive.verify(&store, |checked| progress.checked(checked, !list.json))?;
                progress.finish();
                if list.json {
                    print_json(&serde_json::to_value(&report)?)?;
                } else {
                    print_problems(&report);
                    println!(
                        "{} versions ok ({}), {} bad, {} stray files",
                        report.ok,
                        human_bytes(report.bytes),
                        report.bad.len(),
                        report.stray.len()
                    );
                }
                ensure_clean(&report)
            }
        }
    }
}

/// `archive migrate --to s3://…`.
fn migrate(
    store: &Store,
    archive: &Archive,
    config: &CommanderConfig,
    data: &Path,
    to: &str,
    json: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        archive.backend().local_root().is_some(),
        "the archive is already in an object store ({}): `archive migrate` copies a filesystem archive",
        archive.location()
    );
    let dest = crate::backend::s3::S3Backend::open(to, &config.s3, data)?;
    let progress = VerifyProgress::new(store, json)?;
    let report = crate::migrate::migrate(store, archive, &dest, |v, size| {
        progress.advanced(&v.path, size)
    })?;
    progress.finish();
    if json {
        print_json(&serde_json::to_value(&report)?)?;
    } else {
        for damaged in &report.damaged {
            println!("DAMAGED {damaged}");
        }
        println!(
            "{} versions copied and verified in {} ({} sent), {} verified before",
            report.copied,
            report.dest,
            human_bytes(report.bytes),
            report.already
        );
    }
    anyhow::ensure!(
        report.damaged.is_empty(),
        "{} versions were not copied: their files do not match the ledger (run `archive verify`, \
         then `run-now` their targets), then migrate again",
        report.damaged.len()
    );
    if !json {
        println!("the store holds the whole archive: set archive = \"{to}\" in commander.toml");
    }
    Ok(())
}

/// The agents that vouched for `version` (harvested it, or confirmed it).
fn vouchers(store: &Store, version: i64) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(store.read(|c| {
        let mut stmt = c.prepare(
            "SELECT w.agent, w.role, w.run_id, w.cert_sha256, w.manifest, COALESCE(a.suspect, '')
             FROM vouchers w LEFT JOIN agents a ON a.name = w.agent
             WHERE w.version_id = ?1 ORDER BY w.role DESC, w.agent",
        )?;
        let rows = stmt.query_map([version], |r| {
            let manifest: Vec<u8> = r.get(4)?;
            Ok(json!({"agent": r.get::<_, String>(0)?, "role": r.get::<_, String>(1)?,
                      "run": r.get::<_, i64>(2)?, "cert_sha256": r.get::<_, String>(3)?,
                      "suspect": r.get::<_, String>(5)?,
                      "manifest": serde_json::from_slice::<serde_json::Value>(&manifest).unwrap_or_default()}))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })?)
}

/// `archive show VERSION`.
fn show(store: &Store, archive: &Archive, id: i64, json_out: bool) -> anyhow::Result<()> {
    let version = store
        .read(|c| Ok(archive::version_by_id(c, id).ok()))?
        .ok_or_else(|| {
            anyhow::anyhow!("no version {id} in the ledger (see `ark-commander archive ls`)")
        })?;
    let vouchers = vouchers(store, id)?;
    if json_out {
        let mut value = version_json(&version, archive);
        value["vouchers"] = serde_json::Value::Array(vouchers);
        return print_json(&value);
    }
    println!(
        "version {} of {}: {} ({} bytes, BLAKE3 {})",
        version.id, version.target, version.path, version.size, version.blake3
    );
    println!(
        "from {} (run {}, etag {:?})",
        version.url, version.run_id, version.etag
    );
    for v in &vouchers {
        println!(
            "  {:<10} {} (run {}){}",
            v["role"].as_str().unwrap_or_default(),
            v["agent"].as_str().unwrap_or_default(),
            v["run"],
            match v["suspect"].as_str() {
                Some("") | None => String::new(),
                Some(why) => format!(" — SUSPECT: {why}"),
            }
        );
    }
    Ok(())
}

/// `archive verify --suspects`: landed versions no trusted agent vouches
/// for. Exit 1 when there are any.
fn suspects(store: &Store, archive: &Archive, list: &ListArgs) -> anyhow::Result<()> {
    let landed = store.read(|c| archive::landed(c, None))?;
    let mut found = Vec::new();
    for v in landed {
        let vouchers = vouchers(store, v.id)?;
        let trusted = vouchers
            .iter()
            .any(|w| w["suspect"].as_str().is_some_and(str::is_empty));
        // Versions from before vouchers were kept name their agent only.
        let agent_trusted = vouchers.is_empty()
            && !store.read(|c| crate::scheduler::quorum::is_suspect(c, &v.agent))?;
        if !trusted && !agent_trusted {
            found.push(v);
        }
    }
    if list.json {
        print_json(&serde_json::Value::Array(
            found.iter().map(|v| version_json(v, archive)).collect(),
        ))?;
    } else {
        for v in &found {
            println!(
                "SUSPECT {} (version {} of {}, by {}): re-harvest with `ark-commander run-now {}`",
                v.path, v.id, v.target, v.agent, v.target
            );
        }
        println!(
            "{} landed versions vouched for only by suspect agents",
            found.len()
        );
    }
    anyhow::ensure!(
        found.is_empty(),
        "{} versions are vouched for only by suspect agents",
        found.len()
    );
    Ok(())
}

/// One line for a version as verification checked it.
fn checked_line(checked: &crate::verify::Checked) -> String {
    match &checked.problem {
        None => format!("ok    {}", checked.version.path),
        Some(p) => format!(
            "BAD   {} (version {} of {}): {p}",
            checked.version.path, checked.version.id, checked.version.target
        ),
    }
}

/// Re-hashing a NAS takes a while: a bar by bytes on a terminal (lines
/// printed above it), plain lines otherwise.
pub(super) struct VerifyProgress {
    bar: indicatif::ProgressBar,
}

impl VerifyProgress {
    pub(super) fn new(store: &Store, json: bool) -> anyhow::Result<Self> {
        use std::io::IsTerminal;
        let total: u64 = store
            .read(|c| archive::landed(c, None))?
            .iter()
            .map(|v| v.size)
            .sum();
        let bar = if json || !std::io::stderr().is_terminal() {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(total).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {wide_msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            )
        };
        Ok(Self { bar })
    }

    /// `size` more bytes done, at `path`.
    pub(super) fn advanced(&self, path: &str, size: u64) {
        self.bar.inc(size);
        self.bar.set_message(path.to_string());
    }

    /// One version checked; `print` its line.
    pub(super) fn checked(&self, checked: &crate::verify::Checked, print: bool) {
        self.bar.inc(checked.version.size);
        self.bar.set_message(checked.version.path.clone());
        if print {
            let line = checked_line(checked);
            if self.bar.is_hidden() {
                println!("{line}");
            } else {
                self.bar.println(line);
            }
        }
    }

    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The problems verification found beyond bad versions, one a line.
pub(super) fn print_problems(report: &crate::verify::VerifyReport) {
    for stray in &report.stray {
        println!("STRAY {stray}: no landed version accounts for it");
    }
    for entry in &report.missing {
        println!("MISSING {entry}: a feed entry the ledger lists");
    }
    for mirror in &report.bad_mirrors {
        println!("BAD   mirror {mirror}");
    }
    for dir in &report.empty_dirs {
        println!("EMPTY {dir}: a version directory with nothing in it (a failed landing's debris)");
    }
    for file in &report.orphaned {
        println!("ORPHAN {file}: the quarantine of a run that has ended");
    }
}

/// The error (exit 1) for an archive that does not match its ledger.
pub(super) fn ensure_clean(report: &crate::verify::VerifyReport) -> anyhow::Result<()> {
    if !report.clean() {
        anyhow::bail!(
            "the archive does not match its ledger: {} bad versions, {} stray files, {} missing entries, \
             {} bad mirrors (listed above). Re-run the affected targets (`ark-commander run-now TARGET`) \
             to land a good copy",
            report.bad.len(),
            report.stray.len(),
            report.missing.len(),
            report.bad_mirrors.len()
        );
    }
    Ok(())
}

/// `archive ls`.
fn ls(
    store: &Store,
    archive: &Archive,
    list: &ListArgs,
    target: Option<&str>,
) -> anyhow::Result<()> {
    let versions = store.read(|c| archive::landed(c, target))?;
    if list.json {
        return print_json(&json!(versions
            .iter()
            .map(|v| version_json(v, archive))
            .collect::<Vec<_>>()));
    }
    println!(
        "{:<5} {:<16} {:>10}  {:<16}  {:<8} PATH",
        "ID", "TARGET", "SIZE", "BLAKE3", "SOURCE"
    );
    for v in &versions {
        println!(
            "{:<5} {:<16} {:>10}  {:<16}  {:<8} {}",
            v.id,
            v.target,
            human_bytes(v.size),
            &v.blake3[..16.min(v.blake3.len())],
            v.source,
            v.path
        );
    }
    let total: u64 = versions.iter().map(|v| v.size).sum();
    println!(
        "{} versions, {} (hard links counted once per version) in {}",
        versions.len(),
        human_bytes(total),
        archive.location()
    );
    Ok(())
}
