//! What a fetch leaves on disk so it can resume: the staged file, its
//! outboard (the group CVs), and a small resume state naming how many whole
//! groups are durable. Checkpoints are write, fsync, rename: never a state
//! ahead of its bytes; and a resume re-hashes what it keeps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Validators;
use crate::tree::{group_cv, outboard_path, CV_LEN, GROUP_LEN};

/// Least bytes between two durable checkpoints of a fetch in progress. Each
/// checkpoint is two fsyncs, so much smaller would slow an SD card down.
pub const CHECKPOINT_BYTES: u64 = 4 << 20;
/// A checkpoint is due once [`CHECKPOINT_BYTES`] have arrived and a second
/// has passed, or [`CHECKPOINT_MAX_BYTES`] have arrived: a crash costs at
/// most about a second of transfer, and a fast link is not held to an fsync
/// every 4 MiB.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
pub const CHECKPOINT_MAX_BYTES: u64 = 64 << 20;

/// What a fetch leaves beside its file so a later attempt (after a crash or
/// a restart) can resume it. It names only whole groups whose CVs are
/// durable in the outboard, and is only a hint: the resuming fetch
/// re-hashes those groups on disk and trusts what matches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ResumeState {
    pub url: String,
    pub validators: Validators,
    pub total: Option<u64>,
    pub groups: u64,
}

/// Where the resume state of a staged file lives: beside it.
pub fn resume_path(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".resume");
    name.into()
}

/// Where the record of a body fetched whole but not yet delivered lives
/// (see `crate::jobs::fetched`).
pub fn fetched_path(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".fetched");
    name.into()
}

/// Removes a staged file with its outboard, resume state and fetched
/// record, and the temporary file of a checkpoint or record a crash cut
/// (found by the soak: a kill -9 mid-checkpoint left it behind for good).
pub async fn remove_staged(dest: &Path) {
    let _ = tokio::fs::remove_file(fetched_path(dest)).await;
    let _ = tokio::fs::remove_file(dest).await;
    let _ = tokio::fs::remove_file(outboard_path(dest)).await;
    let _ = tokio::fs::remove_file(resume_path(dest)).await;
    for record in [resume_path(dest), fetched_path(dest)] {
        let _ = tokio::fs::remove_file(ark_core::fs::atomic_tmp(&record)).await;
    }
}

/// Write buffer of the outboard (32 bytes per 16 KiB group arrive at a
/// time): written to the file in pieces of this size, and at checkpoints.
pub(super) const OUTBOARD_BUFFER: usize = 64 * 1024;

/// The CVs of the groups on disk that still match the outboard, up to the
/// first that does not (a byte flipped while the agent was down, a torn
/// write): the fetch resumes from there.
pub(super) fn verify_on_disk(
    data: &Path,
    outboard: &Path,
    groups: u64,
) -> std::io::Result<Vec<blake3::hazmat::ChainingValue>> {
    use std::io::Read;
    let mut data = std::fs::File::open(data)?;
    let recorded = std::fs::read(outboard)?;
    let mut verified = Vec::new();
    let mut group = vec![0u8; GROUP_LEN];
    for (index, cv) in recorded
        .chunks_exact(CV_LEN)
        .take(groups as usize)
        .enumerate()
    {
        if data.read_exact(&mut group).is_err() || group_cv(index as u64, &group) != cv {
            break;
        }
        verified.push(cv.try_into().unwrap_or([0; CV_LEN]));
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the soak (issue 15): a crash in the middle of a checkpoint
    /// (or of the fetched record) leaves the temporary file of that write
    /// beside the staged file; dropping the staged file drops it too.
    #[tokio::test]
    async fn dropping_a_staged_file_drops_the_checkpoint_a_crash_cut() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let dest = dir.path().join("38-big.part");
        let records = [resume_path(&dest), fetched_path(&dest)];
        for path in [dest.clone(), outboard_path(&dest)].iter().chain(&records) {
            std::fs::write(path, b"x")?;
        }
        for record in &records {
            std::fs::write(ark_core::fs::atomic_tmp(record), b"half")?;
        }
        remove_staged(&dest).await;
        let left: Vec<_> = std::fs::read_dir(dir.path())?.collect();
        assert!(left.is_empty(), "{left:?}");
        Ok(())
    }
}
