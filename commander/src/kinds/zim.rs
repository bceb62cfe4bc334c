//! The `zim` kind: a Kiwix archive. Checked deep before landing
//! ([`crate::zim_check`]), landed joined when split, listed in
//! `zim/library.xml` after every landing.

use ark_core::Kind;
use rusqlite::Connection;

use super::{CheckCtx, KindSpec};
use crate::archive::{Archive, NewVersion};
use crate::state::Store;
use crate::{CommanderError, Result};

#[derive(Debug)]
pub struct Zim;

impl KindSpec for Zim {
    fn kind(&self) -> Kind {
        Kind::Zim
    }

    fn check(&self, ctx: &CheckCtx<'_>) -> Result<Option<String>> {
        let report = crate::zim_check::check(ctx.data)
            .map_err(CommanderError::io("checking", ctx.data.to_path_buf()))?;
        Ok((!report.ok()).then(|| {
            format!(
                "the commander's ZIM check refused {}: {}",
                ctx.version.url,
                report.reason()
            )
        }))
    }

    fn version_path(
        &self,
        archive: &Archive,
        conn: &Connection,
        v: &NewVersion,
        now: i64,
    ) -> Result<String> {
        // A split archive lands joined, as one .zim.
        let mut file = crate::archive::file_name_from_url(&v.url);
        if let Some(stem) = file.strip_suffix(".zimaa") {
            file = format!("{stem}.zim");
        }
        archive.stamped_version_path(conn, v, &file, None, now)
    }

    fn after_landing(&self, archive: &Archive, store: &Store) -> Result<()> {
        archive.write_zim_library(store).map(drop)
    }
}

impl Archive {
    /// Rewrites `zim/library.xml` (atomically) from the ledger: the newest
    /// landed version of every ZIM target, so `kiwix-serve --library
    /// archive/zim/library.xml` serves the archive as it is.
    /// Returns whether the file changed (it is written only then, so an
    /// idle archive keeps its mtimes).
    pub fn write_zim_library(&self, store: &Store) -> Result<bool> {
        let versions = store.read(|c| crate::archive::landed(c, None))?;
        let mut seen = std::collections::HashSet::new();
        let mut books = String::new();
        // kiwix-serve needs files: ZIMs in an object store are listed only
        // where the bucket is mounted.
        let servable = self.backend.local_root().is_some() || self.zim_mount.is_some();
        for v in versions
            .iter()
            .filter(|v| servable && v.kind == ark_core::Kind::Zim)
        {
            if !seen.insert(v.target.clone()) {
                continue; // an older version of a target already listed
            }
            let Ok(head) = self.backend.read_at(&v.path, 0, 24) else {
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
            // Relative to the library file when the ZIMs are files beside
            // it; with an object store, under where it is mounted.
            let relative = match &self.zim_mount {
                None => v.path.strip_prefix("zim/").unwrap_or(&v.path).to_string(),
                Some(mount) => mount.join(&v.path).display().to_string(),
            };
            books.push_str(&format!(
                "  <book id=\"{id}\" path=\"{}\" name=\"{}\" title=\"{}\" size=\"{}\"/>\n",
                crate::library::xml_escape(&relative),
                crate::library::xml_escape(&v.target),
                crate::library::xml_escape(&v.target),
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
        crate::library::write_if_changed(&path, xml.as_bytes())
            .map_err(CommanderError::io("writing", &path))
    }
}
