//! The commander's checks of the Git mirror kind: a bundle from an agent is
//! parsed strictly, its pack indexed (which hashes every object) and its
//! connectivity proven before [`apply`] lands it in the bare mirror on the
//! NAS with one atomic ref update; [`check_repo`] is the offline check of a
//! whole landed mirror. Nothing the agent says is trusted. Scheduling, the
//! upload itself and retention policy live elsewhere.
//!
//! Invariant that keeps a bundle check proportional to the bundle: every
//! object in a landed mirror has all it references in the mirror too (only
//! checked bundles land, and every object a bundle's pack holds names only
//! objects in the pack or the mirror). So a bundle's check decodes each of
//! its pack's objects once, in the same delta-tree order as the indexing,
//! and looks up what each one names; [`check_repo`] walks everything.
//!
//! The mirror's refs live in `packed-refs` only: replacing that one file
//! (temp file, fsync, rename) is the atomic switch from one ref state to the
//! next. Refs under `refs/ark/` are the commander's own: old tips kept after
//! a force-push or a deletion upstream, as `refs/ark/previous/<stamp>/…`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
        "a REF_DELTA in the pack of bundle {} names base {id}, which is not in the mirror at {}: \
         refused (a base inside the pack must come earlier and be named by its offset, as \
         OFS_DELTA); the agent's next run, with the mirror's current refs as known, sends what \
         is missing",
        bundle.display(),
        mirror.display()
    )]
    MissingDeltaBase {
        bundle: PathBuf,
        id: ObjectId,
        mirror: PathBuf,
    },
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

///
/// Long by design: a strict line-by-line parser of the bundle header, one
/// refusal per malformed line.
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
    // A thin pack's REF_DELTA bases come from the mirror; without a mirror,
    // from the (empty) scratch store, so a missing base is named, not a
    // "ref deltas unsupported".
    let bases = match &mirror_db {
        Some(db) => db.clone(),
        None => open_odb(&work.join("objects"))?,
    };
    let pack = index_pack(bundle, header.len, &pack_dir, bases).map_err(|e| match e {
        IndexError::MissingBase(id) => GitCheckError::MissingDeltaBase {
            bundle: bundle.into(),
            id,
            mirror: mirror.into(),
        },
        IndexError::Refused(e) => e,
    })?;

    let corrupt = |reason: String| GitCheckError::CorruptPack {
        bundle: bundle.into(),
        reason,
    };
    let index = match &pack {
        Some(files) => Some(
            gix::odb::pack::index::File::at(&files.index, gix::hash::Kind::Sha1)
                .map_err(|e| corrupt(e.to_string()))?,
        ),
        None => None,
    };
    let has = |id: &ObjectId| {
        index
            .as_ref()
            .is_some_and(|index| index.lookup(id).is_some())
            || mirror_db.as_ref().is_some_and(|db| db.exists(id))
    };
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
    }
    // Every ref is in the pack or the mirror, every pack object's links are
    // too, and the mirror is closed: everything reachable is present.
    if let (Some(files), Some(index)) = (&pack, &index) {
        check_links(bundle, files, index, mirror_db.as_ref())?;
    }
    Ok(CheckedBundle {
        refs: header.refs,
        prerequisites: header.prerequisites,
        objects: index
            .as_ref()
            .map_or(0, |index| u64::from(index.num_objects())),
        pack,
    })
}

/// Why [`index_pack`] refused a pack.
enum IndexError {
    /// A REF_DELTA's base is neither in `thin_bases` nor (by gix's rule) in
    /// the pack: the caller names the mirror.
    MissingBase(ObjectId),
    Refused(GitCheckError),
}

impl From<GitCheckError> for IndexError {
    fn from(e: GitCheckError) -> Self {
        Self::Refused(e)
    }
}

/// Indexes the pack that follows the header (`offset`) into `pack_dir`,
/// resolving every delta (its result hashed, its size checked against the
/// header): OFS_DELTA bases must come earlier in the pack, REF_DELTA bases
/// are looked up in `thin_bases` and appended (the pack lands complete);
/// `None` for a pack without objects (whose checksum is still checked).
fn index_pack(
    bundle: &Path,
    offset: u64,
    pack_dir: &Path,
    thin_bases: gix::odb::Handle,
) -> Result<Option<PackFiles>, IndexError> {
    let corrupt = |reason: String| {
        IndexError::Refused(GitCheckError::CorruptPack {
            bundle: bundle.into(),
            reason,
        })
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
    let objects = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    // Every object takes at least two bytes of the pack (its type and size
    // header, and a compressed body); a count the rest of the file cannot
    // hold is a lie that would make the indexer reserve memory for it.
    let rest = std::fs::metadata(bundle)
        .map_err(io("reading bundle", bundle))?
        .len()
        .saturating_sub(offset + 12 + 20);
    if u64::from(objects) > rest / 2 {
        return Err(corrupt(format!(
            "the pack claims {objects} objects, more than its {rest} bytes can hold"
        )));
    }
    if objects == 0 {
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
    let options = gix::odb::pack::bundle::write::Options {
        // One thread (gix is built without `parallel`, so it could not use
        // more): its parallel delta traversal parks a watcher thread that
        // sleeps 50 ms at a time, which made every pass up to 50 ms slower
        // (a thin bundle's check 2 ms → 100 ms) and, on 2 busy cores, no
        // faster for large packs (bench/RESULTS.md section 16). The NAS's
        // other cores stay free for serving.
        thread_limit: Some(1),
        iteration_mode: gix::odb::pack::data::input::Mode::Verify,
        index_version: gix::odb::pack::index::Version::V2,
        object_hash: gix::hash::Kind::Sha1,
    };
    // gix-pack 0.64 panics on some hostile entry headers (a size varint of
    // more than nine bytes overflows its shift; fixed upstream in 0.78):
    // whatever the library does on bytes an agent sent, a panic is a
    // corrupt pack, never a crashed upload task.
    // A pack without REF_DELTA entries is indexed without a base lookup:
    // gix then checks each entry's inflated size against its header before
    // it allocates by it. With a lookup (a thin pack) gix reserves each
    // entry's declared size up front, so a hostile header could make it
    // reserve any amount: a thin pack's entries are first checked here
    // ([`check_entry_sizes`]), then indexed with the lookup.
    let index = |thin_bases: Option<gix::odb::Handle>| {
        let mut reader = BufReader::new(&file);
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(io("reading bundle", bundle))?;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            gix::odb::pack::Bundle::write_to_directory(
                &mut reader,
                Some(pack_dir),
                &mut gix::progress::Discard,
                &AtomicBool::new(false),
                thin_bases,
                options.clone(),
            )
        }))
        .map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            corrupt(format!(
                "the pack's entries are malformed (indexing failed: {why})"
            ))
        })
    };
    let written = match index(None)? {
        Err(e) if is_thin(&e) => {
            let mut reader = BufReader::new(&file);
            reader
                .seek(SeekFrom::Start(offset + 12))
                .map_err(io("reading bundle", bundle))?;
            check_entry_sizes(&mut reader, objects).map_err(corrupt)?;
            index(Some(thin_bases))?
        }
        written => written,
    };
    let outcome = written.map_err(|e| match missing_base(&e) {
        Some(id) => IndexError::MissingBase(id),
        None => corrupt(error_chain(&e)),
    })?;
    if let Some(keep) = &outcome.keep_path {
        let _ = std::fs::remove_file(keep);
    }
    match (outcome.data_path, outcome.index_path) {
        (Some(pack), Some(index)) => Ok(Some(PackFiles { pack, index })),
        _ => Err(corrupt("indexing wrote no pack".into())),
    }
}

/// Whether indexing without a base lookup failed because the pack is thin
/// (it has a REF_DELTA entry).
fn is_thin(error: &gix::odb::pack::bundle::write::Error) -> bool {
    use gix::odb::pack::bundle::write::Error as Write;
    use gix::odb::pack::index::write::Error as Index;
    matches!(error, Write::IndexWrite(Index::IteratorInvariantNoRefDelta))
}

/// Checks the `objects` entries of a pack from `reader` (just after its
/// 12-byte header): each entry's header is well formed (a size of at most
/// 64 bits, a delta base offset of at most ten bytes) and its zlib stream
/// inflates to exactly the size it declares. What it reads is inflated into
/// a small buffer and thrown away: nothing is allocated by a declared size.
fn check_entry_sizes(reader: &mut impl BufRead, objects: u32) -> Result<(), String> {
    let mut inflate = gix::features::zlib::Inflate::default();
    let mut out = vec![0u8; 64 * 1024];
    for at in 0..objects {
        let read = |reader: &mut dyn BufRead| -> Result<u8, String> {
            let mut one = [0u8; 1];
            reader
                .read_exact(&mut one)
                .map_err(|e| format!("entry {at}: its header is cut short: {e}"))?;
            Ok(one[0])
        };
        let first = read(reader)?;
        let kind = (first >> 4) & 7;
        let (mut size, mut shift, mut c) = (u64::from(first & 15), 4u32, first);
        while c & 0x80 != 0 {
            c = read(reader)?;
            if shift > 60 {
                return Err(format!(
                    "entry {at}: its size header is longer than 64 bits"
                ));
            }
            size |= u64::from(c & 0x7f) << shift;
            shift += 7;
        }
        match kind {
            6 => {
                let mut n = 0;
                loop {
                    n += 1;
                    if n > 10 {
                        return Err(format!("entry {at}: its delta base offset is too long"));
                    }
                    if read(reader)? & 0x80 == 0 {
                        break;
                    }
                }
            }
            7 => {
                let mut id = [0u8; 20];
                reader
                    .read_exact(&mut id)
                    .map_err(|e| format!("entry {at}: its base id is cut short: {e}"))?;
            }
            1..=4 => {}
            other => return Err(format!("entry {at}: unknown object type {other}")),
        }
        inflate.reset();
        let mut inflated = 0u64;
        loop {
            let input = reader.fill_buf().map_err(|e| format!("entry {at}: {e}"))?;
            if input.is_empty() {
                return Err(format!("entry {at}: its compressed data is cut short"));
            }
            let (status, used, made) = inflate
                .once(input, &mut out)
                .map_err(|e| format!("entry {at}: its compressed data is corrupt: {e}"))?;
            reader.consume(used);
            inflated += made as u64;
            if inflated > size {
                return Err(format!(
                    "entry {at}: inflates to more than the {size} bytes its header declares"
                ));
            }
            if status == gix::features::zlib::Status::StreamEnd {
                break;
            }
            if used == 0 && made == 0 {
                return Err(format!("entry {at}: its compressed data does not advance"));
            }
        }
        if inflated != size {
            return Err(format!(
                "entry {at}: inflates to {inflated} bytes, its header declares {size}"
            ));
        }
    }
    Ok(())
}

/// The base a REF_DELTA lacked, when that is why indexing failed.
fn missing_base(error: &(dyn std::error::Error + 'static)) -> Option<ObjectId> {
    use gix::odb::pack::data::input::Error as Input;
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(Input::NotFound { object_id }) = e.downcast_ref::<Input>() {
            return Some(*object_id);
        }
        cause = e.source();
    }
    None
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

/// Every object of the indexed pack decoded once (its deltas resolved along
/// the pack's delta tree, as [`index_pack`] resolved them) and every object it
/// names present in the pack or in `boundary` (closed by the module's
/// invariant). The ids are not hashed again: [`index_pack`] computed them
/// from these same bytes moments ago.
fn check_links(
    bundle: &Path,
    files: &PackFiles,
    index: &gix::odb::pack::index::File,
    boundary: Option<&gix::odb::Handle>,
) -> Result<()> {
    use gix::odb::pack::index::traverse::{with_index, Error as Traverse, SafetyCheck};
    let corrupt = |reason: String| GitCheckError::CorruptPack {
        bundle: bundle.into(),
        reason,
    };
    let pack = gix::odb::pack::data::File::at(&files.pack, gix::hash::Kind::Sha1)
        .map_err(|e| corrupt(e.to_string()))?;
    // The first refusal; the processor only returns a marker to stop the
    // traversal (its error type must be a plain `std::error::Error`).
    let refused = std::sync::Mutex::new(None);
    let refuse = |e: GitCheckError| {
        let mut slot = refused.lock().unwrap_or_else(|poison| poison.into_inner());
        slot.get_or_insert(e);
        std::fmt::Error
    };
    // What pack objects name outside the pack, each with the first object
    // naming it: looked up in the mirror once the traversal is done (the
    // mirror's handle stays on this thread). One entry per distinct id the
    // pack's decoded objects spell out: bounded by the pack's size (a new
    // id costs the pack at least a few bytes even compressed, so a hostile
    // pack buys some 10 bytes of map per byte it sends).
    let outside = std::sync::Mutex::new(HashMap::new());
    let (outside_ids, has_boundary) = (&outside, boundary.is_some());
    let mut named = Vec::new();
    let processor = move |kind: Kind,
                          data: &[u8],
                          entry: &gix::odb::pack::index::Entry,
                          _: &dyn gix::progress::Progress| {
        let from = || format!("pack object {}", entry.oid);
        named.clear();
        links(kind, data, &mut named).map_err(|reason| {
            refuse(GitCheckError::BadObject {
                id: entry.oid,
                from: from(),
                kind,
                reason,
            })
        })?;
        for id in named.iter().filter(|id| index.lookup(id).is_none()) {
            if !has_boundary {
                return Err(refuse(GitCheckError::MissingObject {
                    id: *id,
                    from: from(),
                }));
            }
            let mut outside = outside_ids.lock().unwrap_or_else(|p| p.into_inner());
            outside.entry(*id).or_insert(entry.oid);
        }
        Ok(())
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        index.traverse_with_index(
            &pack,
            processor,
            &mut gix::progress::Discard,
            &AtomicBool::new(false),
            with_index::Options {
                thread_limit: Some(1),
                check: SafetyCheck::SkipFileAndObjectChecksumVerification,
            },
        )
    }));
    if let Some(e) = refused.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err(Traverse::Processor(_))) => {
            return Err(corrupt("the check stopped without a reason".into()))
        }
        Ok(Err(e)) => return Err(corrupt(error_chain(&e))),
        Err(_) => return Err(corrupt("decoding the indexed pack panicked".into())),
    }
    let outside = outside.into_inner().unwrap_or_else(|p| p.into_inner());
    for (id, named_by) in outside {
        if !boundary.is_some_and(|db| db.exists(&id)) {
            return Err(GitCheckError::MissingObject {
                id,
                from: format!("pack object {named_by}"),
            });
        }
    }
    Ok(())
}

/// Appends to `out` the objects a `kind` object with body `data` names
/// (a commit's tree and parents, a tree's entries but not its submodule
/// commits, a tag's target); `Err` when the body does not decode.
fn links(kind: Kind, data: &[u8], out: &mut Vec<ObjectId>) -> std::result::Result<(), String> {
    match kind {
        Kind::Commit => {
            let commit = gix::objs::CommitRef::from_bytes(data).map_err(|e| e.to_string())?;
            out.push(commit.tree());
            out.extend(commit.parents());
        }
        Kind::Tree => {
            let tree = gix::objs::TreeRef::from_bytes(data).map_err(|e| e.to_string())?;
            out.extend(
                tree.entries
                    .iter()
                    .filter(|entry| !entry.mode.is_commit())
                    .map(|entry| entry.oid.to_owned()),
            );
        }
        Kind::Tag => {
            let tag = gix::objs::TagRef::from_bytes(data).map_err(|e| e.to_string())?;
            out.push(tag.target());
        }
        Kind::Blob => {}
    }
    Ok(())
}

/// A connectivity walk of a whole repository ([`check_repo`]): every object
/// reachable from the roots present and decodable. Counts the objects it
/// decoded.
struct Walk<'a> {
    odb: &'a gix::odb::Handle,
    seen: HashSet<ObjectId>,
    decoded: u64,
}

impl<'a> Walk<'a> {
    fn new(odb: &'a gix::odb::Handle) -> Self {
        Self {
            odb,
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
                let data = match self.odb.try_find(&id, &mut buf) {
                    Ok(Some(data)) => data,
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
                links(kind, data.data, &mut stack).map_err(|reason| GitCheckError::BadObject {
                    id,
                    from: label.clone(),
                    kind,
                    reason,
                })?;
                self.decoded += 1;
            }
        }
        Ok(self.decoded)
    }
}

mod mirror;
pub use mirror::{apply, bundle_refs, bundle_refs_in, check_repo, landed_refs, prune_preserved};
