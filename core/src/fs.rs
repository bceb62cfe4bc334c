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
