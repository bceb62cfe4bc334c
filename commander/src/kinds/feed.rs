//! The `rss` kind: a feed document is the run's body. Parsed before it
//! lands ([`crate::feed::check_file`]); its landing derives the entries
//! (files made durable before the ledger commits, rows in the landing
//! transaction) and queues the enclosures as media runs.

use std::sync::{Arc, Mutex};

use ark_core::Kind;
use rusqlite::Connection;

use super::{CheckCtx, Derived, KindSpec};
use crate::archive::{Archive, Version};
use crate::state::Store;
use crate::Result;

#[derive(Debug)]
pub struct Feed {
    /// The snapshot the landing's check parsed, by its BLAKE3 and URL, for
    /// the landing's derivation: a snapshot is parsed once per landing.
    /// One slot: a derivation that finds another snapshot's there parses
    /// its own file again.
    checked: Mutex<Option<(String, String, Arc<crate::feed::Parsed>)>>,
}

/// The `rss` kind's spec.
pub static FEED: Feed = Feed {
    checked: Mutex::new(None),
};

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
        let v = ctx.version;
        Ok(match crate::feed::check_file(ctx.data, &v.url)? {
            Ok(parsed) => {
                let parsed = (v.blake3.clone(), v.url.clone(), Arc::new(parsed));
                *self.checked.lock().unwrap_or_else(|e| e.into_inner()) = Some(parsed);
                None
            }
            Err(why) => Some(format!(
                "the commander's feed check refused {}: {why}",
                v.url
            )),
        })
    }

    fn derive(
        &self,
        archive: &Archive,
        store: &Store,
        version: &Version,
        now: i64,
    ) -> Result<Derived> {
        let parsed = {
            let mut slot = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            match slot.take() {
                Some((blake3, url, parsed)) if blake3 == version.blake3 && url == version.url => {
                    Some(parsed)
                }
                other => {
                    *slot = other;
                    None
                }
            }
        };
        crate::feed::derive(archive, store, version, parsed, now).map(Derived::Feed)
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
