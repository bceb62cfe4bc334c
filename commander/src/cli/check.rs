//! `ark-commander check zim FILE…`: the commander's deep check, offline.
//! Prints `ok FILE` or `FAIL FILE: reason` per file; exits 1 if any fails.

use std::path::PathBuf;

use serde_json::json;

use super::output::print_json;

#[derive(Debug, clap::Subcommand)]
pub enum CheckCmd {
    /// Verify ZIM archives: header, MD5 checksum, dirent pointers and
    /// order, title index, cluster pointers and offsets, mimetypes.
    Zim {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

impl CheckCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let CheckCmd::Zim { files, json } = self;
        let mut failed = 0;
        let mut results = Vec::new();
        for file in &files {
            let (ok, reason, entries) = match crate::zim_check::check(file) {
                Ok(report) => (report.ok(), report.reason(), report.entries),
                Err(e) => (false, format!("cannot read it: {e}"), 0),
            };
            failed += usize::from(!ok);
            if json {
                results.push(json!({"file": file, "ok": ok, "reason": reason, "entries": entries}));
            } else if ok {
                println!("ok   {} ({entries} entries)", file.display());
            } else {
                println!("FAIL {}: {reason}", file.display());
            }
        }
        if json {
            print_json(&json!(results))?;
        }
        if failed > 0 {
            anyhow::bail!(
                "{failed} of {} files failed the ZIM check (reasons above); fetch them again or report the archive to its publisher",
                files.len()
            );
        }
        Ok(())
    }
}
