//! `archive verify` and `ingest`'s check: every landed version re-hashed
//! (or, for those verified before, checked for presence and size) against
//! the ledger and its `.manifest.json`, every git mirror checked whole, and
//! every file nobody landed reported. On an S3 archive the objects are
//! re-read from the store ([`Archive::verify_store`]): every object hashed
//! once, several at a time, and the objects nobody landed reported.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::{hash_file, landed, walk_files, Archive, Version, INDEX_FILE};
use crate::backend::manifest_key;
use crate::state::Store;
use crate::Result;

impl Archive {
    /// Re-hashes every landed version and compares with the ledger and the
    /// manifest beside it; finds files the ledger does not know.
    pub fn verify(&self, store: &Store, each: impl FnMut(&Checked)) -> Result<VerifyReport> {
        self.verify_since(store, None, each)
    }

    /// Like [`Archive::verify`], but only versions landed after `since`
    /// (ms) are re-hashed (and only the mirrors they update are checked);
    /// older ones are checked for presence and size, which costs a `stat`
    /// rather than a read of the whole archive. Strays and missing feed
    /// entries are looked for everywhere either way.
    pub fn verify_since(
        &self,
        store: &Store,
        since: Option<i64>,
        mut each: impl FnMut(&Checked),
    ) -> Result<VerifyReport> {
        use std::collections::{HashMap, HashSet};
        if self.backend.local_root().is_none() {
            return self.verify_store(store, since, each);
        }
        let versions = store.read(|c| landed(c, None))?;
        let mut report = VerifyReport::default();
        // Hard-linked versions share an inode: hash it once, report each.
        let mut hashed: Hashed = HashMap::new();
        let mut known: HashSet<PathBuf> = HashSet::new();
        // Written by the commander from the ledger, not a landed file.
        known.insert(self.root.join("zim").join("library.xml"));
        known.insert(self.root.join(INDEX_FILE));
        let in_flight = self.in_flight(store)?;
        self.derived_known(store, &mut known, &mut report)?;
        let recent = |v: &Version| since.is_none_or(|since| v.landed_at_ms.unwrap_or(0) > since);
        // Every file to re-hash, once per inode, hashed on every core in
        // the background while the versions are checked in order.
        let mut inodes = HashSet::new();
        let to_hash: Vec<PathBuf> = versions
            .iter()
            .filter(|v| recent(v))
            .map(|v| self.root.join(&v.path))
            .filter(|file| inode(file).is_some_and(|key| inodes.insert(key)))
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut hashes = HashedInOrder::start(to_hash, threads, |file: &PathBuf| hash_file(file));
        for v in versions {
            let file = self.root.join(&v.path);
            known.insert(file.clone());
            known.insert(Self::manifest_path(&file));
            let rehash = recent(&v);
            if rehash {
                hashes.wait_for(&file, &mut hashed);
            }
            let problem = version_problem(&file, &v, rehash, &mut hashed);
            report.record(v, problem, rehash, &mut each);
        }
        let mirrors = self.check_mirrors(store, &recent, &mut report)?;
        for stray in walk_files(&self.root) {
            let in_mirror = mirrors.iter().any(|m| stray.starts_with(self.root.join(m)));
            let deriving = in_flight.iter().any(|dir| stray.starts_with(dir));
            if !known.contains(&stray) && !in_mirror && !deriving {
                report.stray.push(
                    stray
                        .strip_prefix(&self.root)
                        .unwrap_or(&stray)
                        .display()
                        .to_string(),
                );
            }
        }
        report.empty_dirs = empty_version_dirs(&self.root, &self.root);
        report.orphaned = self.orphaned_quarantine(store)?;
        Ok(report)
    }

    /// What a kind keeps beside its versions (a git mirror, on the local
    /// side): checked whole when one of its versions is recent. Returns
    /// every such directory (their files are their own, not strays).
    fn check_mirrors(
        &self,
        store: &Store,
        recent: &dyn Fn(&Version) -> bool,
        report: &mut VerifyReport,
    ) -> Result<std::collections::BTreeSet<String>> {
        let mut mirrors = std::collections::BTreeSet::new();
        let mut to_check = std::collections::BTreeMap::new();
        for v in store.read(|c| landed(c, None))? {
            let spec = crate::kinds::of(&v.kind);
            if let Some(dir) = spec.owned_dir(&v) {
                if recent(&v) {
                    to_check.insert(dir.clone(), spec);
                }
                mirrors.insert(dir);
            }
        }
        for (dir, spec) in &to_check {
            if let Err(e) = spec.check_owned(self, dir) {
                report.bad_mirrors.push(format!("{dir}: {e}"));
            }
        }
        Ok(mirrors)
    }

    /// `verify` of an archive in an object store: every landed version's
    /// object read back from the store and hashed (each key once, several
    /// at a time), its manifest read and compared; every object the store
    /// holds that no version accounts for reported as stray. The local side
    /// (git mirrors, feed entries, the quarantine) is checked as on the
    /// filesystem.
    pub fn verify_store(
        &self,
        store: &Store,
        since: Option<i64>,
        mut each: impl FnMut(&Checked),
    ) -> Result<VerifyReport> {
        use std::collections::{HashMap, HashSet};
        let versions = store.read(|c| landed(c, None))?;
        let mut report = VerifyReport::default();
        let listed: HashMap<String, u64> = self
            .backend
            .list()?
            .into_iter()
            .map(|s| (s.key, s.size))
            .collect();
        let recent = |v: &Version| since.is_none_or(|since| v.landed_at_ms.unwrap_or(0) > since);
        let mut queued = HashSet::new();
        let to_hash: Vec<String> = versions
            .iter()
            .filter(|v| recent(v) && listed.contains_key(&v.path))
            .map(|v| v.path.clone())
            .filter(|key| queued.insert(key.clone()))
            .collect();
        let backend = self.backend.clone();
        let mut hashes = HashedInOrder::start(to_hash, STORE_READERS, move |key: &String| {
            backend.hash(key)
        });
        let mut hashed: HashMap<String, std::result::Result<(u64, blake3::Hash), String>> =
            HashMap::new();
        let mut known: HashSet<String> = HashSet::new();
        for v in versions {
            let manifest = manifest_key(&v.path);
            known.insert(v.path.clone());
            known.insert(manifest.clone());
            let rehash = recent(&v);
            let problem = match listed.get(&v.path) {
                None => Some(format!("missing: no object {}", self.locate(&v.path))),
                Some(&size) if size != v.size => Some(format!(
                    "{size} bytes in the store, {} in the ledger",
                    v.size
                )),
                Some(_) if !listed.contains_key(&manifest) => {
                    Some(format!("manifest {} missing", self.locate(&manifest)))
                }
                Some(_) if !rehash => None,
                Some(_) => {
                    if !hashed.contains_key(&v.path) {
                        let got = hashes.take(&v.path).map_or_else(
                            || Err("not hashed".to_string()),
                            |r| r.map_err(|e| e.to_string()),
                        );
                        hashed.insert(v.path.clone(), got);
                    }
                    match &hashed[&v.path] {
                        Err(e) => Some(format!("unreadable: {e}")),
                        Ok((size, _)) if *size != v.size => Some(format!(
                            "{size} bytes read from the store, {} in the ledger",
                            v.size
                        )),
                        Ok((_, root)) if root.to_hex().as_str() != v.blake3 => Some(format!(
                            "BLAKE3 in the store {} differs from the ledger's {}",
                            root.to_hex(),
                            v.blake3
                        )),
                        Ok(_) => match self.backend.read(&manifest) {
                            Ok(text) => manifest_text_problem(&text, &self.locate(&manifest), &v),
                            Err(e) => Some(format!("manifest {}: {e}", self.locate(&manifest))),
                        },
                    }
                }
            };
            report.record(v, problem, rehash, &mut each);
        }
        report.stray = listed
            .keys()
            .filter(|key| !known.contains(*key))
            .cloned()
            .collect();
        report.stray.sort();
        let mut derived = HashSet::new();
        self.derived_known(store, &mut derived, &mut report)?;
        self.check_mirrors(store, &recent, &mut report)?;
        report.orphaned = self.orphaned_quarantine(store)?;
        Ok(report)
    }

    /// Directories the kinds are deriving into right now (a landing feed's
    /// entries): in flight, not strays. (A landing's own file shows as a
    /// stray until its row says landed, as a half-landed file after a crash
    /// does.)
    fn in_flight(&self, store: &Store) -> Result<Vec<PathBuf>> {
        let landing = store.read(crate::archive::landing)?;
        Ok(landing
            .iter()
            .flat_map(|v| crate::kinds::of(&v.kind).deriving_dirs(self, v))
            .collect())
    }

    /// Files the kinds derived and the ledger lists: known, and missing
    /// when gone.
    fn derived_known(
        &self,
        store: &Store,
        known: &mut std::collections::HashSet<PathBuf>,
        report: &mut VerifyReport,
    ) -> Result<()> {
        // Derived by the commander from verified versions (a feed's entries).
        let mut derived = Vec::new();
        for spec in crate::kinds::all() {
            derived.extend(spec.derived_files(store)?);
        }
        for entry in derived {
            let file = self.root.join(&entry);
            if !file.exists() {
                report.missing.push(entry);
            }
            known.insert(file);
        }
        Ok(())
    }

    /// Quarantined files whose run has ended, older than [`ORPHAN_AFTER`].
    fn orphaned_quarantine(&self, store: &Store) -> Result<Vec<String>> {
        let mut orphaned = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.quarantine()) else {
            return Ok(orphaned);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(run) = crate::archive::quarantine_run(&name) else {
                continue;
            };
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= ORPHAN_AFTER);
            if old && !store.read(|c| crate::state::run_active(c, run))? {
                orphaned.push(format!(".ark/quarantine/{name}"));
            }
        }
        Ok(orphaned)
    }
}

/// Directories named like a version (`YYYYMMDDTHHMMSSZ`, maybe `-n`) that
/// hold nothing.
fn empty_version_dirs(root: &Path, dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || path == root.join(".ark") {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let stamp = name.split('-').next().unwrap_or("");
        let looks_like_version =
            stamp.len() == 16 && stamp.as_bytes()[8] == b'T' && stamp.ends_with('Z');
        let empty = std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
        if looks_like_version && empty {
            found.push(
                path.strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
            );
        } else {
            found.extend(empty_version_dirs(root, &path));
        }
    }
    found
}

fn manifest_problem(path: &Path, v: &Version) -> Option<String> {
    match std::fs::read(path) {
        Ok(text) => manifest_text_problem(&text, &path.display().to_string(), v),
        Err(e) => Some(format!("manifest {}: {e}", path.display())),
    }
}

/// What is wrong with a version's manifest `text` (read from `at`).
fn manifest_text_problem(text: &[u8], at: &str, v: &Version) -> Option<String> {
    let json: serde_json::Value = match serde_json::from_slice(text) {
        Ok(json) => json,
        Err(e) => return Some(format!("manifest {at} is not JSON: {e}")),
    };
    (json["blake3"] != v.blake3.as_str() || json["size"] != v.size)
        .then(|| format!("manifest {at} disagrees with the ledger"))
}

/// Objects read from an object store at once by `archive verify`: enough to
/// keep a few nodes' disks and the link busy, each stream hashed as it
/// arrives.
pub const STORE_READERS: usize = 8;

/// One version as `archive verify` found it.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub version: Version,
    /// None when the bytes, the ledger and the manifest agree.
    pub problem: Option<String>,
}

/// What `archive verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Versions re-hashed and found to match.
    pub ok: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Versions landed before the `since` of [`Archive::verify_since`],
    /// found present with the right size (not re-hashed).
    pub sized: usize,
    pub bad: Vec<Checked>,
    /// Files under the archive that no landed version accounts for.
    pub stray: Vec<String>,
    /// Feed entries the ledger knows whose file is gone.
    pub missing: Vec<String>,
    /// Git mirrors that fail their check, with the reason.
    pub bad_mirrors: Vec<String>,
    /// Version directories with nothing in them (debris of a failed landing).
    #[serde(default)]
    pub empty_dirs: Vec<String>,
    /// Quarantined files of runs that have ended, left longer than
    /// [`ORPHAN_AFTER`] (the sweep reclaims them within a heartbeat).
    #[serde(default)]
    pub orphaned: Vec<String>,
}

/// How long a quarantined file of an ended run may wait for the sweep
/// before `verify` calls it orphaned.
pub const ORPHAN_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

impl VerifyReport {
    /// Counts version `version` as checked (re-hashed when `rehash`), with
    /// what is wrong with it if anything, and tells `each`.
    fn record(
        &mut self,
        version: Version,
        problem: Option<String>,
        rehash: bool,
        each: &mut impl FnMut(&Checked),
    ) {
        if rehash {
            self.bytes += version.size;
        }
        let checked = Checked { version, problem };
        each(&checked);
        if checked.problem.is_some() {
            self.bad.push(checked);
        } else if rehash {
            self.ok += 1;
        } else {
            self.sized += 1;
        }
    }

    pub fn clean(&self) -> bool {
        self.bad.is_empty()
            && self.stray.is_empty()
            && self.missing.is_empty()
            && self.bad_mirrors.is_empty()
            && self.empty_dirs.is_empty()
            && self.orphaned.is_empty()
    }
}

/// Hashes already computed, per inode: hard-linked versions are hashed once.
type Hashed =
    std::collections::HashMap<(u64, u64), std::result::Result<(u64, blake3::Hash), String>>;

/// A file's (device, inode), None when it cannot be read.
fn inode(file: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(file).ok().map(|m| (m.dev(), m.ino()))
}

type HashResult = std::io::Result<(u64, blake3::Hash)>;

/// Files (or objects) hashed on `threads` threads in the background, taken
/// in the order they were given (so the versions are reported in ledger
/// order and a progress bar moves as they come), each read once.
struct HashedInOrder<K> {
    results: std::sync::mpsc::Receiver<(K, HashResult)>,
    /// Hashed, not yet asked for.
    early: std::collections::HashMap<K, HashResult>,
}

impl<K: Clone + Eq + std::hash::Hash + Send + Sync + 'static> HashedInOrder<K> {
    fn start(
        items: Vec<K>,
        threads: usize,
        hash: impl Fn(&K) -> HashResult + Send + Sync + 'static,
    ) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (tx, results) = std::sync::mpsc::channel();
        let items = std::sync::Arc::new(items);
        let hash = std::sync::Arc::new(hash);
        let next = std::sync::Arc::new(AtomicUsize::new(0));
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            let (tx, items, next, hash) = (tx.clone(), items.clone(), next.clone(), hash.clone());
            std::thread::spawn(move || loop {
                let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                if tx.send((item.clone(), hash(item))).is_err() {
                    return; // verify gave up (an error): stop hashing
                }
            });
        }
        Self {
            results,
            early: Default::default(),
        }
    }

    /// `item`'s hash, waiting for it; None when it was never to be hashed.
    fn take(&mut self, item: &K) -> Option<HashResult> {
        loop {
            if let Some(result) = self.early.remove(item) {
                return Some(result);
            }
            match self.results.recv() {
                Ok((done, result)) if &done == item => return Some(result),
                Ok((done, result)) => {
                    self.early.insert(done, result);
                }
                Err(_) => return None,
            }
        }
    }
}

impl HashedInOrder<PathBuf> {
    /// Puts `file`'s hash into `hashed` once it is ready (at once when its
    /// inode was hashed already or it was never to be hashed).
    fn wait_for(&mut self, file: &Path, hashed: &mut Hashed) {
        let Some(key) = inode(file).filter(|key| !hashed.contains_key(key)) else {
            return;
        };
        // None: not among the files to hash (its inode was another's).
        let Some(result) = self.take(&file.to_path_buf()) else {
            return;
        };
        hashed.insert(key, result.map_err(|e| e.to_string()));
    }
}

/// What is wrong with landed version `v` at `file`, if anything: present
/// with its size (and, when `rehash`, its BLAKE3 and manifest).
fn version_problem(file: &Path, v: &Version, rehash: bool, hashed: &mut Hashed) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(file) {
        Err(e) => Some(format!("missing: {e}")),
        Ok(meta) if !rehash => (meta.len() != v.size)
            .then(|| format!("{} bytes on disk, {} in the ledger", meta.len(), v.size)),
        Ok(meta) => {
            let got = hashed
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| hash_file(file).map_err(|e| e.to_string()))
                .clone();
            match got {
                Err(e) => Some(format!("unreadable: {e}")),
                Ok((size, _)) if size != v.size => {
                    Some(format!("{size} bytes on disk, {} in the ledger", v.size))
                }
                Ok((_, root)) if root.to_hex().as_str() != v.blake3 => Some(format!(
                    "BLAKE3 on disk {} differs from the ledger's {}",
                    root.to_hex(),
                    v.blake3
                )),
                Ok(_) => manifest_problem(&Archive::manifest_path(file), v),
            }
        }
    }
}
