//! The `git` kind: a repository mirrored. The body is a bundle of what the
//! commander's mirror lacks (the job carries the mirror's refs); it is
//! checked against that mirror (every object hashed, every ref connected)
//! and the mirror's refs move before the bundle lands as the version. A
//! bundle is a delta against one mirror: never linked across targets.

use std::collections::HashMap;
use std::path::Path;

use ark_core::formats::bundle::Refs;
use ark_core::Kind;
use rusqlite::Connection;

use super::{CheckCtx, Derived, KindSpec};
use crate::archive::{Archive, NewVersion, Version};
use crate::state::Store;
use crate::{CommanderError, Result};

#[derive(Debug)]
pub struct Git;

/// Most refs a lease carries whole: a set this small (about 70 bytes a ref,
/// so ≤ 70 KB) costs less inline than a second round trip, and it is more
/// than most repositories have. A larger set goes by digest and count, and
/// the agent asks `KnownRefs` for it when it needs it.
pub const KNOWN_REFS_INLINE: usize = 1_000;

/// Refs in one `KnownRefs` page: about 700 KB, well under gRPC's 4 MiB
/// message limit.
pub const KNOWN_REFS_PAGE: usize = 10_000;

/// What a lease says of the mirror's refs: the set itself when it has at
/// most [`KNOWN_REFS_INLINE`] refs, else none of it; and always its digest
/// and count, so the agent knows whether it has them all.
pub fn lease_refs(refs: Refs) -> (HashMap<String, String>, String, u64) {
    let digest = ark_core::formats::bundle::refs_digest(&refs);
    let count = refs.len() as u64;
    let inline = match refs.len() <= KNOWN_REFS_INLINE {
        true => refs.into_iter().collect(),
        false => HashMap::new(),
    };
    (inline, digest, count)
}

/// `refs` as `KnownRefs` pages of [`KNOWN_REFS_PAGE`] refs, in name order.
pub fn known_refs_pages(refs: Refs) -> Vec<ark_proto::KnownRefsPage> {
    let mut pages = Vec::with_capacity(refs.len().div_ceil(KNOWN_REFS_PAGE));
    let mut page = Vec::new();
    for (name, id) in refs {
        page.push(ark_proto::KnownRef { name, id });
        if page.len() == KNOWN_REFS_PAGE {
            pages.push(ark_proto::KnownRefsPage {
                refs: std::mem::take(&mut page),
            });
        }
    }
    if !page.is_empty() {
        pages.push(ark_proto::KnownRefsPage { refs: page });
    }
    pages
}

impl KindSpec for Git {
    fn kind(&self) -> Kind {
        Kind::Git
    }

    fn schemes(&self) -> &'static [&'static str] {
        // git:// is `git daemon`'s protocol.
        &["http", "https", "git"]
    }

    fn known_refs(&self, archive_root: Option<&Path>, url: &str) -> Option<Refs> {
        let Some(root) = archive_root else {
            return Some(Refs::new());
        };
        let mirror = root.join(git_mirror_path(url));
        Some(match crate::git_check::landed_refs(&mirror) {
            Ok(refs) => refs,
            Err(e) => {
                tracing::warn!(mirror = %mirror.display(), "reading the mirror's refs: {e}; the agent will send everything");
                Refs::new()
            }
        })
    }

    fn links_across_targets(&self) -> bool {
        false
    }

    fn check(&self, ctx: &CheckCtx<'_>) -> Result<Option<String>> {
        let v = ctx.version;
        let mirror = ctx.archive.absolute(&git_mirror_path(&v.url));
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
        let of = BundleOf {
            target: &v.target,
            url: &v.url,
            run_id: v.run_id,
            stamp: crate::archive::stamp(ctx.now),
        };
        let applied = apply_bundle(ctx.store, &of, &checked, &mirror, ctx.now);
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
        let (stem, name) = git_stem(&v.url);
        let dir = format!("{stem}.bundles");
        let file = ark_core::path::fit(format!("{name}.bundle"), &v.url);
        archive.stamped_version_path(conn, v, &file, Some(&dir), now)
    }

    fn derive(
        &self,
        archive: &Archive,
        store: &Store,
        version: &Version,
        _now: i64,
    ) -> Result<Derived> {
        // The mirror's refs moved in `check`: its new commits are read for
        // Git LFS pointers when the target wants its LFS objects.
        let scanned = store.read(|c| {
            crate::lfs::wanted(c, &version.target)?
                .then(|| crate::lfs::scanned(c, &version.target))
                .transpose()
        })?;
        let Some(scanned) = scanned else {
            return Ok(Derived::Nothing);
        };
        let mirror = archive.absolute(&git_mirror_path(&version.url));
        crate::lfs::scan(&mirror, &scanned).map(Derived::Lfs)
    }

    fn record(&self, tx: &Connection, version: &Version, derived: Derived, now: i64) -> Result<()> {
        if let Derived::Lfs(scan) = derived {
            let queued = crate::lfs::record(
                tx,
                &version.target,
                &version.url,
                version.run_id,
                &scan,
                now,
            )?;
            tracing::info!(target = %version.target, commits = scan.commits,
                pointers = scan.pointers.len(), queued, "Git LFS pointers read");
        }
        Ok(())
    }

    fn place_of(&self, url: &str) -> Option<String> {
        Some(git_mirror_path(url))
    }

    fn owned_dir(&self, version: &Version) -> Option<String> {
        Some(git_mirror_path(&version.url))
    }

    fn check_owned(&self, archive: &Archive, dir: &str) -> std::result::Result<(), String> {
        crate::git_check::check_repo(&archive.absolute(dir))
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn recover(&self, archive: &Archive, store: &Store, now: i64) -> Result<()> {
        catch_up_mirrors(archive, store, now)
    }
}

/// Which run's bundle a mirror update comes from.
#[derive(Debug, Clone)]
pub struct BundleOf<'a> {
    pub target: &'a str,
    pub url: &'a str,
    pub run_id: i64,
    /// The version's stamp: old tips are kept under it.
    pub stamp: String,
}

impl<'a> BundleOf<'a> {
    /// The bundle of a landed version.
    pub fn landed(v: &'a crate::archive::Version) -> Self {
        Self {
            target: &v.target,
            url: &v.url,
            run_id: v.run_id,
            stamp: version_stamp(&v.path),
        }
    }
}

/// Applies a checked bundle to its mirror, records what moved, and drops
/// the preserved old tips of versions retention no longer keeps.
pub fn apply_bundle(
    store: &crate::state::Store,
    of: &BundleOf<'_>,
    checked: &crate::git_check::CheckedBundle,
    mirror: &std::path::Path,
    now: i64,
) -> Result<()> {
    let stamp = &of.stamp;
    let changes = crate::git_check::apply(checked, mirror, stamp).map_err(|e| {
        CommanderError::Invalid(format!("updating mirror {}: {e}", mirror.display()))
    })?;
    // Stamps of the versions retention keeps (a same-second version's
    // "-2" suffix aside), and this one's.
    let mut kept: Vec<String> = store.read(|c| {
        Ok(crate::archive::landed(c, Some(of.target))?
            .iter()
            .map(|v| version_stamp(&v.path))
            .collect())
    })?;
    let bases: Vec<String> = kept
        .iter()
        .filter_map(|s| s.split_once('-').map(|(base, _)| base.to_string()))
        .collect();
    kept.extend(bases);
    kept.push(stamp.clone());
    let pruned = crate::git_check::prune_preserved(mirror, &kept)
        .map_err(|e| CommanderError::Invalid(format!("pruning preserved refs: {e}")))?;
    let forced = !changes.forced.is_empty() || !changes.deleted.is_empty();
    let message = format!(
        "mirror {} updated from run {}'s bundle: {}{}{}",
        git_mirror_path(of.url),
        of.run_id,
        changes.summary(),
        if forced {
            format!(
                "; old tips kept as {}{stamp}/…",
                crate::git_check::PRESERVED_PREFIX
            )
        } else {
            String::new()
        },
        if pruned > 0 {
            format!("; {pruned} preserved refs past retention removed")
        } else {
            String::new()
        }
    );
    tracing::info!(target = %of.target, "{message}");
    store.tx(|tx| {
        crate::state::event(
            tx,
            now,
            Some(of.run_id),
            None,
            if forced { "git_force_push" } else { "git_refs" },
            &message,
        )
    })
}

/// The version directory's name (its landing time stamp) of a version path.
fn version_stamp(path: &str) -> String {
    path.rsplit('/').nth(1).unwrap_or("version").to_string()
}

/// Applies the newest landed bundle of every git target whose mirror
/// does not hold its refs yet (a crash between landing and applying).
fn catch_up_mirrors(archive: &Archive, store: &Store, now: i64) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let newest: Vec<Version> = store.read(|c| {
        Ok(crate::archive::landed(c, None)?
            .into_iter()
            .filter(|v| v.kind == ark_core::Kind::Git && seen.insert(v.target.clone()))
            .collect())
    })?;
    for v in newest {
        let mirror = archive.root().join(git_mirror_path(&v.url));
        let behind = landed_bundle_refs(archive, &v)
            .zip(crate::git_check::landed_refs(&mirror).ok())
            .is_some_and(|(want, have)| want != have);
        if !behind {
            continue;
        }
        let scratch = archive
            .quarantine()
            .join(format!("recover-{}.git-check", v.run_id));
        let fetched = archive
            .quarantine()
            .join(format!("recover-{}.bundle", v.run_id));
        let checked = archive
            .backend()
            .local_file(&v.path, &fetched)
            .and_then(|bundle| {
                crate::git_check::check_bundle(&bundle, &mirror, &scratch)
                    .map_err(|e| crate::CommanderError::Invalid(e.to_string()))
            });
        let _ = std::fs::remove_file(&fetched);
        let applied = checked
            .and_then(|checked| apply_bundle(store, &BundleOf::landed(&v), &checked, &mirror, now));
        let _ = std::fs::remove_dir_all(&scratch);
        match applied {
            Ok(()) => {
                tracing::info!(mirror = %mirror.display(), "mirror caught up with its newest bundle")
            }
            Err(e) => {
                tracing::warn!(mirror = %mirror.display(), "cannot catch the mirror up: {e}")
            }
        }
    }
    Ok(())
}

/// The refs landed bundle `v` lists. The header alone says: only the
/// first bytes are read (a ranged read on an object store), more only when
/// the header is longer (one line per ref, about 60 bytes: 16 MiB covers a
/// quarter of a million refs).
fn landed_bundle_refs(archive: &Archive, v: &Version) -> Option<Refs> {
    let name = std::path::Path::new(&v.path);
    for read in [64u64 << 10, 1 << 20, 16 << 20] {
        let head = archive
            .backend()
            .read_at(&v.path, 0, v.size.min(read) as usize)
            .ok()?;
        match crate::git_check::bundle_refs_in(name, &head) {
            Ok(refs) => return Some(refs),
            Err(_) if read < v.size => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Where the bare mirror of git repository `url` lives, relative to the
/// archive root: `git/<host>/<path>.git` (the port, if any, joins the host
/// as `host_port`; every segment sanitised, so no URL can escape `git/`).
pub fn git_mirror_path(url: &str) -> String {
    let (stem, _) = git_stem(url);
    format!("{stem}.git")
}

/// `git/<host>/<path>` without `.git`, and the repository's own name.
pub(crate) fn git_stem(url: &str) -> (String, String) {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let after_scheme = path.split("://").nth(1).unwrap_or(path);
    let mut parts = after_scheme.split('/').filter(|p| !p.is_empty());
    let host = crate::archive::safe_segment(parts.next().unwrap_or(""), "host");
    let mut segments: Vec<String> = parts
        .map(|p| crate::archive::safe_segment(&ark_core::path::percent_decode(p), "repo"))
        .collect();
    if segments.is_empty() {
        segments.push("repo".into());
    }
    if let Some(last) = segments.last_mut() {
        if let Some(stem) = last.strip_suffix(".git").filter(|s| !s.is_empty()) {
            *last = stem.to_string();
        }
    }
    let name = segments.last().cloned().unwrap_or_default();
    (format!("{}/{host}/{}", Kind::Git, segments.join("/")), name)
}
