//! The `media` kind: one enclosure of a feed, queued by the feed's landing.
//! It lands once, beside its feed's other media, under the name its entry
//! already points to; it is the feed's history (never pruned, never
//! "unchanged"), and carries no validators of its own.

use ark_core::Kind;
use rusqlite::Connection;

use super::{CheckCtx, Derived, KindSpec};
use crate::archive::{Archive, NewVersion, Version};
use crate::Result;

#[derive(Debug)]
pub struct Media;

impl KindSpec for Media {
    fn kind(&self) -> Kind {
        Kind::Media
    }

    fn conditional(&self) -> bool {
        false
    }

    fn unchanged_when_latest(&self) -> bool {
        false
    }

    fn check(&self, ctx: &CheckCtx<'_>) -> Result<Option<String>> {
        super::html_instead_of_file(ctx.version, ctx.data)
    }

    fn version_path(
        &self,
        archive: &Archive,
        conn: &Connection,
        v: &NewVersion,
        _now: i64,
    ) -> Result<String> {
        let relative = crate::feed::media_path(conn, &v.target, &v.url)?;
        super::unclaimed(archive, conn, relative)
    }

    fn shared_dir(&self) -> bool {
        true
    }

    fn retained(&self) -> bool {
        false
    }

    fn record(
        &self,
        tx: &Connection,
        version: &Version,
        _derived: Derived,
        now: i64,
    ) -> Result<()> {
        crate::feed::media_landed(tx, version, now)
    }
}
