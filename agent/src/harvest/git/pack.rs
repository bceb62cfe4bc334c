//! The pack inside a bundle, deltified by reuse: each object's entry is
//! copied from the mirror's own packs (as upstream delivered them) when its
//! delta base is written earlier in this pack (an OFS_DELTA with the
//! distance recomputed) or is an object the commander already has (a
//! REF_DELTA: the pack is thin, and the commander resolves it against its
//! own mirror); any other object is written whole.
//!
//! Why reuse rather than compute deltas: upstream already spent its delta
//! search on these objects, so copying its compressed deltas costs no CPU
//! on a small agent and keeps the first bundle at upstream's size. gix-pack's
//! own generator (`data::output::entry::iter_from_counts`) does the same
//! copy, but it would mark a delta thin against *any* base outside the set,
//! including objects the commander never received; here a thin base must
//! be vouched for (reachable from a tip the commander holds).
//!
//! Chain sanity: a delta is written only after its base (deltas whose base
//! comes later in the set wait for it), so every OFS_DELTA points backwards
//! and no chain can loop; what still waits once every other object is out
//! (a cycle between duplicate copies in two packs) is written whole.

use std::collections::HashMap;

use gix::odb::pack::data::entry::{Header, Location};
use gix::odb::pack::Find as _;

use super::*;

/// How the pack's entries were written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Deltas against an earlier object of the same pack (OFS_DELTA).
    pub deltas: u64,
    /// Deltas against an object the commander has (REF_DELTA: a thin pack).
    pub thin_deltas: u64,
    /// Objects written whole (loose in the mirror, or no usable base).
    pub whole: u64,
    /// Bytes of the pack, trailer included.
    pub bytes: u64,
}

/// What the receiver is known to hold: the commits of the known tips it
/// builds on (`prerequisites`) and every object in their trees, plus the
/// known tips that are not commits. Built on first use: a run without a
/// thin candidate never walks a tree.
pub(super) struct Receiver<'a> {
    pub prerequisites: Vec<ObjectId>,
    pub known: &'a HashSet<ObjectId>,
    has: Option<HashSet<ObjectId>>,
}

impl<'a> Receiver<'a> {
    pub fn new(prerequisites: Vec<ObjectId>, known: &'a HashSet<ObjectId>) -> Self {
        Self {
            prerequisites,
            known,
            has: None,
        }
    }

    /// True when the receiver holds `id` (as far as can be proven cheaply:
    /// the known tips and their trees, where upstream's thin bases live).
    fn has(&mut self, repo: &gix::Repository, dir: &Path, id: ObjectId) -> Result<bool> {
        if self.known.contains(&id) {
            return Ok(true);
        }
        if self.has.is_none() {
            let mut has = HashSet::new();
            let mut stack = Vec::new();
            for commit in &self.prerequisites {
                has.insert(*commit);
                let data = load(repo, dir, *commit)?.1;
                stack.push(
                    gix::objs::CommitRefIter::from_bytes(&data)
                        .tree_id()
                        .map_err(|e| object_error(dir, *commit, e))?,
                );
            }
            while let Some(tree) = stack.pop() {
                if !has.insert(tree) {
                    continue;
                }
                let data = load(repo, dir, tree)?.1;
                for entry in gix::objs::TreeRefIter::from_bytes(&data) {
                    let entry = entry.map_err(|e| object_error(dir, tree, e))?;
                    if entry.mode.is_tree() {
                        stack.push(entry.oid.to_owned());
                    } else if !entry.mode.is_commit() {
                        has.insert(entry.oid.to_owned());
                    }
                }
            }
            self.has = Some(has);
        }
        Ok(self.has.as_ref().is_some_and(|has| has.contains(&id)))
    }
}

pub(super) fn load(repo: &gix::Repository, dir: &Path, id: ObjectId) -> Result<(Kind, Vec<u8>)> {
    let object = repo.find_object(id).map_err(|e| object_error(dir, id, e))?;
    Ok((object.kind, object.detach().data))
}

pub(super) fn object_error(dir: &Path, id: ObjectId, e: impl Into<Cause>) -> GitError {
    GitError::Object {
        dir: dir.into(),
        id,
        source: e.into(),
    }
}

/// One object to write and where the mirror keeps it (`None`: loose).
#[derive(Clone)]
struct Item {
    id: ObjectId,
    location: Option<Location>,
}

/// Writes a version-2 pack of exactly the objects of `order` to `out`.
pub(super) fn write_pack(
    repo: &gix::Repository,
    dir: &Path,
    order: &[ObjectId],
    receiver: &mut Receiver<'_>,
    out: &mut impl Write,
) -> Result<PackStats> {
    let count = u32::try_from(order.len())
        .map_err(|_| std::io::Error::other("more than 4 billion objects do not fit one pack"))?;
    let mut db = repo.objects.clone();
    // Locations are kept across the whole write: a concurrent repack must
    // not unmap the packs they point into.
    db.prevent_pack_unload();
    db.ignore_replacements = true;

    let mut buf = Vec::new();
    let mut items: Vec<Item> = order
        .iter()
        .map(|id| Item {
            id: *id,
            location: db.location_by_oid(id, &mut buf),
        })
        .collect();
    // Loose objects first, then each pack in offset order: an OFS_DELTA's
    // base lies before it in its pack, so it is written first too.
    items.sort_by_key(|item| item.location.as_ref().map(|l| (l.pack_id, l.pack_offset)));

    let mut writer = Writer {
        repo,
        dir,
        db: &db,
        pending: order.iter().copied().collect(),
        at_location: HashMap::new(),
        at_id: HashMap::with_capacity(order.len()),
        offsets: HashMap::new(),
        waiting: HashMap::new(),
        stats: PackStats::default(),
        out: HashingWriter {
            inner: out,
            hasher: gix::hash::hasher(gix::hash::Kind::Sha1),
            bytes: 0,
        },
    };
    writer.out.write_all(b"PACK")?;
    writer.out.write_all(&2u32.to_be_bytes())?;
    writer.out.write_all(&count.to_be_bytes())?;
    for item in items {
        writer.put(item, receiver)?;
    }
    // Left waiting: a base that never came (a cycle among duplicates).
    while let Some(base) = writer.waiting.keys().next().copied() {
        let stuck = writer.waiting.remove(&base).unwrap_or_default();
        for item in stuck {
            writer.write_whole(item.id)?;
            writer.release(item.id, receiver)?;
        }
    }

    let Writer { out, mut stats, .. } = writer;
    let HashingWriter {
        inner,
        hasher,
        bytes,
    } = out;
    let trailer = hasher
        .try_finalize()
        .map_err(|e| std::io::Error::other(format!("hashing the pack: {e}")))?;
    inner.write_all(trailer.as_bytes())?;
    stats.bytes = bytes + trailer.as_bytes().len() as u64;
    Ok(stats)
}

/// The state of one pack being written.
struct Writer<'a, W> {
    repo: &'a gix::Repository,
    dir: &'a Path,
    db: &'a gix::OdbHandle,
    /// Objects of the set not written yet.
    pending: HashSet<ObjectId>,
    /// Where each written object's entry starts in this pack, by its
    /// location in the mirror (for OFS_DELTA bases) and by id.
    at_location: HashMap<(u32, u64), u64>,
    at_id: HashMap<ObjectId, u64>,
    /// Each mirror pack's entry offsets and ids, read when a base outside
    /// the set must be named.
    offsets: HashMap<u32, Vec<(u64, ObjectId)>>,
    /// Deltas whose base is in the set but not written yet, by base.
    waiting: HashMap<ObjectId, Vec<Item>>,
    stats: PackStats,
    out: HashingWriter<W>,
}

/// Where a delta's base is, seen from the pack being written.
enum Base {
    /// Written at this offset of the new pack.
    Written(u64),
    /// In the set, not written yet.
    Later(ObjectId),
    /// Not in the set; the receiver has it.
    Receiver(ObjectId),
    /// Unusable: the object goes whole.
    None,
}

impl<W: Write> Writer<'_, W> {
    /// Writes `item`, or queues it behind its base.
    fn put(&mut self, item: Item, receiver: &mut Receiver<'_>) -> Result<()> {
        let id = item.id;
        if self.write(item, receiver)? {
            self.release(id, receiver)?;
        }
        Ok(())
    }

    /// Writes `item` unless its base comes later (then it waits): true when written.
    fn write(&mut self, item: Item, receiver: &mut Receiver<'_>) -> Result<bool> {
        let entry = item
            .location
            .as_ref()
            .and_then(|location| Some((location.clone(), self.db.entry_by_location(location)?)));
        let Some((location, entry)) = entry else {
            self.write_whole(item.id)?;
            return Ok(true);
        };
        let parsed =
            gix::odb::pack::data::Entry::from_bytes(&entry.data, 0, item.id.as_slice().len())
                .map_err(|e| object_error(self.dir, item.id, e))?;
        let body = usize::try_from(parsed.data_offset)
            .ok()
            .and_then(|at| entry.data.get(at..))
            .ok_or_else(|| object_error(self.dir, item.id, "pack entry shorter than its header"))?;
        let base = match parsed.header {
            Header::OfsDelta { base_distance } => {
                let base_offset = location.pack_offset.checked_sub(base_distance);
                match base_offset.and_then(|o| self.at_location.get(&(location.pack_id, o))) {
                    Some(at) => Base::Written(*at),
                    None => match base_offset.map(|o| self.id_at(location.pack_id, o)) {
                        Some(Some(id)) => self.base(id, receiver)?,
                        _ => Base::None,
                    },
                }
            }
            Header::RefDelta { base_id } => self.base(base_id, receiver)?,
            Header::Commit | Header::Tree | Header::Blob | Header::Tag => {
                // A whole object: its entry is copied byte for byte.
                let start = self.out.bytes;
                self.out.write_all(&entry.data)?;
                self.stats.whole += 1;
                self.written(item, start);
                return Ok(true);
            }
        };
        let start = self.out.bytes;
        let header = match base {
            Base::Written(at) => {
                self.stats.deltas += 1;
                Header::OfsDelta {
                    base_distance: start - at,
                }
            }
            Base::Receiver(base_id) => {
                self.stats.thin_deltas += 1;
                Header::RefDelta { base_id }
            }
            Base::Later(base_id) => {
                self.waiting.entry(base_id).or_default().push(item);
                return Ok(false);
            }
            Base::None => {
                self.write_whole(item.id)?;
                return Ok(true);
            }
        };
        header.write_to(parsed.decompressed_size, &mut self.out)?;
        self.out.write_all(body)?;
        self.written(item, start);
        Ok(true)
    }

    /// Where a base named by id stands.
    fn base(&mut self, id: ObjectId, receiver: &mut Receiver<'_>) -> Result<Base> {
        Ok(if let Some(at) = self.at_id.get(&id) {
            Base::Written(*at)
        } else if self.pending.contains(&id) {
            Base::Later(id)
        } else if receiver.has(self.repo, self.dir, id)? {
            Base::Receiver(id)
        } else {
            Base::None
        })
    }

    /// The id of the entry at `offset` of mirror pack `pack_id`.
    fn id_at(&mut self, pack_id: u32, offset: u64) -> Option<ObjectId> {
        if !self.offsets.contains_key(&pack_id) {
            let mut table = self.db.pack_offsets_and_oid(pack_id)?;
            table.sort_unstable_by_key(|(offset, _)| *offset);
            self.offsets.insert(pack_id, table);
        }
        let table = self.offsets.get(&pack_id)?;
        let at = table.binary_search_by_key(&offset, |(o, _)| *o).ok()?;
        Some(table[at].1)
    }

    fn written(&mut self, item: Item, start: u64) {
        self.pending.remove(&item.id);
        self.at_id.insert(item.id, start);
        if let Some(location) = item.location {
            self.at_location
                .insert((location.pack_id, location.pack_offset), start);
        }
    }

    /// Writes the deltas that were waiting for `id`, now written, and
    /// those waiting for them (a stack: chains can be long).
    fn release(&mut self, id: ObjectId, receiver: &mut Receiver<'_>) -> Result<()> {
        let mut stack = self.waiting.remove(&id).unwrap_or_default();
        while let Some(item) = stack.pop() {
            let id = item.id;
            if self.write(item, receiver)? {
                stack.extend(self.waiting.remove(&id).unwrap_or_default());
            }
        }
        Ok(())
    }

    /// Writes `id` whole: its type and size, then its zlib-compressed body.
    fn write_whole(&mut self, id: ObjectId) -> Result<()> {
        let (kind, data) = load(self.repo, self.dir, id)?;
        let start = self.out.bytes;
        self.out.write_all(&entry_header(kind, data.len() as u64))?;
        let mut deflate = gix::features::zlib::stream::deflate::Write::new(&mut self.out);
        deflate.write_all(&data)?;
        deflate.flush()?;
        self.stats.whole += 1;
        self.written(Item { id, location: None }, start);
        Ok(())
    }
}

/// A pack entry's header: the type in bits 4–6 of the first byte, the size
/// in 4 bits there and 7 bits per following byte, high bit = more follows.
pub(super) fn entry_header(kind: Kind, size: u64) -> Vec<u8> {
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
