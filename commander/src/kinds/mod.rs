//! The harvest kinds on the commander: one module per kind, each a
//! [`KindSpec`], behind the one `match` in [`spec`]. The generic pipeline —
//! the scheduler's leases, `Have` and the verified upload, the landing
//! protocol, recovery, retention — asks the kind and never names one.
//!
//! # The life of a run through the trait
//!
//! 1. **Lease** (scheduler): [`KindSpec::job_max_size`], whether the
//!    target's validators go with the job ([`KindSpec::conditional`]), and
//!    what else the agent needs ([`KindSpec::known_refs`]: a git mirror's
//!    tips).
//! 2. **`Have`**: bytes equal to the target's latest version end the run
//!    `unchanged` when [`KindSpec::unchanged_when_latest`]; bytes landed
//!    under another target are hard-linked when
//!    [`KindSpec::links_across_targets`].
//! 3. **Before landing**, on the commander's own verified copy:
//!    [`KindSpec::check`] — the deep check (ZIM structure, feed parse, the
//!    HTML sniff for plain files, a git bundle against its mirror, which it
//!    then moves). `Some(reason)` refuses: nothing lands, the run fails.
//! 4. **Landing** (archive): [`KindSpec::version_path`] says where;
//!    [`KindSpec::derive`] runs once the file is in place (a feed's entry
//!    files, made durable) and [`KindSpec::record`] inside the landing
//!    transaction (entry rows, media runs to queue, a media file's feed
//!    bookkeeping); [`KindSpec::after_landing`] refreshes what is built
//!    from the ledger (the Kiwix library).
//! 5. **Retention and layout**: [`KindSpec::retained`] (media are a feed's
//!    history, never pruned), [`KindSpec::shared_dir`] (media share one
//!    directory rather than one per version).
//! 6. **Recovery**: [`KindSpec::rolled_back`] cleans what a rolled-back
//!    landing derived; [`KindSpec::recover`] finishes what a crash
//!    interrupted after the ledger committed (a mirror's ref switch, a
//!    feed's entries from before derivation was part of the landing).
//! 7. **Quorum** (next issues): [`KindSpec::agreement`] is what two
//!    harvests of the same run must agree on.
//!
//! # Adding a kind
//!
//! 1. A variant in `ark_core::Kind` (name, `ALL`, `TARGETS` if operators
//!    add it).
//! 2. A module here implementing [`KindSpec`] (defaults are a plain file's
//!    behaviour: override what differs) and its line in [`spec`].
//! 3. Its harvester on the agent (`agent/src/harvest/`) and its line there.
//! 4. Tests: a whole-swarm harvest in `tests/`, a refusal of a bad body.

use std::path::Path;

use ark_core::formats::bundle::Refs;
use ark_core::Kind;
use rusqlite::Connection;

use crate::archive::{Archive, NewVersion, Version};
use crate::state::Store;
use crate::Result;

mod account;
#[cfg(feature = "test-kind")]
mod echo;
mod feed;
mod file;
mod git;
mod lfs;
mod media;
mod zim;

pub use git::{git_mirror_path, known_refs_pages, lease_refs, KNOWN_REFS_INLINE, KNOWN_REFS_PAGE};

/// What a kind's [`KindSpec::derive`] produced for its landing transaction.
#[derive(Debug)]
pub enum Derived {
    Nothing,
    Feed(crate::feed::Derived),
    /// The Git LFS pointers a git landing's mirror holds (`--lfs`).
    Lfs(crate::lfs::Scan),
}

/// Where and how the pipeline is when it calls [`KindSpec::check`].
#[derive(Debug)]
pub struct CheckCtx<'a> {
    pub archive: &'a Archive,
    pub store: &'a Store,
    /// The version about to land (its claimed manifest inside).
    pub version: &'a NewVersion,
    /// The verified upload in quarantine.
    pub data: &'a Path,
    pub now: i64,
}

/// What the commander knows about one harvest kind.
pub trait KindSpec: Sync {
    fn kind(&self) -> Kind;

    /// The URL schemes a target of this kind may have.
    fn schemes(&self) -> &'static [&'static str] {
        &["http", "https"]
    }

    /// Largest body a job of this kind may fetch, given the target's own
    /// limit (`--max-size`; 0 = the agent's).
    fn job_max_size(&self, target_max: u64) -> u64 {
        target_max
    }

    /// Whether the target's validators go with the job (conditional GET).
    fn conditional(&self) -> bool {
        true
    }

    /// What the commander's landed state holds that the agent needs (a git
    /// mirror's refs, which a lease names by digest: see
    /// [`lease_refs`]); `None` for kinds that need none.
    fn known_refs(&self, _archive_root: Option<&Path>, _url: &str) -> Option<Refs> {
        None
    }

    /// Whether a body equal to the target's latest version means the run
    /// found nothing new.
    fn unchanged_when_latest(&self) -> bool {
        true
    }

    /// Whether bytes already landed under another target may be linked
    /// into a new version instead of uploaded.
    fn links_across_targets(&self) -> bool {
        true
    }

    /// The deep check of the verified copy before it lands; `Some(reason)`
    /// refuses it. May act on what the version updates once it passes (a
    /// git mirror's refs move here, before the ledger says landed).
    fn check(&self, _ctx: &CheckCtx<'_>) -> Result<Option<String>> {
        Ok(None)
    }

    /// Where a new version lands, relative to the archive root.
    fn version_path(
        &self,
        archive: &Archive,
        conn: &Connection,
        v: &NewVersion,
        now: i64,
    ) -> Result<String> {
        archive.stamped_version_path(
            conn,
            v,
            &crate::archive::file_name_from_url(&v.url),
            None,
            now,
        )
    }

    /// Whether its versions share one directory (removed file by file)
    /// rather than each having its own.
    fn shared_dir(&self) -> bool {
        false
    }

    /// Whether retention (`--keep`) counts its versions.
    fn retained(&self) -> bool {
        true
    }

    /// What landing derives from the file in place, made durable, before
    /// the ledger commits.
    fn derive(
        &self,
        _archive: &Archive,
        _store: &Store,
        _version: &Version,
        _now: i64,
    ) -> Result<Derived> {
        Ok(Derived::Nothing)
    }

    /// Records, inside the landing transaction, what [`Self::derive`] made
    /// and what the landing means for the rest of the ledger.
    fn record(
        &self,
        _tx: &Connection,
        _version: &Version,
        _derived: Derived,
        _now: i64,
    ) -> Result<()> {
        Ok(())
    }

    /// After a landing committed: what is rebuilt from the ledger.
    fn after_landing(&self, _archive: &Archive, _store: &Store) -> Result<()> {
        Ok(())
    }

    /// Directories a landing of `version` is writing into right now: not
    /// strays while it lands (a feed's entries).
    fn deriving_dirs(&self, _archive: &Archive, _version: &Version) -> Vec<std::path::PathBuf> {
        Vec::new()
    }

    /// Files derived from landed versions that the ledger lists, relative
    /// to the archive root (`verify` reports any that is missing).
    fn derived_files(&self, _store: &Store) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// The directory a target with this URL keeps outside its own target
    /// directory (a git mirror, named from the URL), if any: two targets
    /// whose such directories differ only by case cannot both be kept.
    fn place_of(&self, _url: &str) -> Option<String> {
        None
    }

    /// A directory the kind keeps beside its versions, its own rather than
    /// stray files (a git mirror), relative to the archive root.
    fn owned_dir(&self, _version: &Version) -> Option<String> {
        None
    }

    /// `verify`'s check of an [`Self::owned_dir`]; Err carries the reason.
    fn check_owned(&self, _archive: &Archive, _dir: &str) -> std::result::Result<(), String> {
        Ok(())
    }

    /// A landing of `target` was rolled back: remove what it derived.
    fn rolled_back(&self, _archive: &Archive, _store: &Store, _target: &str) -> Result<()> {
        Ok(())
    }

    /// At start and in `ingest`: finish what a crash interrupted after the
    /// ledger committed.
    fn recover(&self, _archive: &Archive, _store: &Store, _now: i64) -> Result<()> {
        Ok(())
    }

    /// What two harvests of the same run must agree on (quorum): the bytes'
    /// root for a file-like kind.
    fn agreement(&self, manifest: &ark_core::manifest::Manifest) -> String {
        format!("{}:{}", manifest.size, manifest.blake3)
    }
}

impl NewVersion {
    /// What the origin said about these bytes, for the target's next
    /// conditional request: an enclosure's validators are not its feed's.
    pub fn validators(&self) -> Option<(&str, &str)> {
        crate::kinds::of(&self.kind)
            .conditional()
            .then_some((&self.etag, &self.last_modified))
    }
}

/// The spec of `kind`: the one `match` on the commander.
pub fn spec(kind: Kind) -> &'static dyn KindSpec {
    match kind {
        Kind::File => &file::File,
        Kind::Zim => &zim::Zim,
        Kind::Rss => &feed::FEED,
        Kind::Media => &media::Media,
        Kind::Git => &git::Git,
        Kind::GitAccount => &account::GitAccount,
        Kind::Lfs => &lfs::Lfs,
        #[cfg(feature = "test-kind")]
        Kind::Echo => &echo::Echo,
    }
}

/// The spec of a kind by its name from the ledger or the wire; an unknown
/// name behaves as a plain file (and is logged), so an old ledger row never
/// stops the pipeline.
pub fn of(name: &str) -> &'static dyn KindSpec {
    match name.parse::<Kind>() {
        Ok(kind) => spec(kind),
        Err(e) => {
            tracing::warn!("{e}: treating it as a plain file");
            &file::File
        }
    }
}

/// Every kind's spec.
pub fn all() -> impl Iterator<Item = &'static dyn KindSpec> {
    Kind::ALL.iter().copied().map(spec)
}

/// `relative` for a version that lands once under a name of its own (an
/// enclosure, an LFS object): refused if a version or a file holds it.
fn unclaimed(archive: &Archive, conn: &Connection, relative: String) -> Result<String> {
    let taken: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM versions WHERE path = ?1",
        [&relative],
        |r| r.get(0),
    )?;
    if taken || archive.backend().exists(&relative)? {
        return Err(crate::CommanderError::AlreadyExists(format!(
            "{relative} is already in the archive"
        )));
    }
    Ok(relative)
}

/// The HTML sniff a plain file's check runs (its own copy: the agent's is a
/// claim); shared by `file` and `media`.
fn html_instead_of_file(v: &NewVersion, data: &Path) -> Result<Option<String>> {
    use std::io::Read;
    if ark_core::sniff::url_wants_html(&v.url) {
        return Ok(None);
    }
    let io = |what| crate::CommanderError::io(what, data.to_path_buf());
    let mut sniff = ark_core::sniff::HtmlSniff::default();
    let mut file = std::fs::File::open(data).map_err(io("reading"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut verdict = ark_core::sniff::Verdict::Undecided;
    while verdict == ark_core::sniff::Verdict::Undecided {
        let n = file.read(&mut buf).map_err(io("reading"))?;
        if n == 0 {
            break;
        }
        verdict = sniff.feed(&buf[..n]);
    }
    Ok((verdict == ark_core::sniff::Verdict::Html).then(|| {
        format!(
            "the commander's check refused {}: {}",
            v.url,
            ark_core::sniff::html_refusal()
        )
    }))
}
