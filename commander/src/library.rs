//! What is written from the ledger for the archive's readers:
//! `index.json` (every landed version; the Kiwix library is the zim kind's,
//! in `kinds/zim.rs`). Each is written only when its
//! content changes, so an idle archive keeps its mtimes.

use std::path::Path;

use crate::archive::{landed, Archive, INDEX_FILE};
use crate::state::Store;
use crate::{CommanderError, Result};

impl Archive {
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

/// `s` escaped for an XML attribute or text (library.xml, OPML).
pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
