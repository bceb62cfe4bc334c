//! `archive check-names`: every name under the archive checked against what
//! exFAT, NTFS and SMB take (see `ark_core::path::portability_problem`), and
//! every directory checked for two names that a case-insensitive filesystem
//! would take for one. Ark builds its names to pass (`safe_segment`); this
//! finds what an older version, or a person, put there.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

/// What `check-names` found.
#[derive(Debug, Default, Serialize)]
pub struct NameReport {
    /// Names looked at.
    pub names: usize,
    /// (path relative to the archive, what is wrong).
    pub problems: Vec<(String, String)>,
    /// Paths that differ only by case or Unicode normalisation.
    pub clashes: Vec<Vec<String>>,
}

impl NameReport {
    pub fn clean(&self) -> bool {
        self.problems.is_empty() && self.clashes.is_empty()
    }
}

/// Checks every name under `root` (the quarantine aside: its names are
/// Ark's own and never copied).
pub fn check_names(root: &Path) -> NameReport {
    let mut report = NameReport::default();
    walk(root, root, &mut report);
    report
}

fn walk(root: &Path, dir: &Path, report: &mut NameReport) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut folded: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path == root.join(".ark") {
            continue;
        }
        let relative = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        report.names += 1;
        let name = entry.file_name();
        match name.to_str() {
            None => report
                .problems
                .push((relative.clone(), "is not valid UTF-8".into())),
            Some(name) => {
                if let Some(why) = ark_core::path::portability_problem(name) {
                    report.problems.push((relative.clone(), why));
                }
                folded
                    .entry(ark_core::path::fold(name))
                    .or_default()
                    .push(relative.clone());
            }
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &path, report);
        }
    }
    report
        .clashes
        .extend(folded.into_values().filter(|names| names.len() > 1));
}
