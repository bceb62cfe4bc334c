//! What is written from the ledger for the archive's readers: the Kiwix
//! library (`zim/library.xml`, so kiwix-serve serves the archive as it is)
//! and `index.json` (every landed version). Each is written only when its
//! content changes, so an idle archive keeps its mtimes.

use std::path::Path;

use crate::archive::{landed, Archive, INDEX_FILE};
use crate::state::Store;
use crate::{CommanderError, Result};

impl Archive {
    /// Rewrites `zim/library.xml` (atomically) from the ledger: the newest
    /// landed version of every ZIM target, so `kiwix-serve --library
    /// archive/zim/library.xml` serves the archive as it is.
    /// Returns whether the file changed (it is written only then, so an
    /// idle archive keeps its mtimes).
    pub fn write_zim_library(&self, store: &Store) -> Result<bool> {
        let versions = store.read(|c| landed(c, None))?;
        let mut seen = std::collections::HashSet::new();
        let mut books = String::new();
        for v in versions.iter().filter(|v| v.kind == ark_core::Kind::Zim) {
            if !seen.insert(v.target.clone()) {
                continue; // an older version of a target already listed
            }
            let file = self.root.join(&v.path);
            let mut head = [0u8; 24];
            let Ok(()) = std::fs::File::open(&file).and_then(|f| {
                use std::os::unix::fs::FileExt;
                f.read_exact_at(&mut head, 0)
            }) else {
                continue;
            };
            let u = &head[8..24];
            let id = format!(
                "{}-{}-{}-{}-{}",
                hex::encode(&u[0..4]),
                hex::encode(&u[4..6]),
                hex::encode(&u[6..8]),
                hex::encode(&u[8..10]),
                hex::encode(&u[10..16])
            );
            let relative = v.path.strip_prefix("zim/").unwrap_or(&v.path);
            books.push_str(&format!(
                "  <book id=\"{id}\" path=\"{}\" name=\"{}\" title=\"{}\" size=\"{}\"/>\n",
                xml_escape(relative),
                xml_escape(&v.target),
                xml_escape(&v.target),
                v.size.div_ceil(1024)
            ));
        }
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- written by ark-commander from its ledger; do not edit -->\n<library version=\"20110515\">\n{books}</library>\n"
        );
        let path = self.root.join("zim").join("library.xml");
        if books.is_empty() && !path.exists() {
            return Ok(false);
        }
        write_if_changed(&path, xml.as_bytes()).map_err(CommanderError::io("writing", &path))
    }

    /// Rewrites [`INDEX_FILE`] (atomically, and only when its content
    /// changes) from the ledger: every landed version, oldest first.
    /// Returns whether the file changed.
    pub fn write_index(&self, store: &Store) -> Result<bool> {
        let mut versions = store.read(|c| landed(c, None))?;
        versions.reverse();
        let list: Vec<serde_json::Value> = versions
            .iter()
            .map(|v| {
                serde_json::json!({
                    "id": v.id, "kind": v.kind, "target": v.target, "path": v.path,
                    "size": v.size, "blake3": v.blake3, "landed_at_ms": v.landed_at_ms,
                })
            })
            .collect();
        let json = serde_json::json!({
            "ark_index": 1,
            "written_by": "ark-commander ingest, from its ledger; do not edit",
            "versions": list,
        });
        let mut text =
            serde_json::to_vec_pretty(&json).map_err(|e| CommanderError::Invalid(e.to_string()))?;
        text.push(b'\n');
        let path = self.root.join(INDEX_FILE);
        write_if_changed(&path, &text).map_err(CommanderError::io("writing", &path))
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes `bytes` to `path` atomically unless it already holds exactly
/// them; returns whether it wrote. Files the commander derives from its
/// ledger go through here, so re-deriving them leaves an unchanged archive
/// untouched (mtimes included) and rsync or a backup sees no change.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    ark_core::write_atomic(path, bytes, 0o644)?;
    Ok(true)
}
