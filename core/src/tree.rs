//! Chunked BLAKE3 in one pass: the root `b3sum` prints, plus an outboard of
//! chunk-group chaining values written beside the data.
//!
//! The data is cut into groups of [`GROUP_LEN`] bytes (16 BLAKE3 chunks).
//! Each group is hashed as a BLAKE3 subtree at its offset; its chaining
//! value (CV) goes to the outboard, and a stack of completed subtrees (at
//! most one per level, so O(log n) memory) merges them into the root exactly
//! as BLAKE3's own left-balanced tree does: for any size, the root equals
//! `blake3::hash` of the whole input.
//!
//! Why 16 KiB groups: the outboard costs 32 bytes per group (0.2 % of the
//! data: 2 MiB for a 1 GiB ZIM), re-verification and resume work at a
//! granularity far below a typical network drop, and BLAKE3 still hashes a
//! whole group with its SIMD paths. Larger groups shrink the outboard but
//! make every mismatch re-fetch more; smaller ones double it for little.
//!
//! Speed: every group goes through BLAKE3 in one `update` of its 16 KiB
//! (all 16 chunks through the SIMD lanes together), wherever it lies in the
//! input or, when the network split it, after gathering its pieces; only its
//! top node and its merge into the tree are single-lane compressions (two
//! of some 270 per group; blake3's public API batches no parent nodes). On
//! one thread that is b3sum's speed over the same reads (bench/RESULTS.md
//! §4). A file on disk can be hashed on several threads ([`hash_file`]); a
//! download is one ordered stream, hashed on one as it arrives.
//!
//! Why a flat list of group CVs rather than bao's interleaved tree: it is
//! append-only (a download writes it as bytes arrive and a resume continues
//! it), and anyone holding the list can check it against the root in one
//! streaming pass, then check any group against it — which is what
//! [`GroupVerifier`] does for a receiver that trusts nothing it is sent.

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

/// Bytes per chunk group: 16 BLAKE3 chunks of 1 KiB.
pub const GROUP_LEN: usize = 16 * 1024;

/// Bytes of outboard per group.
pub const CV_LEN: usize = 32;

/// Where the outboard of a staged file lives: beside it.
pub fn outboard_path(data: &std::path::Path) -> std::path::PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".outboard");
    name.into()
}

/// Hashes a file the agent produced itself (a git bundle) the way a fetch
/// hashes what it downloads: returns (size, root) and writes the outboard
/// beside it, both fsynced. Blocking; memory is one read buffer.
pub fn hash_with_outboard(data: &std::path::Path) -> std::io::Result<(u64, blake3::Hash)> {
    let file = std::fs::File::open(data)?;
    let out = std::fs::File::create(outboard_path(data))?;
    let mut outboard = std::io::BufWriter::new(out);
    let hashed = hash_file(&file, 1, &mut outboard)?;
    outboard
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(hashed)
}

/// Bytes a thread reads and hashes at a time when a file is hashed on
/// several: 64 groups, large enough that handing a batch to the thread that
/// merges costs nothing measurable, small enough that a batch per thread
/// stays in the L2 cache between the read and the hash.
const BATCH_LEN: usize = 64 * GROUP_LEN;

/// Hashes `file` from its start to the size it has now on `threads`
/// threads, writing the outboard (every group CV, in order) to `outboard`;
/// returns (size, root). One thread reads it in 256 KiB pieces through a
/// [`TreeHasher`]; more split it into batches of [`BATCH_LEN`], each thread
/// reading (`pread`) and hashing every n-th batch, so the copy out of the
/// page cache is spread over the cores as well as the hashing. Memory: one
/// batch per thread, whatever the size.
pub fn hash_file(
    file: &std::fs::File,
    threads: usize,
    outboard: &mut impl std::io::Write,
) -> std::io::Result<(u64, blake3::Hash)> {
    let size = file.metadata()?.len();
    if threads > 1 && size >= 2 * BATCH_LEN as u64 {
        let root = hash_file_parallel(file, size, threads, outboard)?;
        return Ok((size, root));
    }
    use std::os::unix::fs::FileExt;
    let mut tree = TreeHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut cvs = Vec::new();
    loop {
        let n = file.read_at(&mut buf, tree.len())?;
        if n == 0 {
            break;
        }
        tree.update(&buf[..n]);
        tree.drain_cvs_into(&mut cvs);
        outboard.write_all(&cvs)?;
        cvs.clear();
    }
    let size = tree.len();
    let (root, last) = tree.finalize();
    if let Some(last) = last {
        outboard.write_all(&last)?;
    }
    Ok((size, root))
}

/// [`hash_file`] on `threads` threads for `size` bytes, at least two
/// batches. Thread `t` takes batches `t`, `t + threads`, …; this thread
/// takes their CVs back in order (a bounded channel per thread keeps at
/// most two batches ahead) and merges them.
fn hash_file_parallel(
    file: &std::fs::File,
    size: u64,
    threads: usize,
    outboard: &mut impl std::io::Write,
) -> std::io::Result<blake3::Hash> {
    use std::os::unix::fs::FileExt;
    let batches = size.div_ceil(BATCH_LEN as u64);
    let groups_per_batch = (BATCH_LEN / GROUP_LEN) as u64;
    std::thread::scope(|scope| {
        let mut from = Vec::with_capacity(threads);
        for first in 0..threads as u64 {
            let (tx, rx) = std::sync::mpsc::sync_channel(2);
            from.push(rx);
            scope.spawn(move || {
                let mut buf = vec![0u8; BATCH_LEN];
                for batch in (first..batches).step_by(threads) {
                    let at = batch * BATCH_LEN as u64;
                    let bytes = &mut buf[..(size - at).min(BATCH_LEN as u64) as usize];
                    let cvs = file.read_exact_at(bytes, at).map(|()| {
                        bytes
                            .chunks(GROUP_LEN)
                            .zip(batch * groups_per_batch..)
                            .map(|(group, index)| group_cv(index, group))
                            .collect::<Vec<_>>()
                    });
                    let failed = cvs.is_err();
                    // A closed channel: the merging side gave up.
                    if tx.send(cvs).is_err() || failed {
                        return;
                    }
                }
            });
        }
        let mut done = Subtrees::default();
        // The latest CV, pushed once another follows it: the last one is
        // the right edge of the root.
        let mut last = None;
        for batch in 0..batches {
            let cvs = from[(batch % threads as u64) as usize]
                .recv()
                .map_err(|_| std::io::Error::other("a hashing thread stopped early"))??;
            outboard.write_all(&cvs.concat())?;
            for cv in cvs {
                if let Some(before) = last.replace(cv) {
                    done.push(before);
                }
            }
        }
        Ok(done.root(last.expect("at least two batches of groups")))
    })
}

/// The BLAKE3 chaining value of one whole or final group at `index`.
pub fn group_cv(index: u64, bytes: &[u8]) -> ChainingValue {
    group_hasher(index, bytes).finalize_non_root()
}

/// A hasher that has taken the group at `index` in one call, so that all
/// its chunks go through BLAKE3's SIMD lanes together (fed a little at a
/// time, as network pieces come, BLAKE3 hashes chunk by chunk: two to
/// three times slower).
fn group_hasher(index: u64, bytes: &[u8]) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * GROUP_LEN as u64);
    hasher.update(bytes);
    hasher
}

/// The left edge of the tree: completed subtrees, largest first, one per
/// set bit of `groups`, merged as BLAKE3 merges them (O(log n) memory).
#[derive(Debug, Clone, Default)]
struct Subtrees {
    /// Groups pushed so far.
    groups: u64,
    stack: Vec<ChainingValue>,
}

impl Subtrees {
    /// Pushes the CV of a completed group that is not the last of the
    /// input (the last group of a one-group input is the root itself).
    fn push(&mut self, cv: ChainingValue) {
        self.groups += 1;
        let mut cv = cv;
        let mut total = self.groups;
        while total & 1 == 0 {
            let left = self
                .stack
                .pop()
                .expect("a completed left sibling for every merge");
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
            total >>= 1;
        }
        self.stack.push(cv);
    }

    /// Merges the right edge with the last group's CV; the final merge is
    /// the root. There must be at least one group before the last.
    fn root(mut self, last: ChainingValue) -> blake3::Hash {
        let mut right = last;
        loop {
            let left = self
                .stack
                .pop()
                .expect("at least one subtree left of the last group");
            if self.stack.is_empty() {
                return merge_subtrees_root(&left, &right, Mode::Hash);
            }
            right = merge_subtrees_non_root(&left, &right, Mode::Hash);
        }
    }
}

/// Streaming tree hasher. Feed bytes with [`update`](Self::update); take
/// the group CVs it completes with [`take_cvs`](Self::take_cvs) (they are
/// the outboard); [`finalize`](Self::finalize) gives the root.
///
/// Every group is hashed in one call, whatever the pieces it arrives in:
/// whole groups where they lie in the input, the rest gathered in `pending`
/// first (a copy far cheaper than hashing chunk by chunk).
#[derive(Debug, Clone)]
pub struct TreeHasher {
    /// Groups closed so far (their CVs merged into the left edge).
    done: Subtrees,
    /// The last whole group so far, hashed but not closed: until more
    /// bytes arrive it may be the last group, and of a one-group input, the
    /// root. Never set while `pending` holds bytes.
    open: Option<blake3::Hasher>,
    /// The bytes of the group being filled (less than a group).
    pending: Vec<u8>,
    /// CVs of closed groups not yet handed to the outboard writer.
    fresh: Vec<ChainingValue>,
}

impl Default for TreeHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl TreeHasher {
    pub fn new() -> Self {
        Self {
            done: Subtrees::default(),
            open: None,
            pending: Vec::with_capacity(GROUP_LEN),
            fresh: Vec::new(),
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        let current = if self.open.is_some() {
            GROUP_LEN
        } else {
            self.pending.len()
        };
        self.done.groups * GROUP_LEN as u64 + current as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes a group that more bytes follow.
    fn close(&mut self, cv: ChainingValue) {
        self.fresh.push(cv);
        self.done.push(cv);
    }

    /// Takes a whole group hashed at the next index: closed if `more`
    /// bytes follow it, else held open.
    fn take_whole(&mut self, group: blake3::Hasher, more: bool) {
        if more {
            self.close(group.finalize_non_root());
        } else {
            self.open = Some(group);
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // More bytes: the group held open was not the last. (Checked before
        // taking it: moving a hasher out costs as much as a small piece.)
        if self.open.is_some() {
            if let Some(group) = self.open.take() {
                self.close(group.finalize_non_root());
            }
        }
        if !self.pending.is_empty() {
            let take = bytes.len().min(GROUP_LEN - self.pending.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < GROUP_LEN {
                return;
            }
            let group = group_hasher(self.done.groups, &self.pending);
            self.pending.clear();
            self.take_whole(group, !bytes.is_empty());
        }
        while bytes.len() >= GROUP_LEN {
            let (whole, rest) = bytes.split_at(GROUP_LEN);
            let group = group_hasher(self.done.groups, whole);
            self.take_whole(group, !rest.is_empty());
            bytes = rest;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// The group CVs completed since the last call, in order.
    pub fn take_cvs(&mut self) -> Vec<ChainingValue> {
        std::mem::take(&mut self.fresh)
    }

    /// Appends the group CVs completed since the last call to `out` as
    /// outboard bytes. The hot-path form of [`take_cvs`](Self::take_cvs):
    /// both buffers keep their capacity, so a download allocates nothing per
    /// network chunk.
    pub fn drain_cvs_into(&mut self, out: &mut Vec<u8>) {
        for cv in self.fresh.drain(..) {
            out.extend_from_slice(&cv);
        }
    }

    /// The root hash and the CV of the last group (empty input: none).
    pub fn finalize(self) -> (blake3::Hash, Option<ChainingValue>) {
        let any = self.open.is_some() || !self.pending.is_empty();
        let last = self
            .open
            .unwrap_or_else(|| group_hasher(self.done.groups, &self.pending));
        if self.done.groups == 0 {
            return (last.finalize(), any.then(|| last.finalize_non_root()));
        }
        let cv = last.finalize_non_root();
        (self.done.root(cv), Some(cv))
    }

    /// Rebuilds the hasher from group CVs already verified against their
    /// bytes (a resume): as if those whole groups had been fed.
    pub fn from_verified_groups(cvs: &[ChainingValue]) -> Self {
        let mut hasher = Self::new();
        for cv in cvs {
            hasher.done.push(*cv);
        }
        hasher
    }
}

/// Why received data does not match what its sender claimed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the outboard has {got} bytes; {expected} were expected for {size} bytes of data")]
    OutboardSize { expected: u64, got: u64, size: u64 },
    #[error("the outboard does not hash to the claimed root: it was not made from these bytes")]
    OutboardRoot,
    #[error("chunk group {index} (bytes {offset}..{end}) does not match its hash: cut here")]
    Group { index: u64, offset: u64, end: u64 },
    #[error("{got} bytes arrived where {expected} were claimed")]
    Size { expected: u64, got: u64 },
    #[error("reading the outboard: {0}")]
    Io(#[from] std::io::Error),
}

/// Checks data against a claimed root and outboard as it arrives: the
/// outboard is verified against the root first (one streaming pass, O(log n)
/// memory), then every chunk group against its CV, so a transfer can be cut
/// at the first group that does not match and resumed from the last that did.
/// Nothing the sender claims is trusted before it is checked.
#[derive(Debug)]
pub struct GroupVerifier<R> {
    root: blake3::Hash,
    size: u64,
    groups: u64,
    cvs: R,
    /// Bytes of the group being received.
    pending: Vec<u8>,
    /// Whole groups verified so far.
    verified: u64,
    received: u64,
}

impl<R: std::io::Read + std::io::Seek> GroupVerifier<R> {
    /// Checks `cvs` (the outboard) against `root` for `size` bytes.
    pub fn new(root: blake3::Hash, size: u64, mut cvs: R) -> Result<Self, VerifyError> {
        use std::io::SeekFrom;
        let groups = size.div_ceil(GROUP_LEN as u64);
        let got = cvs.seek(SeekFrom::End(0))?;
        if got != groups * CV_LEN as u64 {
            return Err(VerifyError::OutboardSize {
                expected: groups * CV_LEN as u64,
                got,
                size,
            });
        }
        cvs.seek(SeekFrom::Start(0))?;
        if groups > 1 {
            // Merge every CV but the last as whole groups, then the right edge.
            let mut done = Subtrees::default();
            let mut cv = [0u8; CV_LEN];
            for _ in 0..groups - 1 {
                cvs.read_exact(&mut cv)?;
                done.push(cv);
            }
            cvs.read_exact(&mut cv)?;
            if done.root(cv) != root {
                return Err(VerifyError::OutboardRoot);
            }
            cvs.seek(SeekFrom::Start(0))?;
        }
        Ok(Self {
            root,
            size,
            groups,
            cvs,
            pending: Vec::with_capacity(GROUP_LEN),
            verified: 0,
            received: 0,
        })
    }

    /// Bytes verified so far: where an interrupted transfer may resume.
    pub fn verified_bytes(&self) -> u64 {
        (self.verified * GROUP_LEN as u64).min(self.size)
    }

    /// Checks the next group, `group` (whole, or the last one).
    fn check_group(&mut self, group: &[u8]) -> Result<(), VerifyError> {
        let index = self.verified;
        let offset = index * GROUP_LEN as u64;
        let end = offset + group.len() as u64;
        let ok = if self.groups <= 1 {
            // An input of one group (or none) has no CVs to merge: its root
            // is its hash.
            blake3::hash(group) == self.root
        } else {
            let mut expected = [0u8; CV_LEN];
            self.cvs.read_exact(&mut expected)?;
            group_cv(index, group) == expected
        };
        if !ok {
            return Err(VerifyError::Group { index, offset, end });
        }
        self.verified += 1;
        Ok(())
    }

    /// Checks the group collected in `pending`.
    fn check_pending(&mut self) -> Result<(), VerifyError> {
        let group = std::mem::take(&mut self.pending);
        let checked = self.check_group(&group);
        self.pending = group;
        self.pending.clear();
        checked
    }

    /// Takes the next bytes of the data, verifying every group they complete.
    pub fn update(&mut self, mut bytes: &[u8]) -> Result<(), VerifyError> {
        if self.received + bytes.len() as u64 > self.size {
            return Err(VerifyError::Size {
                expected: self.size,
                got: self.received + bytes.len() as u64,
            });
        }
        self.received += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.pending.is_empty() && bytes.len() >= GROUP_LEN {
                // A whole group in the input: checked where it lies.
                let (group, rest) = bytes.split_at(GROUP_LEN);
                self.check_group(group)?;
                bytes = rest;
                continue;
            }
            let take = bytes.len().min(GROUP_LEN - self.pending.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == GROUP_LEN || self.received == self.size {
                self.check_pending()?;
            }
        }
        Ok(())
    }

    /// Ends the data: every claimed byte must have arrived and matched.
    pub fn finish(mut self) -> Result<(), VerifyError> {
        if self.received != self.size {
            return Err(VerifyError::Size {
                expected: self.size,
                got: self.received,
            });
        }
        if self.size == 0 {
            // Nothing arrived; the claim must be the hash of nothing.
            self.check_group(&[])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_local_file_gets_the_root_b3sum_gives_and_an_outboard_that_verifies() {
        let dir = tempfile::tempdir().expect("tmp");
        for size in [
            0usize,
            1,
            super::GROUP_LEN - 1,
            super::GROUP_LEN,
            3 * super::GROUP_LEN + 7,
        ] {
            let path = dir.path().join(format!("f{size}"));
            let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            std::fs::write(&path, &bytes).expect("write");
            let (n, root) = super::hash_with_outboard(&path).expect("hash");
            assert_eq!(
                (n, root),
                (size as u64, blake3::hash(&bytes)),
                "size {size}"
            );
            let outboard = std::fs::read(super::outboard_path(&path)).expect("outboard");
            let mut verifier =
                super::GroupVerifier::new(root, n, std::io::Cursor::new(outboard)).expect("cvs");
            verifier.update(&bytes).expect("groups");
            verifier.finish().expect("whole");
        }
    }

    use super::*;

    /// 0, 1, chunk, group−1, group, group+1, several groups, several MiB,
    /// and sizes that are a multiple of nothing.
    pub const SIZES: &[usize] = &[
        0,
        1,
        1024,
        GROUP_LEN - 1,
        GROUP_LEN,
        GROUP_LEN + 1,
        2 * GROUP_LEN,
        3 * GROUP_LEN + 5,
        5 * 1024 * 1024 + 7,
        1_234_567,
    ];

    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
            .collect()
    }

    #[test]
    fn the_root_equals_blake3_for_every_size_and_every_feeding() {
        for &size in SIZES {
            let bytes = data(size);
            for step in [1usize << 20, 7919, 1000] {
                let mut hasher = TreeHasher::new();
                let mut cvs = Vec::new();
                let mut drained = Vec::new();
                let mut twin = hasher.clone();
                for piece in bytes.chunks(step.max(1)) {
                    hasher.update(piece);
                    cvs.extend(hasher.take_cvs());
                    twin.update(piece);
                    twin.drain_cvs_into(&mut drained);
                }
                assert_eq!(
                    drained,
                    cvs.concat(),
                    "size {size}: the two ways to take CVs differ"
                );
                assert_eq!(hasher.len(), size as u64);
                let (root, last) = hasher.finalize();
                assert_eq!(root, blake3::hash(&bytes), "size {size}, step {step}");
                cvs.extend(last);
                assert_eq!(
                    cvs.len() as u64,
                    (size as u64).div_ceil(GROUP_LEN as u64),
                    "size {size}"
                );
                for (i, cv) in cvs.iter().enumerate() {
                    let group = &bytes[i * GROUP_LEN..((i + 1) * GROUP_LEN).min(size)];
                    assert_eq!(*cv, group_cv(i as u64, group), "size {size} group {i}");
                }
                let outboard: Vec<u8> = cvs.concat();
                let checked =
                    GroupVerifier::new(root, size as u64, std::io::Cursor::new(&outboard));
                assert!(
                    checked.is_ok(),
                    "size {size}: the outboard does not check against its root"
                );
            }
        }
    }

    /// The outboard by definition: every group's CV, hashed alone.
    fn reference_outboard(bytes: &[u8]) -> Vec<u8> {
        bytes
            .chunks(GROUP_LEN)
            .zip(0..)
            .flat_map(|(group, index)| group_cv(index, group))
            .collect()
    }

    /// Pieces of `sizes` bytes in turn, the way a network hands them over.
    fn pieces<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = bytes;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(size.min(rest.len()));
            out.push(piece);
            rest = tail;
        }
        out
    }

    #[test]
    fn every_way_the_bytes_arrive_gives_the_same_root_and_outboard() {
        let more = [
            1023,
            1025,
            2 * GROUP_LEN - 1,
            2 * GROUP_LEN + 1,
            16 * GROUP_LEN,
        ];
        for &size in SIZES.iter().chain(&more) {
            let bytes = data(size);
            let expected = reference_outboard(&bytes);
            let mut feedings: Vec<Vec<usize>> = vec![
                vec![size.max(1)],
                vec![GROUP_LEN],
                vec![GROUP_LEN + 1],
                vec![GROUP_LEN - 1, 1, 2 * GROUP_LEN],
                vec![1460],
                vec![16_000, 0, 7, 40_000],
            ];
            if size <= 3 * GROUP_LEN {
                feedings.push(vec![1]);
            }
            for feeding in feedings {
                let mut hasher = TreeHasher::new();
                let mut outboard = Vec::new();
                for piece in pieces(&bytes, &feeding) {
                    hasher.update(piece);
                    hasher.drain_cvs_into(&mut outboard);
                }
                assert_eq!(hasher.len(), size as u64);
                let (root, last) = hasher.finalize();
                outboard.extend(last.into_iter().flatten());
                assert_eq!(root, blake3::hash(&bytes), "size {size}, {feeding:?}");
                assert!(outboard == expected, "size {size}, {feeding:?}: outboard");
            }
        }
    }

    /// Around the batches that threads share out.
    const BATCH_SIZES: &[usize] = &[
        2 * BATCH_LEN - 1,
        2 * BATCH_LEN,
        2 * BATCH_LEN + 1,
        3 * BATCH_LEN + GROUP_LEN,
        5 * BATCH_LEN + 3 * GROUP_LEN + 1,
    ];

    #[test]
    fn a_file_hashed_on_any_number_of_threads_gets_the_same_root_and_outboard() {
        let dir = tempfile::tempdir().expect("tmp");
        for &size in SIZES.iter().chain(BATCH_SIZES) {
            let mut bytes = data(size);
            let path = dir.path().join(format!("f{size}"));
            std::fs::write(&path, &bytes).expect("write");
            let file = std::fs::File::open(&path).expect("open");
            let expected = reference_outboard(&bytes);
            let mut first = None;
            for threads in [1, 2, 3, 4, 7] {
                let mut outboard = Vec::new();
                let (n, root) = hash_file(&file, threads, &mut outboard).expect("hash");
                assert_eq!(
                    (n, root),
                    (size as u64, blake3::hash(&bytes)),
                    "size {size}, {threads} threads"
                );
                assert!(outboard == expected, "size {size}, {threads} threads");
                first.get_or_insert(outboard);
            }
            // A flipped byte is caught at its group against that outboard.
            let Some(at) = (size * 3 / 4).checked_sub(1) else {
                continue;
            };
            bytes[at] ^= 0x08;
            let outboard = first.expect("hashed");
            let root = blake3::hash(&data(size));
            let err = verify(root, &outboard, &bytes, 1 << 20).expect_err("flipped byte accepted");
            let group = (at / GROUP_LEN) as u64;
            assert!(
                matches!(err, VerifyError::Group { index, .. } if index == group),
                "size {size}: {err}"
            );
        }
    }

    #[test]
    fn a_resumed_hasher_reaches_the_same_root() {
        for &size in SIZES.iter().filter(|&&s| s > GROUP_LEN) {
            let bytes = data(size);
            let mut first = TreeHasher::new();
            first.update(&bytes[..size / 2]);
            let verified = first.take_cvs();
            let resume_at = verified.len() * GROUP_LEN;
            let mut resumed = TreeHasher::from_verified_groups(&verified);
            assert_eq!(resumed.len(), resume_at as u64);
            resumed.update(&bytes[resume_at..]);
            assert_eq!(resumed.finalize().0, blake3::hash(&bytes), "size {size}");
        }
    }

    fn outboard(bytes: &[u8]) -> (blake3::Hash, Vec<u8>) {
        let mut hasher = TreeHasher::new();
        hasher.update(bytes);
        let mut cvs: Vec<u8> = hasher.take_cvs().concat();
        let (root, last) = hasher.finalize();
        cvs.extend(
            last.unwrap_or_default()
                .iter()
                .take(if bytes.is_empty() { 0 } else { CV_LEN }),
        );
        (root, cvs)
    }

    fn verify(
        root: blake3::Hash,
        cvs: &[u8],
        data: &[u8],
        step: usize,
    ) -> Result<u64, VerifyError> {
        let mut verifier = GroupVerifier::new(root, data.len() as u64, std::io::Cursor::new(cvs))?;
        for piece in data.chunks(step.max(1)) {
            verifier.update(piece)?;
        }
        let verified = verifier.verified_bytes();
        verifier.finish()?;
        Ok(verified)
    }

    #[test]
    fn honest_data_verifies_for_every_size_and_feeding() {
        for &size in SIZES {
            let bytes = data(size);
            let (root, cvs) = outboard(&bytes);
            for step in [1 << 20, 4096, 777] {
                let verified =
                    verify(root, &cvs, &bytes, step).unwrap_or_else(|e| panic!("size {size}: {e}"));
                assert_eq!(verified, size as u64);
            }
        }
    }

    #[test]
    fn a_flipped_byte_is_caught_at_its_group_and_nothing_after_is_taken() {
        for &size in SIZES.iter().filter(|&&s| s > 0) {
            let bytes = data(size);
            let (root, cvs) = outboard(&bytes);
            let at = size * 2 / 3;
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            let mut verifier = GroupVerifier::new(root, size as u64, std::io::Cursor::new(&cvs))
                .expect("outboard");
            let err = bad
                .chunks(5000)
                .try_for_each(|piece| verifier.update(piece))
                .expect_err("flipped byte accepted");
            let group = (at / GROUP_LEN) as u64;
            assert!(
                matches!(err, VerifyError::Group { index, .. } if index == group),
                "size {size}: {err}"
            );
            assert_eq!(
                verifier.verified_bytes(),
                group * GROUP_LEN as u64,
                "size {size}"
            );
        }
    }

    #[test]
    fn a_forged_or_short_outboard_or_wrong_size_is_refused_before_trusting_it() {
        let bytes = data(5 * GROUP_LEN + 9);
        let (root, cvs) = outboard(&bytes);
        let mut forged = cvs.clone();
        forged[2 * CV_LEN + 3] ^= 1;
        let err = GroupVerifier::new(root, bytes.len() as u64, std::io::Cursor::new(&forged))
            .expect_err("forged outboard");
        assert!(matches!(err, VerifyError::OutboardRoot), "{err}");
        let err = GroupVerifier::new(
            root,
            bytes.len() as u64,
            std::io::Cursor::new(&cvs[..cvs.len() - CV_LEN]),
        )
        .expect_err("short outboard");
        assert!(matches!(err, VerifyError::OutboardSize { .. }), "{err}");
        let wrong_root = blake3::hash(b"something else");
        assert!(matches!(
            verify(wrong_root, &cvs, &bytes, 4096),
            Err(VerifyError::OutboardRoot)
        ));
        // Too many bytes, too few bytes.
        let mut verifier = GroupVerifier::new(root, bytes.len() as u64, std::io::Cursor::new(&cvs))
            .expect("outboard");
        assert!(matches!(
            verifier.update(&[bytes.as_slice(), b"x"].concat()),
            Err(VerifyError::Size { .. })
        ));
        let mut verifier = GroupVerifier::new(root, bytes.len() as u64, std::io::Cursor::new(&cvs))
            .expect("outboard");
        verifier.update(&bytes[..bytes.len() - 1]).expect("prefix");
        assert!(matches!(verifier.finish(), Err(VerifyError::Size { .. })));
        // Small inputs have no CVs to merge: the root itself is checked.
        let small = data(100);
        let (small_root, small_cvs) = outboard(&small);
        assert!(verify(small_root, &small_cvs, &small, 7).is_ok());
        assert!(matches!(
            verify(wrong_root, &small_cvs, &small, 7),
            Err(VerifyError::Group { index: 0, .. })
        ));
        assert!(matches!(
            verify(wrong_root, &[], &[], 1),
            Err(VerifyError::Group { index: 0, .. })
        ));
    }

    #[test]
    fn a_flipped_byte_changes_exactly_its_group_cv() {
        let size = 5 * GROUP_LEN + 123;
        let bytes = data(size);
        let mut flipped = bytes.clone();
        flipped[3 * GROUP_LEN + 17] ^= 0x40;
        let cvs = |b: &[u8]| -> Vec<ChainingValue> {
            b.chunks(GROUP_LEN)
                .enumerate()
                .map(|(i, g)| group_cv(i as u64, g))
                .collect()
        };
        let (a, b) = (cvs(&bytes), cvs(&flipped));
        let differing: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert_eq!(differing, vec![3]);
        let forged: Vec<u8> = b.concat();
        let checked = GroupVerifier::new(
            blake3::hash(&bytes),
            size as u64,
            std::io::Cursor::new(&forged),
        );
        assert!(matches!(checked, Err(VerifyError::OutboardRoot)));
    }
}
