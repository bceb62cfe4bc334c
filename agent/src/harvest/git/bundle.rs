//! The git bundle (v2) of what the commander's mirror lacks: which objects
//! go in it (here) and its pack, deltified from the mirror's own ([`pack`]).

use super::pack::{self, Receiver};
use super::*;

/// Writes a git bundle v2 of `refs` (from the mirror at `dir`) for a receiver
/// that already has `known` (ids the mirror lacks are ignored): prerequisite
/// lines for the known commits, ref lines, a blank line, then a pack of
/// every object reachable from `refs` and not from the known tips, its
/// deltas reused from the mirror's packs (thin against the known tips).
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
    let mut receiver = Receiver::new(prerequisites.keys().copied().collect(), &set.known);
    let stats = pack::write_pack(&repo, dir, &set.order, &mut receiver, &mut out)?;
    out.flush()?;
    Ok(BundleSummary {
        objects: set.order.len() as u64,
        pack_bytes: stats.bytes,
        refs: refs.len(),
        deltas: stats.deltas,
        thin_deltas: stats.thin_deltas,
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
        pack::load(self.repo, self.dir, id)
    }

    fn decode_error(&self, id: ObjectId, e: impl Into<Cause>) -> GitError {
        pack::object_error(self.dir, id, e)
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
}
