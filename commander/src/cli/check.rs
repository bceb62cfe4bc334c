//! `ark-commander check zim|feed FILE…` and `check git DIR…`: the commander's deep checks,
//! offline. Prints `ok FILE` or `FAIL FILE: reason` per file; exits 1 if any
//! fails.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::output::print_json;

#[derive(Debug, clap::Subcommand)]
pub enum CheckCmd {
    /// Verify ZIM archives: header, MD5 checksum, dirent pointers and
    /// order, title index, cluster pointers and offsets, mimetypes.
    Zim(Files),
    /// Verify feed documents (RSS, Atom, JSON Feed): size, no entity
    /// declarations, parses, entry count.
    Feed(Files),
    /// Verify bare Git mirrors: every pack's checksum, every object's hash,
    /// every ref resolves, everything reachable is present.
    Git(Files),
}

#[derive(Debug, clap::Args)]
pub struct Files {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

/// One file's verdict: Ok(what was found) or Err(why it fails).
type Verdict = Result<String, String>;

fn zim(file: &Path) -> Verdict {
    match crate::zim_check::check(file) {
        Ok(report) if report.ok() => Ok(format!("{} entries", report.entries)),
        Ok(report) => Err(report.reason()),
        Err(e) => Err(format!("cannot read it: {e}")),
    }
}

fn feed(file: &Path) -> Verdict {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read it: {e}"))?;
    let base = format!("file://{}", file.display());
    let parsed = crate::feed::parse(&bytes, &base)?;
    let enclosures: usize = parsed.entries.iter().map(|e| e.enclosures.len()).sum();
    Ok(format!(
        "{} feed {:?}, {} entries, {enclosures} enclosures",
        parsed.format,
        parsed.title,
        parsed.entries.len()
    ))
}

fn git(dir: &Path) -> Verdict {
    crate::git_check::check_repo(dir)
        .map(|r| {
            format!(
                "{} refs, {} objects reachable, all hashed",
                r.refs, r.objects
            )
        })
        .map_err(|e| e.to_string())
}

impl CheckCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let (kind, check, args, fix): (&str, fn(&Path) -> Verdict, Files, &str) = match self {
            CheckCmd::Zim(args) => (
                "ZIM",
                zim,
                args,
                "fetch them again or report the archive to its publisher",
            ),
            CheckCmd::Git(args) => (
                "git",
                git,
                args,
                "re-mirror the repository (`ark-commander run-now TARGET`) or restore it from a backup",
            ),
            CheckCmd::Feed(args) => (
                "feed",
                feed,
                args,
                "the publisher's feed is broken; Ark keeps the last good snapshot",
            ),
        };
        let mut failed = 0;
        let mut results = Vec::new();
        for file in &args.files {
            let verdict = check(file);
            failed += usize::from(verdict.is_err());
            if args.json {
                let (ok, detail) = match &verdict {
                    Ok(d) => (true, d.as_str()),
                    Err(r) => (false, r.as_str()),
                };
                results.push(json!({"file": file, "ok": ok, "detail": detail}));
                continue;
            }
            match verdict {
                Ok(detail) => println!("ok   {} ({detail})", file.display()),
                Err(reason) => println!("FAIL {}: {reason}", file.display()),
            }
        }
        if args.json {
            print_json(&json!(results))?;
        }
        if failed > 0 {
            anyhow::bail!(
                "{failed} of {} files failed the {kind} check (reasons above); {fix}",
                args.files.len()
            );
        }
        Ok(())
    }
}
