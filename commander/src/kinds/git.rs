//! The `git` kind: a repository mirrored. The body is a bundle of what the
//! commander's mirror lacks (the job carries the mirror's refs); it is
//! checked against that mirror (every object hashed, every ref connected)
//! and the mirror's refs move before the bundle lands as the version. A
//! bundle is a delta against one mirror: never linked across targets.

use std::collections::HashMap;
use std::path::Path;

use ark_core::Kind;
use rusqlite::Connection;

use super::{CheckCtx, KindSpec};
use crate::archive::{Archive, NewVersion};
use crate::state::Store;
use crate::Result;

#[derive(Debug)]
pub struct Git;

impl KindSpec for Git {
    fn kind(&self) -> Kind {
        Kind::Git
    }

    fn schemes(&self) -> &'static [&'static str] {
        // git:// is `git daemon`'s protocol.
        &["http", "https", "git"]
    }

    fn known_refs(&self, archive_root: Option<&Path>, url: &str) -> HashMap<String, String> {
        let Some(root) = archive_root else {
            return HashMap::new();
        };
        let mirror = root.join(crate::archive::git_mirror_path(url));
        match crate::git_check::landed_refs(&mirror) {
            Ok(refs) => refs.into_iter().collect(),
            Err(e) => {
                tracing::warn!(mirror = %mirror.display(), "reading the mirror's refs: {e}; the agent will send everything");
                HashMap::new()
            }
        }
    }

    fn links_across_targets(&self) -> bool {
        false
    }

    fn check(&self, ctx: &CheckCtx<'_>) -> Result<Option<String>> {
        let v = ctx.version;
        let mirror = ctx
            .archive
            .absolute(&crate::archive::git_mirror_path(&v.url));
        let scratch = ctx
            .archive
            .quarantine()
            .join(format!("run-{}.git-check", v.run_id));
        let checked = match crate::git_check::check_bundle(ctx.data, &mirror, &scratch) {
            Ok(checked) => checked,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Ok(Some(format!(
                    "the commander's git check refused {}: {e}",
                    v.url
                )));
            }
        };
        // The mirror moves first, so a run that reads `succeeded` has a
        // mirror that shows it. A crash before the bundle lands leaves the
        // mirror ahead of the ledger with verified objects only; the retried
        // upload applies again (changing nothing) and lands.
        let of = crate::upload::BundleOf {
            target: &v.target,
            url: &v.url,
            run_id: v.run_id,
            stamp: crate::archive::stamp(ctx.now),
        };
        let applied = crate::upload::apply_bundle(ctx.store, &of, &checked, &mirror, ctx.now);
        let _ = std::fs::remove_dir_all(&scratch);
        applied.map(|()| None)
    }

    fn version_path(
        &self,
        archive: &Archive,
        conn: &Connection,
        v: &NewVersion,
        now: i64,
    ) -> Result<String> {
        // The bundle lands beside the mirror it updates:
        // git/<host>/<path>.bundles/<stamp>/<name>.bundle.
        let (stem, name) = crate::archive::git_stem(&v.url);
        let dir = format!("{stem}.bundles");
        archive.stamped_version_path(conn, v, &format!("{name}.bundle"), Some(&dir), now)
    }

    fn recover(&self, archive: &Archive, store: &Store, now: i64) -> Result<()> {
        archive.catch_up_mirrors(store, now)
    }
}
