//! The commander's checks of the Git mirror kind: a bundle from an agent is
//! parsed strictly, its pack indexed (which hashes every object) and its
//! connectivity proven before [`apply`] lands it in the bare mirror on the
//! NAS with one atomic ref update; [`check_repo`] is the offline check of a
//! whole landed mirror. Nothing the agent says is trusted. Scheduling, the
//! upload itself and retention policy live elsewhere.
//!
//! Invariant that keeps a bundle check proportional to the bundle: every
//! object in a landed mirror has all it references in the mirror too (only
//! checked bundles land, and every object of a bundle's pack is walked until
//! the walk reaches the pack's edge in the mirror). So the walk of a bundle
//! stops at objects the mirror already has; [`check_repo`] walks everything.
//!
//! The mirror's refs live in `packed-refs` only: replacing that one file
//! (temp file, fsync, rename) is the atomic switch from one ref state to the
//! next. Refs under `refs/ark/` are the commander's own: old tips kept after
//! a force-push or a deletion upstream, as `refs/ark/previous/<stamp>/…`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use ark_core::formats::bundle::{Refs, BUNDLE_V2_SIGNATURE};
use gix::bstr::ByteSlice;
use gix::objs::{Exists, Find, Kind};
use gix::ObjectId;

/// Largest bundle header accepted (ref and prerequisite lines). A mirror of
/// a huge repository has some 10⁵ refs of ~100 bytes; past this the
/// "header" is garbage, and it is read into memory.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// The commander's own ref namespace in a mirror: kept across updates, and
/// refused in a bundle (an upstream must not overwrite what the commander keeps).
pub const ARK_NAMESPACE: &str = "refs/ark/";

/// Where old tips are preserved: `refs/ark/previous/<stamp>/<name without refs/>`.
pub const PRESERVED_PREFIX: &str = "refs/ark/previous/";

/// The scratch sub-directory a check owns (emptied at the start of a check).
const SCRATCH_DIR: &str = "ark-git-check";

/// A boxed error from gix: its many error types only ever travel as a cause.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a bundle or a mirror was refused, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum GitCheckError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not a git bundle v2 (first line {first_line:?}); v3 and other formats are \
         refused: the agent writes v2, so the upload is damaged or not from an agent",
        bundle.display()
    )]
    NotABundle { bundle: PathBuf, first_line: String },
    #[error(
        "the header of bundle {} is longer than {limit} bytes (or has no blank line ending \
         it): refused as garbage",
        bundle.display()
    )]
    HeaderTooLarge { bundle: PathBuf, limit: u64 },
    #[error("bundle {} line {line_no} ({line:?}) is malformed: {reason}", bundle.display())]
    BadLine {
        bundle: PathBuf,
        line_no: usize,
        line: String,
        reason: String,
    },
    #[error("bundle {} lists ref {name} twice: refused as ambiguous", bundle.display())]
    DuplicateRef { bundle: PathBuf, name: String },
    #[error(
        "the pack in bundle {} is corrupt or truncated ({reason}): refused; the agent's next \
         run sends a new bundle",
        bundle.display()
    )]
    CorruptPack { bundle: PathBuf, reason: String },
    #[error(
        "the bundle needs {id}, which the mirror at {} lacks: it was made against a state \
         that never landed here; rerun the job with the mirror's current refs as known",
        mirror.display()
    )]
    MissingPrerequisite { id: ObjectId, mirror: PathBuf },
    #[error(
        "bundle ref {name} points to {id} which is neither in the pack nor in the mirror: \
         the transfer is incomplete"
    )]
    MissingRefTarget { name: String, id: ObjectId },
    #[error(
        "object {id} (reachable from {from}) is neither in the pack nor in the mirror: the \
         transfer is incomplete"
    )]
    MissingObject { id: ObjectId, from: String },
    #[error("object {id} (reachable from {from}) does not decode as a {kind}: {reason}")]
    BadObject {
        id: ObjectId,
        from: String,
        kind: Kind,
        reason: String,
    },
    #[error("cannot read the objects of {}: {source}", dir.display())]
    Odb { dir: PathBuf, source: Cause },
    #[error(
        "the repository at {} failed its integrity check: {source}; restore it from a backup \
         or delete it so the next run mirrors afresh",
        dir.display()
    )]
    Integrity { dir: PathBuf, source: Cause },
    #[error(
        "ref {name} in {} is unusable ({reason}); restore the repository from a backup or \
         delete it so the next run mirrors afresh",
        dir.display()
    )]
    BadRef {
        dir: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{stamp:?} cannot name preserved refs: use letters, digits, '-', '_' or '.'")]
    BadStamp { stamp: String },
}

/// The `Result` of this module.
pub type Result<T, E = GitCheckError> = std::result::Result<T, E>;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> GitCheckError + 'a {
    move |source| GitCheckError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The indexed pack of a checked bundle, waiting in the scratch directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackFiles {
    pub pack: PathBuf,
    pub index: PathBuf,
}

/// A bundle that passed [`check_bundle`]: safe to [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedBundle {
    /// The bundle's refs (without a `HEAD` line, which only says what to check out).
    pub refs: Refs,
    /// Commits the bundle builds on, all present in the mirror.
    pub prerequisites: BTreeSet<ObjectId>,
    /// `None` when the pack holds no objects (nothing new, or an empty upstream).
    pub pack: Option<PackFiles>,
    /// Objects in the pack.
    pub objects: u64,
}

/// What [`apply`] changed, by ref name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefChanges {
    pub created: Vec<String>,
    pub fast_forwarded: Vec<String>,
    /// Moved to a commit that does not descend from the old one (old tip preserved).
    pub forced: Vec<String>,
    /// Gone upstream (old tip preserved).
    pub deleted: Vec<String>,
}

impl RefChanges {
    /// One line for the run's events, e.g. "2 created, 1 fast-forwarded, 1 forced (refs/heads/x), 0 deleted".
    pub fn summary(&self) -> String {
        let named = |list: &[String]| {
            if list.is_empty() {
                String::new()
            } else {
                format!(" ({})", list.join(", "))
            }
        };
        format!(
            "{} created, {} fast-forwarded, {} forced{}, {} deleted{}",
            self.created.len(),
            self.fast_forwarded.len(),
            self.forced.len(),
            named(&self.forced),
            self.deleted.len(),
            named(&self.deleted),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.fast_forwarded.is_empty()
            && self.forced.is_empty()
            && self.deleted.is_empty()
    }
}

/// The verdict of [`check_repo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepoReport {
    pub refs: usize,
    /// Objects reachable from the refs (each hashed and decoded).
    pub objects: u64,
}

/// The header of a bundle, as parsed.
struct Header {
    refs: Refs,
    head: Option<ObjectId>,
    prerequisites: BTreeSet<ObjectId>,
    len: u64,
}

fn parse_header(bundle: &Path, reader: &mut impl BufRead) -> Result<Header> {
    let mut header = Header {
        refs: Refs::new(),
        head: None,
        prerequisites: BTreeSet::new(),
        len: 0,
    };
    let mut line = Vec::new();
    for line_no in 1.. {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_HEADER_BYTES - header.len)
            .read_until(b'\n', &mut line)
            .map_err(io("reading bundle", bundle))?;
        header.len += n as u64;
        if !line.ends_with(b"\n") {
            if header.len >= MAX_HEADER_BYTES {
                return Err(GitCheckError::HeaderTooLarge {
                    bundle: bundle.into(),
                    limit: MAX_HEADER_BYTES,
                });
            }
            return Err(GitCheckError::BadLine {
                bundle: bundle.into(),
                line_no,
                line: String::from_utf8_lossy(&line).into_owned(),
                reason: "the bundle ends inside its header".into(),
            });
        }
        if line_no == 1 {
            if line != BUNDLE_V2_SIGNATURE.as_bytes() {
                return Err(GitCheckError::NotABundle {
                    bundle: bundle.into(),
                    first_line: String::from_utf8_lossy(&line).trim_end().to_string(),
                });
            }
            continue;
        }
        if line == b"\n" {
            return Ok(header);
        }
        let bad = |reason: &str| GitCheckError::BadLine {
            bundle: bundle.into(),
            line_no,
            line: String::from_utf8_lossy(&line).trim_end().to_string(),
            reason: reason.into(),
        };
        let text = std::str::from_utf8(&line[..line.len() - 1]).map_err(|_| bad("not UTF-8"))?;
        if let Some(rest) = text.strip_prefix('-') {
            let hex = rest.split(' ').next().unwrap_or_default();
            let id =
                parse_id(hex).ok_or_else(|| bad("a prerequisite must start with a 40-hex id"))?;
            header.prerequisites.insert(id);
            continue;
        }
        let (hex, name) = text
            .split_once(' ')
            .ok_or_else(|| bad("expected \"<id> <ref name>\""))?;
        let id = parse_id(hex).ok_or_else(|| bad("the object id is not 40 hex digits"))?;
        if name == "HEAD" {
            if header.head.replace(id).is_some() {
                return Err(GitCheckError::DuplicateRef {
                    bundle: bundle.into(),
                    name: name.into(),
                });
            }
            continue;
        }
        if !name.starts_with("refs/") {
            return Err(bad("ref names must start with refs/"));
        }
        if let Err(e) = gix::validate::reference::name(name.as_bytes().as_bstr()) {
            return Err(bad(&format!("invalid ref name: {e}")));
        }
        if name.starts_with(ARK_NAMESPACE) {
            return Err(bad("refs/ark/ is the commander's own namespace"));
        }
        if header.refs.insert(name.into(), id.to_string()).is_some() {
            return Err(GitCheckError::DuplicateRef {
                bundle: bundle.into(),
                name: name.into(),
            });
        }
    }
    unreachable!("the header loop only ends by returning")
}

/// A full-length lowercase hex SHA-1.
fn parse_id(hex: &str) -> Option<ObjectId> {
    if hex.len() != 40
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    ObjectId::from_hex(hex.as_bytes()).ok()
}

fn open_odb(objects: &Path) -> Result<gix::odb::Handle> {
    gix::odb::at(objects).map_err(|e| GitCheckError::Odb {
        dir: objects.into(),
        source: e.into(),
    })
}

/// The mirror's object database, if the mirror exists.
fn mirror_odb(mirror: &Path) -> Result<Option<gix::odb::Handle>> {
    let objects = mirror.join("objects");
    if objects.is_dir() {
        Ok(Some(open_odb(&objects)?))
    } else {
        Ok(None)
    }
}

/// Checks `bundle` against the landed `mirror` (which may not exist yet),
/// indexing its pack into `scratch`: strict header, every object hashed,
/// prerequisites in the mirror, every ref and every object reachable from
/// it present (in the pack or the mirror) and decodable.
pub fn check_bundle(bundle: &Path, mirror: &Path, scratch: &Path) -> Result<CheckedBundle> {
    let file = std::fs::File::open(bundle).map_err(io("opening bundle", bundle))?;
    let mut reader = BufReader::new(file);
    let header = parse_header(bundle, &mut reader)?;
    let mirror_db = mirror_odb(mirror)?;
    for id in &header.prerequisites {
        if !mirror_db.as_ref().is_some_and(|db| db.exists(id)) {
            return Err(GitCheckError::MissingPrerequisite {
                id: *id,
                mirror: mirror.into(),
            });
        }
    }

    let work = scratch.join(SCRATCH_DIR);
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(io("clearing scratch", &work))?;
    }
    let pack_dir = work.join("objects/pack");
    std::fs::create_dir_all(&pack_dir).map_err(io("creating scratch", &pack_dir))?;
    let pack = index_pack(bundle, header.len, &pack_dir, mirror_db.clone())?;

    let corrupt = |reason: String| GitCheckError::CorruptPack {
        bundle: bundle.into(),
        reason,
    };
    let (pack_db, pack_ids) = match &pack {
        Some(files) => {
            let index = gix::odb::pack::index::File::at(&files.index, gix::hash::Kind::Sha1)
                .map_err(|e| corrupt(e.to_string()))?;
            let ids: Vec<ObjectId> = index.iter().map(|entry| entry.oid).collect();
            (Some(open_odb(&work.join("objects"))?), ids)
        }
        None => (None, Vec::new()),
    };

    let has = |id: &ObjectId| {
        pack_db.as_ref().is_some_and(|db| db.exists(id))
            || mirror_db.as_ref().is_some_and(|db| db.exists(id))
    };
    let mut roots = Vec::new();
    let head = header.head.map(|id| ("HEAD".to_string(), id));
    for (name, id) in header
        .refs
        .iter()
        .map(|(name, hex)| {
            (
                name.clone(),
                parse_id(hex).unwrap_or(ObjectId::null(gix::hash::Kind::Sha1)),
            )
        })
        .chain(head)
    {
        if !has(&id) {
            return Err(GitCheckError::MissingRefTarget { name, id });
        }
        roots.push((id, name));
    }
    roots.extend(pack_ids.iter().map(|id| (*id, format!("pack object {id}"))));
    if let Some(pack_db) = &pack_db {
        Walk::new(pack_db, mirror_db.as_ref()).run(roots)?;
    }
    Ok(CheckedBundle {
        refs: header.refs,
        prerequisites: header.prerequisites,
        objects: pack_ids.len() as u64,
        pack,
    })
}

/// Indexes the pack that follows the header (`offset`) into `pack_dir`;
/// `None` for a pack without objects (whose checksum is still checked).
fn index_pack(
    bundle: &Path,
    offset: u64,
    pack_dir: &Path,
    thin_bases: Option<gix::odb::Handle>,
) -> Result<Option<PackFiles>> {
    let corrupt = |reason: String| GitCheckError::CorruptPack {
        bundle: bundle.into(),
        reason,
    };
    let mut file = std::fs::File::open(bundle).map_err(io("opening bundle", bundle))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(io("reading bundle", bundle))?;
    let mut head = [0u8; 12];
    file.read_exact(&mut head)
        .map_err(|e| corrupt(format!("no pack header: {e}")))?;
    if &head[..4] != b"PACK" {
        return Err(corrupt("the data after the header is not a pack".into()));
    }
    if u32::from_be_bytes([head[8], head[9], head[10], head[11]]) == 0 {
        let mut rest = Vec::new();
        file.read_to_end(&mut rest)
            .map_err(io("reading bundle", bundle))?;
        let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
        hasher.update(&head);
        let expected = hasher.try_finalize().map_err(|e| corrupt(e.to_string()))?;
        if rest != expected.as_bytes() {
            return Err(corrupt("the empty pack's checksum does not match".into()));
        }
        return Ok(None);
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(io("reading bundle", bundle))?;
    let mut reader = BufReader::new(file);
    let options = gix::odb::pack::bundle::write::Options {
        // The NAS shares its cores with serving; one thread is enough for bundles.
        thread_limit: Some(1),
        iteration_mode: gix::odb::pack::data::input::Mode::Verify,
        index_version: gix::odb::pack::index::Version::V2,
        object_hash: gix::hash::Kind::Sha1,
    };
    let outcome = gix::odb::pack::Bundle::write_to_directory(
        &mut reader,
        Some(pack_dir),
        &mut gix::progress::Discard,
        &AtomicBool::new(false),
        thin_bases,
        options,
    )
    .map_err(|e| corrupt(error_chain(&e)))?;
    if let Some(keep) = &outcome.keep_path {
        let _ = std::fs::remove_file(keep);
    }
    match (outcome.data_path, outcome.index_path) {
        (Some(pack), Some(index)) => Ok(Some(PackFiles { pack, index })),
        _ => Err(corrupt("indexing wrote no pack".into())),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A connectivity walk over `primary`, stopping at objects `boundary` has
/// (closed by the module's invariant). Counts the objects it decoded.
struct Walk<'a> {
    primary: &'a gix::odb::Handle,
    boundary: Option<&'a gix::odb::Handle>,
    seen: HashSet<ObjectId>,
    decoded: u64,
}

impl<'a> Walk<'a> {
    fn new(primary: &'a gix::odb::Handle, boundary: Option<&'a gix::odb::Handle>) -> Self {
        Self {
            primary,
            boundary,
            seen: HashSet::new(),
            decoded: 0,
        }
    }

    fn run(&mut self, roots: Vec<(ObjectId, String)>) -> Result<u64> {
        let mut buf = Vec::new();
        for (root, label) in roots {
            let mut stack = vec![root];
            while let Some(id) = stack.pop() {
                if !self.seen.insert(id) {
                    continue;
                }
                let missing = || GitCheckError::MissingObject {
                    id,
                    from: label.clone(),
                };
                let data = match self.primary.try_find(&id, &mut buf) {
                    Ok(Some(data)) => data,
                    Ok(None) if self.boundary.is_some_and(|b| b.exists(&id)) => continue,
                    Ok(None) => return Err(missing()),
                    Err(e) => {
                        return Err(GitCheckError::BadObject {
                            id,
                            from: label.clone(),
                            kind: Kind::Blob,
                            reason: error_chain(e.as_ref()),
                        })
                    }
                };
                let kind = data.kind;
                let bad = |reason: String| GitCheckError::BadObject {
                    id,
                    from: label.clone(),
                    kind,
                    reason,
                };
                match kind {
                    Kind::Commit => {
                        let commit = gix::objs::CommitRef::from_bytes(data.data)
                            .map_err(|e| bad(e.to_string()))?;
                        stack.push(commit.tree());
                        stack.extend(commit.parents());
                    }
                    Kind::Tree => {
                        let tree = gix::objs::TreeRef::from_bytes(data.data)
                            .map_err(|e| bad(e.to_string()))?;
                        stack.extend(
                            tree.entries
                                .iter()
                                .filter(|entry| !entry.mode.is_commit())
                                .map(|entry| entry.oid.to_owned()),
                        );
                    }
                    Kind::Tag => {
                        let tag = gix::objs::TagRef::from_bytes(data.data)
                            .map_err(|e| bad(e.to_string()))?;
                        stack.push(tag.target());
                    }
                    Kind::Blob => {}
                }
                self.decoded += 1;
            }
        }
        Ok(self.decoded)
    }
}

/// Lands a checked bundle in the bare mirror at `mirror` (created if
/// missing): the pack, then its index, then one atomic `packed-refs` with
/// the bundle's refs, the kept `refs/ark/` refs, and the old tip of every
/// ref forced or deleted upstream under `refs/ark/previous/<preserve_as>/`.
pub fn apply(checked: &CheckedBundle, mirror: &Path, preserve_as: &str) -> Result<RefChanges> {
    check_stamp(preserve_as)?;
    ensure_bare(mirror)?;
    if let Some(files) = &checked.pack {
        let pack_dir = mirror.join("objects/pack");
        // The index last: git (and gix) only see a pack once its index exists.
        move_into(&files.pack, &pack_dir)?;
        move_into(&files.index, &pack_dir)?;
    }
    let repo =
        gix::open_opts(mirror, gix::open::Options::isolated()).map_err(|e| GitCheckError::Odb {
            dir: mirror.into(),
            source: e.into(),
        })?;

    let old = read_refs(mirror)?;
    let mut state: BTreeMap<String, ObjectId> = old
        .iter()
        .filter(|(name, _)| name.starts_with(ARK_NAMESPACE))
        .map(|(name, id)| (name.clone(), *id))
        .collect();
    let mut changes = RefChanges::default();
    let preserve = |state: &mut BTreeMap<String, ObjectId>, name: &str, id: ObjectId| {
        let rest = name.strip_prefix("refs/").unwrap_or(name);
        state.insert(format!("{PRESERVED_PREFIX}{preserve_as}/{rest}"), id);
    };
    for (name, hex) in &checked.refs {
        let new = parse_id(hex).ok_or_else(|| GitCheckError::BadRef {
            dir: mirror.into(),
            name: name.clone(),
            reason: format!("{hex:?} is not an object id"),
        })?;
        state.insert(name.clone(), new);
        match old.get(name) {
            None => changes.created.push(name.clone()),
            Some(old_id) if *old_id == new => {}
            Some(old_id) if descends(&repo, *old_id, new) => {
                changes.fast_forwarded.push(name.clone())
            }
            Some(old_id) => {
                changes.forced.push(name.clone());
                preserve(&mut state, name, *old_id);
            }
        }
    }
    for (name, old_id) in &old {
        if !name.starts_with(ARK_NAMESPACE) && !checked.refs.contains_key(name) {
            changes.deleted.push(name.clone());
            preserve(&mut state, name, *old_id);
        }
    }
    write_refs(mirror, &state)?;
    Ok(changes)
}

/// Removes `refs/ark/previous/<stamp>/…` for every stamp not in `keep`;
/// returns how many refs went.
pub fn prune_preserved(mirror: &Path, keep: &[String]) -> Result<usize> {
    let mut state = read_refs(mirror)?;
    let before = state.len();
    state.retain(|name, _| match name.strip_prefix(PRESERVED_PREFIX) {
        Some(rest) => {
            let stamp = rest.split('/').next().unwrap_or_default();
            keep.iter().any(|k| k == stamp)
        }
        None => true,
    });
    let removed = before - state.len();
    if removed > 0 {
        write_refs(mirror, &state)?;
    }
    Ok(removed)
}

/// The offline check of a whole repository: every pack's checksum and every
/// object's hash, every ref resolving, and everything reachable from the
/// refs present and decodable.
pub fn check_repo(dir: &Path) -> Result<RepoReport> {
    let objects = dir.join("objects");
    if !objects.is_dir() || !dir.join("HEAD").is_file() {
        return Err(GitCheckError::Integrity {
            dir: dir.into(),
            source: "not a bare Git repository (no HEAD or objects/)".into(),
        });
    }
    let odb = open_odb(&objects)?;
    odb.store_ref()
        .verify_integrity(
            &mut gix::progress::Discard,
            &AtomicBool::new(false),
            gix::odb::pack::index::verify::integrity::Options::default(),
        )
        .map_err(|e| GitCheckError::Integrity {
            dir: dir.into(),
            source: error_chain(&e).into(),
        })?;
    let refs = read_refs(dir)?;
    let mut roots = Vec::new();
    for (name, id) in &refs {
        if !odb.exists(id) {
            return Err(GitCheckError::BadRef {
                dir: dir.into(),
                name: name.clone(),
                reason: format!("it points to {id}, which the repository lacks"),
            });
        }
        roots.push((*id, name.clone()));
    }
    let objects = Walk::new(&odb, None).run(roots)?;
    Ok(RepoReport {
        refs: refs.len(),
        objects,
    })
}

fn check_stamp(stamp: &str) -> Result<()> {
    let ok = !stamp.is_empty()
        && !stamp.starts_with('.')
        && !stamp.ends_with(".lock")
        && !stamp.contains("..")
        && stamp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(GitCheckError::BadStamp {
            stamp: stamp.into(),
        })
    }
}

/// True when `new` is `old` or descends from it (both peeled to commits).
/// A ref that is not a commit (a tag of a tree, say) never fast-forwards.
fn descends(repo: &gix::Repository, old: ObjectId, new: ObjectId) -> bool {
    let peel = |id: ObjectId| {
        repo.find_object(id)
            .ok()?
            .peel_to_kind(Kind::Commit)
            .ok()
            .map(|object| (object.id, object.into_commit().time().ok()))
    };
    let (Some((old, old_time)), Some((new, _))) = (peel(old), peel(new)) else {
        return false;
    };
    if old == new {
        return true;
    }
    // Commits older than `old` cannot lead to it (a skewed clock only makes
    // a fast-forward look forced, which preserves one ref too many).
    let sorting = match old_time {
        Some(time) => gix::revision::walk::Sorting::ByCommitTimeCutoff {
            order: gix::traverse::commit::simple::CommitTimeOrder::NewestFirst,
            seconds: time.seconds,
        },
        None => gix::revision::walk::Sorting::BreadthFirst,
    };
    let Ok(walk) = repo.rev_walk([new]).sorting(sorting).all() else {
        return false;
    };
    walk.filter_map(|info| info.ok()).any(|info| info.id == old)
}

/// Creates the minimal bare layout git needs, if `mirror` has none yet
/// (built beside it and renamed, so a crash leaves no half repository).
fn ensure_bare(mirror: &Path) -> Result<()> {
    if mirror.join("HEAD").is_file() && mirror.join("objects").is_dir() {
        return Ok(());
    }
    let parent = mirror.parent().unwrap_or_else(|| Path::new("."));
    let name = mirror.file_name().unwrap_or_default().to_string_lossy();
    let temp = parent.join(format!(".{name}.new-{}", std::process::id()));
    if temp.exists() {
        std::fs::remove_dir_all(&temp).map_err(io("clearing", &temp))?;
    }
    for sub in ["objects/pack", "objects/info", "refs/heads", "refs/tags"] {
        std::fs::create_dir_all(temp.join(sub)).map_err(io("creating", &temp))?;
    }
    std::fs::write(temp.join("HEAD"), "ref: refs/heads/main\n").map_err(io("writing", &temp))?;
    std::fs::write(
        temp.join("config"),
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n",
    )
    .map_err(io("writing", &temp))?;
    if mirror.exists() {
        // An empty directory made by the caller: replace it.
        std::fs::remove_dir(mirror).map_err(io("replacing (not an empty directory)", mirror))?;
    }
    std::fs::rename(&temp, mirror).map_err(io("creating mirror", mirror))?;
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", parent))
}

/// Moves `file` into `dir` under the same name: a rename, or a copy (fsync,
/// rename) when `dir` is on another file system.
fn move_into(file: &Path, dir: &Path) -> Result<()> {
    let name = file.file_name().unwrap_or_default();
    let target = dir.join(name);
    if std::fs::rename(file, &target).is_err() {
        let temp = dir.join(format!("{}.tmp", name.to_string_lossy()));
        std::fs::copy(file, &temp).map_err(io("copying into the mirror", &temp))?;
        std::fs::File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(io("syncing", &temp))?;
        std::fs::rename(&temp, &target).map_err(io("moving into the mirror", &target))?;
        let _ = std::fs::remove_file(file);
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

/// The refs a landed mirror holds from upstream (not the commander's own
/// `refs/ark/…`), as the agent's `known` state: empty when there is no
/// mirror yet.
pub fn landed_refs(mirror: &Path) -> Result<Refs> {
    if !mirror.join("objects").is_dir() {
        return Ok(Refs::new());
    }
    Ok(read_refs(mirror)?
        .into_iter()
        .filter(|(name, _)| !name.starts_with(ARK_NAMESPACE))
        .map(|(name, id)| (name, id.to_string()))
        .collect())
}

/// The refs a bundle's header lists (the header only: cheap).
pub fn bundle_refs(bundle: &Path) -> Result<Refs> {
    let file = std::fs::File::open(bundle).map_err(io("opening bundle", bundle))?;
    Ok(parse_header(bundle, &mut BufReader::new(file))?.refs)
}

/// Every direct ref under `refs/`: `packed-refs`, overridden by loose refs.
fn read_refs(dir: &Path) -> Result<BTreeMap<String, ObjectId>> {
    let mut refs = BTreeMap::new();
    let packed = dir.join("packed-refs");
    match std::fs::read_to_string(&packed) {
        Ok(text) => {
            for line in text.lines() {
                if line.starts_with('#') || line.starts_with('^') || line.is_empty() {
                    continue;
                }
                let parsed = line
                    .split_once(' ')
                    .and_then(|(hex, name)| Some((parse_id(hex)?, name)));
                let Some((id, name)) = parsed else {
                    return Err(GitCheckError::BadRef {
                        dir: dir.into(),
                        name: line.into(),
                        reason: "malformed packed-refs line".into(),
                    });
                };
                refs.insert(name.to_string(), id);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("reading", &packed)(e)),
    }
    let mut pending = vec![dir.join("refs")];
    while let Some(folder) = pending.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("reading", &folder)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io("reading", &folder))?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let name = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
            let text = text.trim();
            if text.starts_with("ref: ") {
                continue; // symbolic: not part of the mirror's state
            }
            let id = parse_id(text).ok_or_else(|| GitCheckError::BadRef {
                dir: dir.into(),
                name: name.clone(),
                reason: format!("{text:?} is not an object id"),
            })?;
            refs.insert(name, id);
        }
    }
    Ok(refs)
}

/// Replaces the whole ref state with one atomic `packed-refs`, then drops
/// loose refs (which would shadow it) and keeps `HEAD` on a branch.
fn write_refs(dir: &Path, refs: &BTreeMap<String, ObjectId>) -> Result<()> {
    // No "peeled" trait: git then peels annotated tags itself.
    let mut text = String::from("# pack-refs with: sorted \n");
    for (name, id) in refs {
        text.push_str(&format!("{id} {name}\n"));
    }
    let packed = dir.join("packed-refs");
    ark_core::write_atomic(&packed, text.as_bytes(), 0o644).map_err(io("writing", &packed))?;
    remove_loose_refs(&dir.join("refs"), true)?;

    let head = dir.join("HEAD");
    let current = std::fs::read_to_string(&head).unwrap_or_default();
    let target = current.trim().strip_prefix("ref: ").unwrap_or_default();
    if refs.contains_key(target) {
        return Ok(());
    }
    let branch = ["refs/heads/main", "refs/heads/master"]
        .into_iter()
        .find(|b| refs.contains_key(*b))
        .or_else(|| {
            refs.keys()
                .map(String::as_str)
                .find(|name| name.starts_with("refs/heads/"))
        });
    if let Some(branch) = branch {
        ark_core::write_atomic(&head, format!("ref: {branch}\n").as_bytes(), 0o644)
            .map_err(io("writing", &head))?;
    }
    Ok(())
}

/// Deletes every file under `folder` and the emptied sub-directories (the
/// top `refs/` and its `heads/` and `tags/` stay: git wants them).
fn remove_loose_refs(folder: &Path, top: bool) -> Result<()> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("reading", folder)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io("reading", folder))?.path();
        if path.is_dir() {
            remove_loose_refs(&path, false)?;
            let keep = top
                && path
                    .file_name()
                    .is_some_and(|n| n == "heads" || n == "tags");
            if !keep {
                let _ = std::fs::remove_dir(&path);
            }
        } else {
            std::fs::remove_file(&path).map_err(io("removing loose ref", &path))?;
        }
    }
    Ok(())
}
