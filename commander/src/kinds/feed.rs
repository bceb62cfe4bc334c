//! The `rss` kind: a feed document is the run's body. Parsed before it
//! lands ([`crate::feed::check_file`]); its landing derives the entries
//! (files made durable before the ledger commits, rows in the landing
//! transaction) and queues the enclosures as media runs.

use ark_core::Kind;
use rusqlite::Connection;

use super::{CheckCtx, Derived, KindSpec};
use crate::archive::{Archive, Version};
use crate::state::Store;
use crate::Result;

#[derive(Debug)]
pub struct Feed;

impl KindSpec for Feed {
    fn kind(&self) -> Kind {
        Kind::Rss
    }

    fn job_max_size(&self, _target_max: u64) -> u64 {
        // A feed is capped by what a feed can reasonably be; the target's
        // --max-size is for its enclosures.
        crate::feed::MAX_FEED_BYTES
    }

    fn check(&self, ctx: &CheckCtx<'_>) -> Result<Option<String>> {
        Ok(
            crate::feed::check_file(ctx.data, &ctx.version.url)?.map(|why| {
                format!(
                    "the commander's feed check refused {}: {why}",
                    ctx.version.url
                )
            }),
        )
    }

    fn derive(
        &self,
        archive: &Archive,
        store: &Store,
        version: &Version,
        now: i64,
    ) -> Result<Derived> {
        crate::feed::derive(archive, store, version, now).map(Derived::Feed)
    }

    fn record(&self, tx: &Connection, version: &Version, derived: Derived, now: i64) -> Result<()> {
        if let Derived::Feed(derived) = derived {
            let r = crate::feed::record(tx, &derived, now)?;
            tracing::info!(target = %version.target, new = r.new, republished = r.republished,
                media = r.media_queued, "feed entries derived");
        }
        Ok(())
    }

    fn deriving_dirs(&self, archive: &Archive, version: &Version) -> Vec<std::path::PathBuf> {
        vec![archive
            .root()
            .join(crate::feed::feed_dir(&version.target))
            .join("entries")]
    }

    fn derived_files(&self, store: &Store) -> Result<Vec<String>> {
        crate::feed::entry_files(store)
    }

    fn rolled_back(&self, archive: &Archive, store: &Store, target: &str) -> Result<()> {
        crate::feed::remove_unrecorded_entries(archive, store, target).map(drop)
    }

    fn recover(&self, archive: &Archive, store: &Store, now: i64) -> Result<()> {
        crate::feed::resync_all(archive, store, now).map(drop)
    }
}
