//! Writing files so a crash never leaves half of one.

/// The temporary file [`write_atomic`] writes `path` through before the
/// rename: what a crash between the two leaves behind, for whoever owns
/// `path` to remove when it cleans up.
pub fn atomic_tmp(path: &std::path::Path) -> std::path::PathBuf {
    path.with_extension("tmp")
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of
/// the directory), with the given Unix permissions, so a crash never leaves
/// a half-written file.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = atomic_tmp(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Bytes free to an unprivileged writer on the filesystem holding `path`
/// (or its nearest existing ancestor); None when it cannot be read.
pub fn free_space(path: &std::path::Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Below this many bytes free, a disk counts as full for an error that does
/// not say why it failed: 1 MiB, less than SQLite needs to grow a database
/// by one WAL index region and a few pages.
pub const FULL_BELOW: u64 = 1 << 20;

/// Whether a write to `path` failed for want of room: `said_full` is the
/// error's own word (ENOSPC, SQLITE_FULL); a bare I/O error (`io_error`)
/// counts when the disk holding `path` is below [`FULL_BELOW`] free, since
/// SQLite reports a failed extension of its shared-memory index or a
/// failed fsync without the errno.
pub fn out_of_room(path: &std::path::Path, said_full: bool, io_error: bool) -> bool {
    said_full || (io_error && free_space(path).is_some_and(|free| free < FULL_BELOW))
}

/// Bytes per `write(2)` of bulk data (see [`write_in_pieces`]).
pub const WRITE_PIECE: usize = 64 * 1024;

/// Writes `bytes` to `out` in writes of at most [`WRITE_PIECE`]. The kernel
/// sizes the page-cache folios of a write by its length: 256 KiB writes get
/// 256 KiB folios, taken from the high-order free blocks a VM's balloon
/// (free page reporting) has handed back to its host, where every first
/// touch is a host page fault. Measured on this project's VM, 2 GiB right
/// after another 2 GiB file was deleted: 256 KiB writes 11-17 s, 64 KiB
/// writes 1.7-1.9 s (16 KiB: the same, more calls). Both the agent's
/// staging and the commander's quarantine write this way.
pub fn write_in_pieces(out: &mut impl std::io::Write, bytes: &[u8]) -> std::io::Result<()> {
    bytes
        .chunks(WRITE_PIECE)
        .try_for_each(|piece| out.write_all(piece))
}

/// Bytes written between two write-back requests of [`EarlyWriteBack`]:
/// the page cache holds at most about this much of a file not yet on its
/// way to the disk, which is what its final `fsync` waits for.
pub const WRITEBACK_BYTES: u64 = 16 << 20;

/// Starts the write-back of a large file while it is still being written,
/// so its final `fsync` has little left to wait for: every
/// [`WRITEBACK_BYTES`] written, an `fdatasync` runs on a thread of its own
/// (skipped while the previous one still runs). Errors are left to the
/// writer's own final sync, which reports them. Dropping it waits for the
/// thread.
#[derive(Debug)]
pub struct EarlyWriteBack {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    since: u64,
}

impl EarlyWriteBack {
    /// Starts the thread on its own handle of `file`.
    pub fn start(file: &std::fs::File) -> std::io::Result<Self> {
        let file = file.try_clone()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("ark-writeback".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let _ = file.sync_data();
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            since: 0,
        })
    }

    /// `n` more bytes were written.
    pub fn wrote(&mut self, n: usize) {
        self.since += n as u64;
        if self.since >= WRITEBACK_BYTES {
            self.since = 0;
            if let Some(tx) = &self.tx {
                let _ = tx.try_send(());
            }
        }
    }
}

impl Drop for EarlyWriteBack {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_write_back_leaves_every_byte_and_stops_with_its_writer() -> std::io::Result<()> {
        use std::io::Write;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("upload.data");
        let mut file = std::fs::File::create(&path)?;
        let mut writeback = EarlyWriteBack::start(&file)?;
        // Across several write-back points, in pieces of odd sizes.
        let piece: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let mut written = 0u64;
        while written < 3 * WRITEBACK_BYTES + 12_345 {
            write_in_pieces(&mut file, &piece)?;
            writeback.wrote(piece.len());
            written += piece.len() as u64;
        }
        drop(writeback);
        file.flush()?;
        file.sync_all()?;
        let back = std::fs::read(&path)?;
        assert_eq!(back.len() as u64, written);
        assert!(back.chunks(piece.len()).all(|c| c == &piece[..c.len()]));
        Ok(())
    }
}
