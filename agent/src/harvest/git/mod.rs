//! The Git mirror kind on the agent: a bare mirror of every ref of an
//! upstream repository ([`mirror`]), and the git bundle v2 that carries what
//! changed since the commander's last landed state ([`write_bundle`]).
//!
//! Everything here is blocking: gix's blocking HTTP client panics inside a
//! tokio runtime, so callers wrap these functions in `spawn_blocking`. This
//! module does not decide when to mirror, nor upload anything; the commander
//! trusts none of it and checks every bundle (`ark_commander::git_check`).
//!
//! The bundle's object set is a commit walk from the new tips that hides the
//! known tips, and for trees only the entries that differ from the same
//! path in every parent's tree (an object equal to a parent's is reachable
//! from that parent, which is either known or itself walked, so nothing is
//! missed). Its pack reuses the deltas of the mirror's packs (`pack`), so
//! the first bundle is about the size of what upstream sent.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use gix::bstr::BString;
use gix::objs::Kind;
use gix::ObjectId;
use tracing::info;

use crate::fetch::Fetched;
use crate::lease::{failure, HeldLease, JobContext};

pub use ark_core::formats::bundle::{Refs, BUNDLE_V2_SIGNATURE};

/// A boxed error from gix: its many error types only ever travel as a cause.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The refspec of a mirror: every ref, force-updated, under the same name.
const MIRROR_REFSPEC: &str = "+refs/*:refs/*";

/// What went wrong with a mirror or a bundle, naming the URL or directory.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{url} is not a usable Git URL ({source}): use an http://, https:// or git:// URL")]
    Url { url: String, source: Cause },
    #[error(
        "cannot open or create the bare mirror at {}: {source}; check the directory is \
         writable, or remove it so the next run clones afresh",
        dir.display()
    )]
    Repo { dir: PathBuf, source: Cause },
    #[error(
        "cannot reach the Git remote {url}: {source}; check the URL and that the host serves \
         Git (smart HTTP or git daemon)"
    )]
    Connect { url: String, source: Cause },
    #[error(
        "fetching from {url} failed: {source}; the mirror keeps its previous state and the next \
         run retries"
    )]
    Fetch { url: String, source: Cause },
    #[error(
        "fetching from {url} was interrupted; the next run resumes from the refs already fetched"
    )]
    Interrupted { url: String },
    #[error(
        "cannot update the refs of the mirror at {}: {source}; check the disk, or remove the \
         mirror so the next run clones afresh",
        dir.display()
    )]
    Refs { dir: PathBuf, source: Cause },
    #[error("ref {name} holds {value:?}, which is not a hex object id: pass the refs of `mirror`")]
    BadRef { name: String, value: String },
    #[error(
        "object {id} of the mirror at {} is missing or unreadable: {source}; the mirror is \
         damaged: remove it so the next run clones afresh",
        dir.display()
    )]
    Object {
        dir: PathBuf,
        id: ObjectId,
        source: Cause,
    },
    #[error("writing the bundle failed: {0}; check the staging disk")]
    Write(#[from] std::io::Error),
}

/// The `Result` of this module.
pub type Result<T, E = GitError> = std::result::Result<T, E>;

/// What [`write_bundle`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleSummary {
    /// Objects in the pack.
    pub objects: u64,
    /// Bytes of the pack (without the bundle header).
    pub pack_bytes: u64,
    /// Ref lines in the header.
    pub refs: usize,
    /// Objects sent as deltas against an earlier object of the pack.
    pub deltas: u64,
    /// Objects sent as deltas against an object the receiver has (thin).
    pub thin_deltas: u64,
}

/// Mirrors every ref of `url` into the bare repository `dir` and returns the
/// refs after. The first run (no `dir`) clones; later runs fetch only new
/// objects, force-update refs and delete the refs upstream no longer has.
/// An unchanged upstream costs one ref advertisement and no pack.
pub fn mirror(url: &str, dir: &Path, interrupt: &AtomicBool) -> Result<Refs> {
    // gix's reqwest client asks rustls for the process default (ring here).
    crate::link::install_crypto_provider();
    let repo = open_or_init(dir)?;
    let remote = repo
        .remote_at(url)
        .map_err(|e| GitError::Url {
            url: url.into(),
            source: e.into(),
        })?
        .with_refspecs(Some(MIRROR_REFSPEC), gix::remote::Direction::Fetch)
        .map_err(|e| GitError::Url {
            url: url.into(),
            source: e.into(),
        })?
        // Tags come with `refs/*` already; auto-following would add nothing.
        .with_fetch_tags(gix::remote::fetch::Tags::None);
    let connection =
        remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|e| GitError::Connect {
                url: url.into(),
                source: e.into(),
            })?;
    let prepare = connection
        .prepare_fetch(
            gix::progress::Discard,
            gix::remote::ref_map::Options {
                // A mirror wants every ref; and gix would turn `refs/*` into
                // the literal ls-refs prefix "refs/*", which matches nothing.
                prefix_from_spec_as_filter_on_remote: false,
                ..Default::default()
            },
        )
        .map_err(|e| GitError::Connect {
            url: url.into(),
            source: e.into(),
        })?;

    // Prune before receiving: a deleted `refs/heads/x` would otherwise block
    // a new `refs/heads/x/y` (a file where a directory must go).
    let upstream: HashSet<BString> = prepare
        .ref_map()
        .remote_refs
        .iter()
        .map(|r| r.unpack().0.to_owned())
        .collect();
    let stale: Vec<String> = local_refs(&repo, dir)?
        .into_keys()
        .filter(|name| !upstream.contains(&BString::from(name.as_str())))
        .collect();
    delete_refs(&repo, dir, &stale)?;

    if interrupt.load(Ordering::Relaxed) {
        return Err(GitError::Interrupted { url: url.into() });
    }
    // An empty upstream advertises at most an unborn HEAD: nothing to fetch
    // (and gix would call "no ref matched" an error).
    if !upstream.iter().any(|name| name.starts_with(b"refs/")) {
        return Ok(Refs::new());
    }
    prepare
        .receive(gix::progress::Discard, interrupt)
        .map_err(|e| {
            if interrupt.load(Ordering::Relaxed) {
                GitError::Interrupted { url: url.into() }
            } else {
                GitError::Fetch {
                    url: url.into(),
                    source: e.into(),
                }
            }
        })?;
    let repo = open(dir)?;
    let refs = local_refs(&repo, dir)?;
    point_head_at_a_branch(dir, &refs)?;
    Ok(refs)
}

fn open(dir: &Path) -> Result<gix::Repository> {
    gix::open_opts(dir, gix::open::Options::isolated()).map_err(|e| GitError::Repo {
        dir: dir.into(),
        source: e.into(),
    })
}

fn open_or_init(dir: &Path) -> Result<gix::Repository> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| GitError::Repo {
            dir: dir.into(),
            source: e.into(),
        })?;
        gix::init_bare(dir).map_err(|e| GitError::Repo {
            dir: dir.into(),
            source: e.into(),
        })?;
    }
    open(dir)
}

/// Every ref under `refs/` with the id it points to (symbolic refs followed).
fn local_refs(repo: &gix::Repository, dir: &Path) -> Result<Refs> {
    let refs_error = |e: Cause| GitError::Refs {
        dir: dir.into(),
        source: e,
    };
    let platform = repo.references().map_err(|e| refs_error(e.into()))?;
    let mut refs = Refs::new();
    for reference in platform.all().map_err(|e| refs_error(e.into()))? {
        let reference = reference.map_err(refs_error)?;
        let name = reference.name().as_bstr().to_string();
        if !name.starts_with("refs/") {
            continue;
        }
        let id = match reference.try_id() {
            Some(id) => id.detach(),
            None => match reference.follow() {
                Some(Ok(target)) => match target.try_id() {
                    Some(id) => id.detach(),
                    None => continue,
                },
                _ => continue,
            },
        };
        refs.insert(name, id.to_hex().to_string());
    }
    Ok(refs)
}

fn delete_refs(repo: &gix::Repository, dir: &Path, names: &[String]) -> Result<()> {
    use gix::refs::transaction::{Change, PreviousValue, RefEdit, RefLog};
    if names.is_empty() {
        return Ok(());
    }
    let mut edits = Vec::with_capacity(names.len());
    for name in names {
        let name: gix::refs::FullName =
            name.as_str()
                .try_into()
                .map_err(|e: gix::validate::reference::name::Error| GitError::Refs {
                    dir: dir.into(),
                    source: e.into(),
                })?;
        edits.push(RefEdit {
            change: Change::Delete {
                expected: PreviousValue::Any,
                log: RefLog::AndReference,
            },
            name,
            deref: false,
        });
    }
    repo.edit_references(edits).map_err(|e| GitError::Refs {
        dir: dir.into(),
        source: e.into(),
    })?;
    Ok(())
}

/// Keeps `HEAD` on an existing branch (main, master, else the first), so a
/// clone of the mirror checks something out; leaves it alone without branches.
fn point_head_at_a_branch(dir: &Path, refs: &Refs) -> Result<()> {
    let head = dir.join("HEAD");
    let current = std::fs::read_to_string(&head).unwrap_or_default();
    let Some(branch) =
        ark_core::formats::bundle::head_branch(&current, refs.keys().map(String::as_str))
    else {
        return Ok(());
    };
    crate::write_atomic(&head, format!("ref: {branch}\n").as_bytes(), 0o644).map_err(|e| {
        GitError::Refs {
            dir: dir.into(),
            source: e.into(),
        }
    })
}

/// Where the agent keeps its own bare mirror of each git target, so later
/// runs fetch only what is new upstream.
pub const MIRRORS_DIR: &str = "mirrors";

/// A git job: bring the agent's mirror up to date with upstream (gix, on a
/// blocking thread: its HTTP client must not run inside the runtime), then
/// write a bundle of what the commander's mirror lacks into `dest` and hash
/// it like a download. Refs equal to the commander's (by digest):
/// unchanged, nothing written (one ref advertisement was the whole cost).
/// The commander's refs themselves are needed only for a bundle: they come
/// with the lease when few, else they are the agent's own mirror's refs
/// before the fetch when their digest matches (this agent did the last run),
/// else the agent asks `KnownRefs` for them.
pub(crate) async fn harvest(
    ctx: &JobContext,
    lease: &HeldLease,
    dest: &Path,
) -> std::result::Result<Fetched, ark_proto::JobFailure> {
    // gix follows the URL itself: it is checked here (the operator's own
    // origin, so normally allowed), not at every hop.
    let parsed = reqwest::Url::parse(&lease.url)
        .map_err(|e| failure(format!("{}: not a URL: {e}", lease.url), false))?;
    lease
        .guard(ctx.commander_host.clone())
        .check(&parsed)
        .await
        .map_err(|r| failure(format!("{}: refused: {r}", lease.url), false))?;
    let mirror = lease.mirror_path(&ctx.data.join(MIRRORS_DIR));
    let want_before = !lease.known_refs_digest.is_empty()
        && lease.known_refs.len() as u64 != lease.known_refs_count;
    let (url, dir) = (lease.url.clone(), mirror.clone());
    let (before, refs) = tokio::task::spawn_blocking(move || -> Result<(Option<Refs>, Refs)> {
        // Unreadable or absent: the commander's set is asked for instead.
        let before = want_before
            .then(|| open(&dir).and_then(|repo| local_refs(&repo, &dir)).ok())
            .flatten();
        let interrupt = AtomicBool::new(false);
        Ok((before, self::mirror(&url, &dir, &interrupt)?))
    })
    .await
    .map_err(|e| failure(format!("git job panicked: {e}"), true))?
    .map_err(|e| failure(e.to_string(), true))?;
    let known = match known_refs(lease, &refs, before) {
        Known::Same => return Ok(Fetched::NotModified),
        Known::Set(known) => known,
        Known::Ask => {
            let known = ask_known_refs(ctx, lease).await?;
            if known == refs {
                return Ok(Fetched::NotModified);
            }
            known
        }
    };
    let (url, dest) = (lease.url.clone(), dest.to_path_buf());
    let (size, root) = tokio::task::spawn_blocking(move || -> std::result::Result<(u64, blake3::Hash), String> {
        let out = std::fs::File::create(&dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
        let mut out = std::io::BufWriter::new(out);
        let summary = self::write_bundle(&mirror, &refs, &known, &mut out).map_err(|e| e.to_string())?;
        let file = out.into_inner().map_err(|e| format!("writing {}: {e}", dest.display()))?;
        file.sync_all().map_err(|e| format!("syncing {}: {e}", dest.display()))?;
        info!(%url, refs = summary.refs, known = known.len(), objects = summary.objects, deltas = summary.deltas, thin_deltas = summary.thin_deltas, pack_bytes = summary.pack_bytes, "bundle written");
        crate::tree::hash_with_outboard(&dest).map_err(|e| format!("hashing {}: {e}", dest.display()))
    })
    .await
    .map_err(|e| failure(format!("git job panicked: {e}"), true))?
    .map_err(|e| failure(e, true))?;
    Ok(Fetched::Body {
        size,
        root,
        validators: Default::default(),
        resumes: 0,
        restarts: 0,
        reused: 0,
    })
}

/// What the agent has of the commander's refs for a job, once its own
/// mirror holds `refs`.
#[derive(Debug, PartialEq)]
enum Known {
    /// The commander's mirror holds exactly `refs`: nothing to send.
    Same,
    /// The commander's refs.
    Set(Refs),
    /// Neither the lease nor the agent has them: ask `KnownRefs`.
    Ask,
}

/// Decides [`Known`] from the lease, the agent's mirror's refs after the
/// fetch (`refs`) and before it (`before`, read when the lease lacks the set).
fn known_refs(lease: &HeldLease, refs: &Refs, before: Option<Refs>) -> Known {
    use ark_core::formats::bundle::refs_digest;
    let inline = &lease.known_refs;
    let digest = &lease.known_refs_digest;
    // An older commander: the whole set, always inline.
    if digest.is_empty() {
        return match refs == inline {
            true => Known::Same,
            false => Known::Set(inline.clone()),
        };
    }
    if refs_digest(refs) == *digest {
        return Known::Same;
    }
    if inline.len() as u64 == lease.known_refs_count {
        return Known::Set(inline.clone());
    }
    match before {
        Some(before) if refs_digest(&before) == *digest => Known::Set(before),
        _ => Known::Ask,
    }
}

/// The commander's refs for this job, page by page (`KnownRefs`).
async fn ask_known_refs(
    ctx: &JobContext,
    lease: &HeldLease,
) -> std::result::Result<Refs, ark_proto::JobFailure> {
    let asking = |e: tonic::Status| {
        failure(
            format!(
                "asking the commander for the refs of its mirror of {}: {}",
                lease.url,
                e.message()
            ),
            true,
        )
    };
    let mut pages = ctx
        .client
        .clone()
        .known_refs(ark_proto::KnownRefsRequest {
            lease: Some(lease.lease_ref()),
        })
        .await
        .map_err(asking)?
        .into_inner();
    let mut known = Refs::new();
    while let Some(page) = pages.message().await.map_err(asking)? {
        known.extend(page.refs.into_iter().map(|r| (r.name, r.id)));
    }
    info!(url = %lease.url, refs = known.len(), "known refs asked for");
    Ok(known)
}

mod bundle;
pub mod fixture;
mod pack;

pub use bundle::write_bundle;
#[cfg(test)]
use pack::entry_header;

#[cfg(test)]
mod tests {
    use super::fixture::{self, cli_mirror, git, ls_remote, Upstream};
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn bundle_file(dir: &Path, refs: &Refs, known: &Refs, path: &Path) -> Result<BundleSummary> {
        let file = std::fs::File::create(path)?;
        write_bundle(dir, refs, known, std::io::BufWriter::new(file))
    }

    /// Real git's verdict on an incremental bundle: `bundle verify` in the
    /// receiver, a fetch from it, `fsck --full`, and upstream's refs after.
    fn fetch_and_fsck(receiver: &Path, bundle: &Path, want: &Refs) -> TestResult {
        let bundle = bundle.to_string_lossy();
        git(receiver, &["bundle", "verify", "-q", &bundle])?;
        git(receiver, &["fetch", "-q", &bundle, "+refs/*:refs/*"])?;
        git(receiver, &["fsck", "--full", "--strict"])?;
        assert_eq!(&ls_remote(receiver)?, want);
        Ok(())
    }

    #[test]
    fn entry_header_sizes() {
        assert_eq!(entry_header(Kind::Blob, 0), vec![0x30]);
        assert_eq!(entry_header(Kind::Blob, 15), vec![0x3f]);
        assert_eq!(entry_header(Kind::Commit, 16), vec![0x90, 0x01]);
        assert_eq!(entry_header(Kind::Tree, 2047), vec![0xaf, 0x7f]);
        assert_eq!(entry_header(Kind::Tag, 2048), vec![0xc0, 0x80, 0x01]);
    }

    #[test]
    fn full_bundle_clones_and_fscks() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let up = Upstream::populated(tmp.path(), "up")?;
        let mirror = cli_mirror(tmp.path(), &up, "mirror")?;
        let refs = ls_remote(&mirror)?;
        let bundle = tmp.path().join("full.bundle");
        let summary = bundle_file(&mirror, &refs, &Refs::new(), &bundle)?;
        assert_eq!(summary.refs, refs.len());
        assert!(summary.objects > 10, "{summary:?}");
        git(
            &mirror,
            &["bundle", "verify", "-q", &bundle.to_string_lossy()],
        )?;
        let clone = tmp.path().join("clone");
        git(
            tmp.path(),
            &[
                "clone",
                "-q",
                "--mirror",
                &bundle.to_string_lossy(),
                &clone.to_string_lossy(),
            ],
        )?;
        git(&clone, &["fsck", "--full", "--strict"])?;
        assert_eq!(ls_remote(&clone)?, up.refs()?);
        Ok(())
    }

    #[test]
    fn incremental_bundle_holds_only_new_objects() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let up = Upstream::populated(tmp.path(), "up")?;
        let old = cli_mirror(tmp.path(), &up, "old")?;
        let known = ls_remote(&old)?;
        up.commit("src/lib/a.txt", "a, again\n")?;
        up.rewrite("feature")?;
        git(&up.work, &["tag", "-a", "v3", "-m", "release 3"])?;
        up.push()?;
        let new = cli_mirror(tmp.path(), &up, "new")?;
        let refs = ls_remote(&new)?;
        let bundle = tmp.path().join("incr.bundle");
        let summary = bundle_file(&new, &refs, &known, &bundle)?;
        // main: commit, root tree, src, src/lib, blob; v3: the tag; the
        // amended feature commit and its changed path (5 more: its tree is
        // the old tip's, a superset the receiver dedupes).
        assert!(summary.objects <= 11, "{summary:?}");
        fetch_and_fsck(&old, &bundle, &up.refs()?)
    }

    /// The first bundle of a repository where deltas matter carries
    /// upstream's deltas (about upstream's pack size, not the sum of every
    /// version); the next one is the size of what upstream sent for it.
    /// Real git is the oracle for both.
    #[test]
    fn bundles_are_the_size_of_what_upstream_sent() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let up = Upstream::delta_heavy(tmp.path(), "up", 300)?;
        let mirror = cli_mirror(tmp.path(), &up, "mirror")?;
        let refs = ls_remote(&mirror)?;
        let first = tmp.path().join("first.bundle");
        let summary = bundle_file(&mirror, &refs, &Refs::new(), &first)?;
        let upstream = fixture::pack_bytes(&up.bare)?;
        assert!(
            summary.pack_bytes * 10 <= upstream * 11,
            "first bundle's pack {} bytes vs upstream's {upstream}: {summary:?}",
            summary.pack_bytes
        );
        assert!(summary.deltas > 250, "{summary:?}");
        let receiver = tmp.path().join("receiver");
        git(
            tmp.path(),
            &[
                "clone",
                "-q",
                "--mirror",
                &first.to_string_lossy(),
                &receiver.to_string_lossy(),
            ],
        )?;
        git(&receiver, &["fsck", "--full", "--strict"])?;

        // Upstream moves on; whatever it sends (git may send the new
        // version whole, or thin against the old), the bundle matches it.
        let text = std::fs::read_to_string(up.work.join("f0.txt"))?;
        let shorter = &text[..text.trim_end().rfind('\n').unwrap_or(0) + 1];
        up.commit("f0.txt", shorter)?;
        up.push()?;
        let before = fixture::pack_bytes(&mirror)?;
        // Kept as a pack, as gix does (git would unpack so few objects).
        git(
            &mirror,
            &["-c", "fetch.unpackLimit=1", "fetch", "-q", "origin"],
        )?;
        let known = ls_remote(&receiver)?;
        let refs = ls_remote(&mirror)?;
        let second = tmp.path().join("second.bundle");
        let summary = bundle_file(&mirror, &refs, &known, &second)?;
        let sent = fixture::pack_bytes(&mirror)? - before;
        assert!(
            summary.pack_bytes * 10 <= sent * 11,
            "second bundle's pack {} bytes vs the {sent} upstream sent: {summary:?}",
            summary.pack_bytes
        );
        fetch_and_fsck(&receiver, &second, &up.refs()?)
    }

    /// An object stored as a delta against one the receiver has goes as
    /// that delta (REF_DELTA, a thin pack) which git completes on fetch.
    #[test]
    fn deltas_against_what_the_receiver_has_make_a_thin_bundle() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let up = Upstream::delta_heavy(tmp.path(), "up", 60)?;
        let mirror = cli_mirror(tmp.path(), &up, "mirror")?;
        let receiver = cli_mirror(tmp.path(), &up, "receiver")?;
        let known = ls_remote(&mirror)?;
        // A root commit with an older tree: its files are stored as deltas
        // against newer versions, the receiver's tip among them.
        let commit = git(&mirror, &["commit-tree", "main~4^{tree}", "-m", "rewind"])?;
        git(&mirror, &["update-ref", "refs/heads/rewind", commit.trim()])?;
        let refs = ls_remote(&mirror)?;
        let bundle = tmp.path().join("thin.bundle");
        let summary = bundle_file(&mirror, &refs, &known, &bundle)?;
        assert!(summary.thin_deltas >= 1, "{summary:?}");
        fetch_and_fsck(&receiver, &bundle, &refs)
    }

    /// What the agent takes for the commander's refs, for a lease from an
    /// older commander (every ref, no digest) and from a newer one (digest,
    /// and the refs only when few).
    #[test]
    fn known_refs_come_from_the_lease_the_mirror_before_or_the_commander() {
        use ark_core::formats::bundle::refs_digest;
        let set = |ids: &[u8]| -> Refs {
            ids.iter()
                .map(|i| (format!("refs/heads/b{i}"), format!("{i:040}")))
                .collect()
        };
        let lease = |inline: &Refs, digest: Option<&Refs>| {
            HeldLease::from_lease(&ark_proto::Lease {
                job: Some(ark_proto::Job {
                    known_refs: inline.clone().into_iter().collect(),
                    known_refs_digest: digest.map(refs_digest).unwrap_or_default(),
                    known_refs_count: digest.map_or(0, |d| d.len() as u64),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let (old, new) = (set(&[1, 2]), set(&[1, 3]));
        let none = Refs::new();

        // An older commander: the inline set is the whole set.
        assert_eq!(known_refs(&lease(&old, None), &old, None), Known::Same);
        assert_eq!(
            known_refs(&lease(&old, None), &new, None),
            Known::Set(old.clone())
        );
        // Whole and digested.
        let whole = lease(&old, Some(&old));
        assert_eq!(known_refs(&whole, &old, None), Known::Same);
        assert_eq!(known_refs(&whole, &new, None), Known::Set(old.clone()));
        // Digest only: equal needs nothing; else the agent's own mirror
        // before the fetch when it matches, else ask.
        let digested = lease(&none, Some(&old));
        assert_eq!(known_refs(&digested, &old, None), Known::Same);
        assert_eq!(
            known_refs(&digested, &new, Some(old.clone())),
            Known::Set(old.clone())
        );
        assert_eq!(known_refs(&digested, &new, Some(new.clone())), Known::Ask);
        assert_eq!(known_refs(&digested, &new, None), Known::Ask);
        // An empty mirror, digested: its empty set is whole.
        let empty = lease(&none, Some(&none));
        assert_eq!(known_refs(&empty, &none, None), Known::Same);
        assert_eq!(known_refs(&empty, &new, None), Known::Set(none));
    }

    #[test]
    fn known_ids_the_mirror_lacks_are_ignored() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let up = Upstream::populated(tmp.path(), "up")?;
        let mirror = cli_mirror(tmp.path(), &up, "mirror")?;
        let refs = ls_remote(&mirror)?;
        let known = Refs::from([("refs/heads/gone".to_string(), "1".repeat(40))]);
        let bundle = tmp.path().join("b.bundle");
        bundle_file(&mirror, &refs, &known, &bundle)?;
        let text = std::fs::read(&bundle)?;
        assert!(!text.starts_with(b"# v2 git bundle\n-"));
        git(
            &mirror,
            &["bundle", "verify", "-q", &bundle.to_string_lossy()],
        )?;
        Ok(())
    }

    #[test]
    fn empty_repository_bundles_zero_refs() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let up = Upstream::empty(tmp.path(), "empty")?;
        let mut out = Vec::new();
        let summary = write_bundle(&up.bare, &Refs::new(), &Refs::new(), &mut out)?;
        assert_eq!(summary.refs, 0);
        assert_eq!(summary.objects, 0);
        assert!(out.starts_with(b"# v2 git bundle\n\nPACK"));
        Ok(())
    }

    #[test]
    fn bad_url_is_refused_with_the_url() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let url = "http://127.0.0.1:1/nothing.git";
        let err = mirror(url, &tmp.path().join("m"), &AtomicBool::new(false))
            .err()
            .ok_or("mirror of a closed port succeeded")?;
        assert!(err.to_string().contains(url), "{err}");
        Ok(())
    }
}
