//! Where landed versions live: the archive's storage seam.
//!
//! The landing protocol, recovery, retention, `archive ls/verify` and
//! `ingest` speak to the archive's bytes only through [`Backend`], a small
//! interface with two implementations:
//! - [`FsBackend`], the default: a directory tree on the NAS, exactly as
//!   before the seam (one directory per version, `rename` from a
//!   quarantine on the same filesystem, hard links for dedupe, `fsync` on
//!   every step).
//! - [`s3::S3Backend`] (`archive = "s3://bucket/prefix"`): an S3-compatible
//!   object store such as a Garage cluster. Objects are written once under
//!   their version's unique key and never overwritten; a large upload goes
//!   up as a multipart upload (invisible until completed, so the store's
//!   own quarantine) whose id the ledger keeps until the landing commits.
//!
//! A key is a version's path relative to the archive root (`zim/wiki/
//! 20261122T053041Z/wiki.zim`); its provenance sits beside it under
//! `<key>.manifest.json` in either backend. What needs a filesystem keeps
//! one whatever the backend: the quarantine (uploads are verified into a
//! local file), git mirrors, a feed's entry files, `zim/library.xml` and
//! `index.json` live under the archive's local root (see
//! [`crate::archive::Archive`]).
//!
//! Not here: what a kind is (the kinds ask the archive, the archive asks
//! the backend) and the ledger (the commit point stays one SQLite row).

use std::path::{Path, PathBuf};

use crate::{CommanderError, Result};

pub mod s3;

/// The manifest's key beside a version's key.
pub fn manifest_key(key: &str) -> String {
    format!("{key}.manifest.json")
}

/// What the landing knows about the bytes it is placing: the store checks
/// them again as they go (a copy that does not hash to this is refused,
/// never committed).
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub size: u64,
    pub root: blake3::Hash,
}

/// One object the store holds (verify's strays, `archive migrate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub size: u64,
}

/// The archive's storage: where versions' bytes and manifests are put,
/// read back, hashed, listed and removed. Every method is blocking (the
/// landing runs on a blocking thread); an S3 backend drives its own async
/// client underneath.
pub trait Backend: std::fmt::Debug + Send + Sync {
    /// Where `key` is, for people: a path or an `s3://` URL.
    fn locate(&self, key: &str) -> String;

    /// The directory holding the objects as files, when they are files
    /// (the filesystem backend): what may be hashed by mapping it, linked,
    /// walked and served by kiwix-serve directly.
    fn local_root(&self) -> Option<&Path>;

    /// Whether anything is stored at `key` or under `key/` (a version
    /// directory name already used by a file the ledger does not know).
    fn exists(&self, key: &str) -> Result<bool>;

    /// Step 2 of landing: room for the version at `key` (its directory,
    /// unless `shared_dir`) and its manifest beside it, durable.
    fn put_manifest(&self, key: &str, manifest: &[u8], shared_dir: bool) -> Result<()>;

    /// Step 3 of landing: the verified upload at `quarantined` becomes the
    /// object `key`, durably, never over an existing object. The bytes are
    /// hashed again on the way and must be `expected`. `started` is called
    /// with the id of a multipart upload before its first part is sent, so
    /// the ledger can name it to a recovery after a crash.
    fn put_upload(
        &self,
        key: &str,
        quarantined: &Path,
        expected: Expected,
        started: &dyn Fn(&str) -> Result<()>,
    ) -> Result<()>;

    /// Step 3 of landing by dedupe: `key` holds the bytes of the landed
    /// `from` without storing them twice (a hard link; a server-side copy,
    /// which Garage keeps as references to the same blocks). An error when
    /// the store cannot (the caller then lands the uploaded copy).
    fn put_reference(&self, key: &str, from: &str) -> Result<()>;

    /// Undoes a [`Backend::put_upload`] whose landing failed: the bytes go
    /// back to `quarantined` when the backend moved them from there (a
    /// rename); a store that copied them leaves the quarantine as it was.
    fn take_back(&self, key: &str, quarantined: &Path);

    /// Whether a landing moves the quarantined file away (so it is gone
    /// after step 3) rather than copying it (so it is removed once the
    /// ledger committed).
    fn moves_upload(&self) -> bool;

    /// Removes a version: its object and manifest (and its directory unless
    /// `shared_dir`), and a multipart upload a crash left (`multipart`).
    /// Nothing there is no error.
    fn remove(&self, key: &str, shared_dir: bool, multipart: Option<&str>) -> Result<()>;

    /// Checks that the store answers (an object store may be down while
    /// the commander starts).
    fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// Aborts multipart upload `id` of `key` (what a stop left of a copy).
    fn remove_upload(&self, key: &str, id: &str) -> Result<()> {
        let _ = (key, id);
        Ok(())
    }

    /// Size and BLAKE3 of the object at `key`, reading every byte.
    fn hash(&self, key: &str) -> std::io::Result<(u64, blake3::Hash)>;

    /// The size of the object at `key`, without reading it.
    fn size(&self, key: &str) -> std::io::Result<u64>;

    /// The whole object at `key` (a manifest, a feed snapshot).
    fn read(&self, key: &str) -> std::io::Result<Vec<u8>>;

    /// `len` bytes of the object at `key` from `offset` (a ZIM header).
    fn read_at(&self, key: &str, offset: u64, len: usize) -> std::io::Result<Vec<u8>>;

    /// A file on this machine with the bytes of `key`: the object itself
    /// when it is a file, else a copy fetched to `scratch` (removed by the
    /// caller).
    fn local_file(&self, key: &str, scratch: &Path) -> Result<PathBuf>;

    /// Every object the store holds (outside the quarantine), sorted.
    fn list(&self) -> Result<Vec<Stored>>;
}

/// The default backend: versions as files under the archive root.
#[derive(Debug, Clone)]
pub struct FsBackend {
    root: PathBuf,
}

impl FsBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

/// fsyncs a directory, so a rename or a new entry in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Backend for FsBackend {
    fn locate(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.path(key).exists())
    }

    fn put_manifest(&self, key: &str, manifest: &[u8], shared_dir: bool) -> Result<()> {
        let file = self.path(key);
        let dir = file.parent().unwrap_or(&self.root).to_path_buf();
        let io = |what| CommanderError::io(what, &file);
        std::fs::create_dir_all(dir.parent().unwrap_or(&self.root))
            .map_err(io("creating target dir for"))?;
        if shared_dir {
            std::fs::create_dir_all(&dir).map_err(io("creating the shared dir for"))?;
        } else {
            std::fs::create_dir(&dir).map_err(io("creating version dir for"))?;
        }
        sync_dir(dir.parent().unwrap_or(&self.root)).map_err(io("syncing target dir of"))?;
        ark_core::write_atomic(&self.path(&manifest_key(key)), manifest, 0o644)
            .map_err(io("writing manifest of"))
    }

    fn put_upload(
        &self,
        key: &str,
        quarantined: &Path,
        _expected: Expected,
        _started: &dyn Fn(&str) -> Result<()>,
    ) -> Result<()> {
        // The quarantine is on the archive's own filesystem and was
        // verified group by group as it arrived: a rename moves it.
        let file = self.path(key);
        std::fs::File::open(quarantined)
            .and_then(|f| f.sync_all())
            .map_err(CommanderError::io("syncing", quarantined))?;
        std::fs::rename(quarantined, &file)
            .map_err(CommanderError::io("renaming upload into", &file))?;
        self.sync_parent(&file)
    }

    fn put_reference(&self, key: &str, from: &str) -> Result<()> {
        let file = self.path(key);
        std::fs::hard_link(self.path(from), &file)
            .map_err(CommanderError::io("hard-linking into", &file))?;
        self.sync_parent(&file)
    }

    fn take_back(&self, key: &str, quarantined: &Path) {
        let file = self.path(key);
        if file.exists() {
            if let Err(e) = std::fs::rename(&file, quarantined) {
                tracing::warn!(file = %file.display(), "cannot move a failed landing back to quarantine: {e}");
            }
        }
    }

    fn moves_upload(&self) -> bool {
        true
    }

    fn remove(&self, key: &str, shared_dir: bool, _multipart: Option<&str>) -> Result<()> {
        let file = self.path(key);
        if shared_dir {
            let _ = std::fs::remove_file(self.path(&manifest_key(key)));
            let _ = std::fs::remove_file(&file);
            if let Some(dir) = file.parent() {
                let _ = sync_dir(dir);
            }
            return Ok(());
        }
        if let Some(dir) = file.parent() {
            if dir.starts_with(&self.root) && dir != self.root {
                let _ = std::fs::remove_dir_all(dir);
                if let Some(parent) = dir.parent() {
                    let _ = sync_dir(parent);
                }
            }
        }
        Ok(())
    }

    fn hash(&self, key: &str) -> std::io::Result<(u64, blake3::Hash)> {
        crate::archive::hash_file(&self.path(key))
    }

    fn size(&self, key: &str) -> std::io::Result<u64> {
        Ok(std::fs::metadata(self.path(key))?.len())
    }

    fn read(&self, key: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(key))
    }

    fn read_at(&self, key: &str, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        std::fs::File::open(self.path(key))?.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    fn local_file(&self, key: &str, _scratch: &Path) -> Result<PathBuf> {
        Ok(self.path(key))
    }

    fn list(&self) -> Result<Vec<Stored>> {
        Ok(crate::archive::walk_files(&self.root)
            .into_iter()
            .filter_map(|file| {
                let size = std::fs::metadata(&file).ok()?.len();
                let key = file.strip_prefix(&self.root).ok()?.to_str()?.to_string();
                Some(Stored { key, size })
            })
            .collect())
    }
}

impl FsBackend {
    fn sync_parent(&self, file: &Path) -> Result<()> {
        let dir = file.parent().unwrap_or(&self.root);
        sync_dir(dir).map_err(CommanderError::io("syncing version dir of", file))
    }
}
