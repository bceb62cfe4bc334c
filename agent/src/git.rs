//! The Git mirror kind on the agent: a bare mirror of every ref of an
//! upstream repository ([`mirror`]), and the git bundle v2 that carries what
//! changed since the commander's last landed state ([`write_bundle`]).
//!
//! Everything here is blocking: gix's blocking HTTP client panics inside a
//! tokio runtime, so callers wrap these functions in `spawn_blocking`. This
//! module does not decide when to mirror, nor upload anything; the commander
//! trusts none of it and checks every bundle (`ark_commander::git_check`).
//!
//! The bundle's pack is undeltified and written here: the object set is a
//! commit walk from the new tips that hides the known tips, and for trees
//! only the entries that differ from the same path in every parent's tree
//! (an object equal to a parent's is reachable from that parent, which is
//! either known or itself walked, so nothing is missed).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use gix::bstr::BString;
use gix::objs::Kind;
use gix::ObjectId;

/// Ref name → hex object id (e.g. "refs/heads/main" → "4b82…"). BTreeMap for a stable order.
pub type Refs = BTreeMap<String, String>;

/// A boxed error from gix: its many error types only ever travel as a cause.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The refspec of a mirror: every ref, force-updated, under the same name.
const MIRROR_REFSPEC: &str = "+refs/*:refs/*";

/// The first line of every bundle this module writes (git's v2 format: v3
/// adds capabilities the commander refuses).
pub const BUNDLE_V2_SIGNATURE: &str = "# v2 git bundle\n";

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
    let target = current.trim().strip_prefix("ref: ").unwrap_or_default();
    if refs.contains_key(target) {
        return Ok(());
    }
    let Some(branch) = ["refs/heads/main", "refs/heads/master"]
        .into_iter()
        .find(|b| refs.contains_key(*b))
        .or_else(|| {
            refs.keys()
                .map(String::as_str)
                .find(|name| name.starts_with("refs/heads/"))
        })
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

/// Writes a git bundle v2 of `refs` (from the mirror at `dir`) for a receiver
/// that already has `known` (ids the mirror lacks are ignored): prerequisite
/// lines for the known commits, ref lines, a blank line, then an undeltified
/// pack of every object reachable from `refs` and not from the known tips.
pub fn write_bundle(
    dir: &Path,
    refs: &Refs,
    known: &Refs,
    mut out: impl Write,
) -> Result<BundleSummary> {
    let repo = open(dir)?;
    let mut set = ObjectSet::new(&repo, dir);

    // The receiver has every known tip and everything behind it.
    let mut prerequisites: BTreeMap<ObjectId, String> = BTreeMap::new();
    for (name, hex) in known {
        let Ok(id) = ObjectId::from_hex(hex.as_bytes()) else {
            continue;
        };
        if !repo.has_object(id) {
            continue;
        }
        if let Some(commit) = set.peel_known(id)? {
            prerequisites.entry(commit).or_insert_with(|| name.clone());
        }
    }

    let mut tips = Vec::new();
    for (name, hex) in refs {
        let id = ObjectId::from_hex(hex.as_bytes()).map_err(|_| GitError::BadRef {
            name: name.clone(),
            value: hex.clone(),
        })?;
        if let Some(commit) = set.add_tip(id)? {
            tips.push(commit);
        }
    }
    if !tips.is_empty() {
        let walk = repo
            .rev_walk(tips)
            .with_hidden(prerequisites.keys().copied())
            .all()
            .map_err(|e| GitError::Repo {
                dir: dir.into(),
                source: e.into(),
            })?;
        for info in walk {
            let info = info.map_err(|e| GitError::Repo {
                dir: dir.into(),
                source: e.into(),
            })?;
            set.add_commit(info.id)?;
        }
    }

    let mut header = String::from(BUNDLE_V2_SIGNATURE);
    for (id, comment) in &prerequisites {
        header.push_str(&format!("-{id} {comment}\n"));
    }
    for (name, hex) in refs {
        header.push_str(&format!("{hex} {name}\n"));
    }
    header.push('\n');
    out.write_all(header.as_bytes())?;
    let pack_bytes = set.write_pack(&mut out)?;
    out.flush()?;
    Ok(BundleSummary {
        objects: set.order.len() as u64,
        pack_bytes,
        refs: refs.len(),
    })
}

/// The objects a bundle's pack must hold, in the order they are written.
struct ObjectSet<'r> {
    repo: &'r gix::Repository,
    dir: &'r Path,
    /// Objects the receiver has (known tags and non-commit tips).
    known: HashSet<ObjectId>,
    /// Objects already chosen or known: each is decided once.
    seen: HashSet<ObjectId>,
    order: Vec<ObjectId>,
}

impl<'r> ObjectSet<'r> {
    fn new(repo: &'r gix::Repository, dir: &'r Path) -> Self {
        Self {
            repo,
            dir,
            known: HashSet::new(),
            seen: HashSet::new(),
            order: Vec::new(),
        }
    }

    fn load(&self, id: ObjectId) -> Result<(Kind, Vec<u8>)> {
        let object = self.repo.find_object(id).map_err(|e| GitError::Object {
            dir: self.dir.into(),
            id,
            source: e.into(),
        })?;
        Ok((object.kind, object.detach().data))
    }

    fn decode_error(&self, id: ObjectId, e: impl Into<Cause>) -> GitError {
        GitError::Object {
            dir: self.dir.into(),
            id,
            source: e.into(),
        }
    }

    /// Marks a known tip (and its tag chain) as present at the receiver;
    /// returns the commit it peels to, if any.
    fn peel_known(&mut self, mut id: ObjectId) -> Result<Option<ObjectId>> {
        loop {
            self.known.insert(id);
            self.seen.insert(id);
            let (kind, data) = self.load(id)?;
            match kind {
                Kind::Tag => {
                    id = gix::objs::TagRefIter::from_bytes(&data)
                        .target_id()
                        .map_err(|e| self.decode_error(id, e))?;
                }
                Kind::Commit => return Ok(Some(id)),
                Kind::Tree | Kind::Blob => return Ok(None),
            }
        }
    }

    fn include(&mut self, id: ObjectId) -> bool {
        if self.seen.insert(id) {
            self.order.push(id);
            true
        } else {
            false
        }
    }

    /// Adds a ref's target and its tag chain; returns the commit to walk.
    fn add_tip(&mut self, mut id: ObjectId) -> Result<Option<ObjectId>> {
        loop {
            if self.known.contains(&id) {
                return Ok(None);
            }
            let (kind, data) = self.load(id)?;
            match kind {
                Kind::Tag => {
                    self.include(id);
                    id = gix::objs::TagRefIter::from_bytes(&data)
                        .target_id()
                        .map_err(|e| self.decode_error(id, e))?;
                }
                Kind::Commit => return Ok(Some(id)),
                Kind::Tree => {
                    self.add_tree(id, &[])?;
                    return Ok(None);
                }
                Kind::Blob => {
                    self.include(id);
                    return Ok(None);
                }
            }
        }
    }

    fn add_commit(&mut self, id: ObjectId) -> Result<()> {
        if !self.include(id) {
            return Ok(());
        }
        let (_, data) = self.load(id)?;
        let tree = gix::objs::CommitRefIter::from_bytes(&data)
            .tree_id()
            .map_err(|e| self.decode_error(id, e))?;
        let parents: Vec<ObjectId> = gix::objs::CommitRefIter::from_bytes(&data)
            .parent_ids()
            .collect();
        let mut parent_trees = Vec::with_capacity(parents.len());
        for parent in parents {
            // A parent the mirror lacks (a shallow upstream) hides nothing.
            if !self.repo.has_object(parent) {
                continue;
            }
            let (_, data) = self.load(parent)?;
            parent_trees.push(
                gix::objs::CommitRefIter::from_bytes(&data)
                    .tree_id()
                    .map_err(|e| self.decode_error(parent, e))?,
            );
        }
        self.add_tree(tree, &parent_trees)
    }

    fn entries(
        &self,
        id: ObjectId,
    ) -> Result<Vec<(BString, gix::objs::tree::EntryMode, ObjectId)>> {
        let (_, data) = self.load(id)?;
        let mut entries = Vec::new();
        for entry in gix::objs::TreeRefIter::from_bytes(&data) {
            let entry = entry.map_err(|e| self.decode_error(id, e))?;
            entries.push((entry.filename.to_owned(), entry.mode, entry.oid.to_owned()));
        }
        Ok(entries)
    }

    /// Adds `id` and the entries that differ from the same path in every
    /// one of `parents` (the trees at the same path in the parent commits).
    fn add_tree(&mut self, id: ObjectId, parents: &[ObjectId]) -> Result<()> {
        if parents.contains(&id) || !self.include(id) {
            return Ok(());
        }
        let parent_entries = parents
            .iter()
            .map(|p| self.entries(*p))
            .collect::<Result<Vec<_>>>()?;
        for (name, mode, oid) in self.entries(id)? {
            if mode.is_commit() {
                continue; // a submodule: its commit lives in another repository
            }
            let same_path = parent_entries
                .iter()
                .filter_map(|entries| entries.iter().find(|(n, _, _)| *n == name));
            let mut subtrees = Vec::new();
            let mut unchanged = false;
            for (_, parent_mode, parent_oid) in same_path {
                unchanged |= *parent_oid == oid;
                if parent_mode.is_tree() {
                    subtrees.push(*parent_oid);
                }
            }
            if unchanged {
                continue;
            }
            if mode.is_tree() {
                self.add_tree(oid, &subtrees)?;
            } else {
                self.include(oid);
            }
        }
        Ok(())
    }

    /// Writes the pack (version 2, undeltified); returns its size in bytes.
    fn write_pack(&self, out: &mut impl Write) -> Result<u64> {
        let mut pack = HashingWriter {
            inner: out,
            hasher: gix::hash::hasher(gix::hash::Kind::Sha1),
            bytes: 0,
        };
        let count = u32::try_from(self.order.len()).map_err(|_| {
            std::io::Error::other("more than 4 billion objects do not fit one pack")
        })?;
        pack.write_all(b"PACK")?;
        pack.write_all(&2u32.to_be_bytes())?;
        pack.write_all(&count.to_be_bytes())?;
        for id in &self.order {
            let (kind, data) = self.load(*id)?;
            pack.write_all(&entry_header(kind, data.len() as u64))?;
            let mut deflate = gix::features::zlib::stream::deflate::Write::new(&mut pack);
            deflate.write_all(&data)?;
            deflate.flush()?;
        }
        let HashingWriter {
            inner,
            hasher,
            bytes,
        } = pack;
        let trailer = hasher
            .try_finalize()
            .map_err(|e| std::io::Error::other(format!("hashing the pack: {e}")))?;
        inner.write_all(trailer.as_bytes())?;
        Ok(bytes + trailer.as_bytes().len() as u64)
    }
}

/// A pack entry's header: the type in bits 4–6 of the first byte, the size
/// in 4 bits there and 7 bits per following byte, high bit = more follows.
fn entry_header(kind: Kind, size: u64) -> Vec<u8> {
    let type_bits: u8 = match kind {
        Kind::Commit => 1,
        Kind::Tree => 2,
        Kind::Blob => 3,
        Kind::Tag => 4,
    };
    let mut bytes = vec![(type_bits << 4) | (size & 0x0f) as u8];
    let mut rest = size >> 4;
    while rest > 0 {
        if let Some(last) = bytes.last_mut() {
            *last |= 0x80;
        }
        bytes.push((rest & 0x7f) as u8);
        rest >>= 7;
    }
    bytes
}

/// Passes bytes through while hashing and counting them (the pack trailer).
struct HashingWriter<W> {
    inner: W,
    hasher: gix::hash::Hasher,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Upstream repositories built with the `git` CLI, for the tests of this
/// crate, of the commander's checks and of the whole swarm (one helper, not
/// three). Not used by the agent itself.
pub mod fixture {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::Refs;

    /// Runs `git ARGS` in `dir` with a fixed identity and dates and no user
    /// or system config; returns stdout, or an error carrying stderr.
    pub fn git(dir: &Path, args: &[&str]) -> std::io::Result<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Ark Test")
            .env("GIT_AUTHOR_EMAIL", "test@ark.invalid")
            .env("GIT_COMMITTER_NAME", "Ark Test")
            .env("GIT_COMMITTER_EMAIL", "test@ark.invalid")
            .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "git {} in {} failed: {}",
                args.join(" "),
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `git clone --mirror` of `up` into `root/name` (replacing what is
    /// there): a mirror made by the git CLI, as the agent's `mirror` leaves it.
    pub fn cli_mirror(root: &Path, up: &Upstream, name: &str) -> std::io::Result<PathBuf> {
        let dir = root.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        git(
            root,
            &[
                "clone",
                "-q",
                "--mirror",
                &up.bare.to_string_lossy(),
                &dir.to_string_lossy(),
            ],
        )?;
        Ok(dir)
    }

    /// The oracle for a landed mirror: `git fsck --full --strict` is clean
    /// and `git clone` from it works. Returns the clone (in `into`).
    pub fn fsck_and_clone(mirror: &Path, into: &Path) -> std::io::Result<PathBuf> {
        git(mirror, &["fsck", "--full", "--strict"])?;
        git(
            into.parent().unwrap_or(into),
            &[
                "clone",
                "-q",
                &mirror.to_string_lossy(),
                &into.to_string_lossy(),
            ],
        )?;
        Ok(into.to_path_buf())
    }

    /// `git ls-remote` of a repository (`HEAD` and peeled `^{}` lines left out).
    pub fn ls_remote(repo: &Path) -> std::io::Result<Refs> {
        let text = git(repo, &["ls-remote", "."])?;
        Ok(text
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .filter(|(_, name)| name.starts_with("refs/") && !name.ends_with("^{}"))
            .map(|(id, name)| (name.to_string(), id.to_string()))
            .collect())
    }

    /// A bare upstream (`bare`) and the work clone that pushes to it (`work`).
    #[derive(Debug)]
    pub struct Upstream {
        pub bare: PathBuf,
        pub work: PathBuf,
    }

    impl Upstream {
        /// An empty bare repository `root/NAME.git`.
        pub fn empty(root: &Path, name: &str) -> std::io::Result<Self> {
            let bare = root.join(format!("{name}.git"));
            let work = root.join(format!("{name}.work"));
            std::fs::create_dir_all(&bare)?;
            git(&bare, &["init", "--bare", "-q", "-b", "main"])?;
            git(
                root,
                &[
                    "clone",
                    "-q",
                    &bare.to_string_lossy(),
                    &work.to_string_lossy(),
                ],
            )?;
            git(&work, &["symbolic-ref", "HEAD", "refs/heads/main"])?;
            Ok(Self { bare, work })
        }

        /// A bare upstream with branches `main` and `feature`, a nested
        /// directory, a lightweight tag, an annotated tag, a tag of that tag,
        /// a tag of a tree, and a notes ref.
        pub fn populated(root: &Path, name: &str) -> std::io::Result<Self> {
            let up = Self::empty(root, name)?;
            up.commit("README", "hello\n")?;
            up.commit("src/lib/a.txt", "a\n")?;
            up.commit("src/lib/b.txt", "b\n")?;
            git(&up.work, &["tag", "v1"])?;
            git(&up.work, &["tag", "-a", "v2", "-m", "release 2"])?;
            git(
                &up.work,
                &["tag", "-a", "v2-signed-off", "v2", "-m", "tag of a tag"],
            )?;
            git(
                &up.work,
                &["tag", "-a", "tree-tag", "HEAD^{tree}", "-m", "a tree"],
            )?;
            git(&up.work, &["notes", "add", "-m", "a note"])?;
            git(&up.work, &["checkout", "-q", "-b", "feature"])?;
            up.commit("src/lib/a.txt", "a on feature\n")?;
            git(&up.work, &["checkout", "-q", "main"])?;
            up.commit("src/main.txt", "main\n")?;
            up.push()?;
            Ok(up)
        }

        /// Commits `content` to `path` on the current branch (not pushed).
        pub fn commit(&self, path: &str, content: &str) -> std::io::Result<()> {
            let file = self.work.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&file, content)?;
            git(&self.work, &["add", "-A"])?;
            git(
                &self.work,
                &["commit", "-q", "-m", &format!("change {path}")],
            )?;
            Ok(())
        }

        /// Force-pushes every branch, tag and note, and prunes deleted ones.
        pub fn push(&self) -> std::io::Result<()> {
            git(
                &self.work,
                &[
                    "push",
                    "-q",
                    "--force",
                    "--prune",
                    "origin",
                    "+refs/heads/*:refs/heads/*",
                    "+refs/tags/*:refs/tags/*",
                    "+refs/notes/*:refs/notes/*",
                ],
            )?;
            Ok(())
        }

        /// Rewrites the tip of `branch` (a force-push after `push`).
        pub fn rewrite(&self, branch: &str) -> std::io::Result<()> {
            git(&self.work, &["checkout", "-q", branch])?;
            git(&self.work, &["commit", "-q", "--amend", "-m", "rewritten"])?;
            git(&self.work, &["checkout", "-q", "main"])?;
            Ok(())
        }

        /// Deletes `branch` locally (gone upstream after `push`).
        pub fn delete_branch(&self, branch: &str) -> std::io::Result<()> {
            git(&self.work, &["checkout", "-q", "main"])?;
            git(&self.work, &["branch", "-q", "-D", branch])?;
            Ok(())
        }

        /// The upstream's refs as `git ls-remote` reports them.
        pub fn refs(&self) -> std::io::Result<Refs> {
            ls_remote(&self.bare)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{cli_mirror, git, ls_remote, Upstream};
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn bundle_file(dir: &Path, refs: &Refs, known: &Refs, path: &Path) -> Result<BundleSummary> {
        let file = std::fs::File::create(path)?;
        write_bundle(dir, refs, known, std::io::BufWriter::new(file))
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
        git(&old, &["bundle", "verify", "-q", &bundle.to_string_lossy()])?;
        git(
            &old,
            &["fetch", "-q", &bundle.to_string_lossy(), "+refs/*:refs/*"],
        )?;
        git(&old, &["fsck", "--full", "--strict"])?;
        assert_eq!(ls_remote(&old)?, up.refs()?);
        Ok(())
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
