//! Small real filesystems for full-disk tests: a tmpfs of a given size
//! mounted at a directory (root only; the caller skips, with the reason
//! printed, where the machine will not mount), filled by a filler file the
//! test then deletes to free the space. Not the faults themselves: what
//! fills or frees is up to each test.

use std::path::{Path, PathBuf};

use anyhow::Result;

/// A tmpfs mounted for one test, unmounted (lazily) on drop.
#[derive(Debug)]
pub struct SmallDisk {
    pub at: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=`, e.g. "12m") at `at`,
    /// creating the directory. None, with the reason printed, where the
    /// machine will not mount (not root).
    pub fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a small tmpfs here (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Self {
            at: at.to_path_buf(),
        })
    }

    /// Bytes free on the disk now.
    pub fn free(&self) -> u64 {
        ark_core::fs::free_space(&self.at).unwrap_or(0)
    }

    /// Fills the disk until `leave` bytes are free (0: full) with a file
    /// named `name` at its root; returns the file, which the test deletes
    /// to free the space. A disk that something else fills on the way
    /// stops the filler short, which is still full.
    pub fn fill(&self, name: &str, leave: u64) -> Result<PathBuf> {
        use std::io::Write;
        let filler = self.at.join(name);
        let mut file = std::fs::File::create(&filler)?;
        let block = vec![7u8; 1 << 20];
        loop {
            let room = self.free().saturating_sub(leave);
            if room == 0 {
                break;
            }
            let n = room.min(block.len() as u64) as usize;
            match file.write_all(&block[..n]) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(filler)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status();
    }
}
