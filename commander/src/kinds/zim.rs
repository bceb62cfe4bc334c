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
