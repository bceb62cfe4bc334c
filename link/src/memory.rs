//! Both binaries' bargain with glibc's allocator, struck for uploads.
//!
//! glibc serves a block above its mmap threshold (128 KiB at first, raised
//! as such blocks are freed) with a fresh mapping, and gives the top of a
//! heap back to the kernel once more than twice that lies free there. An
//! upload streams 256 KiB pieces through buffers allocated on one thread
//! (TLS, HTTP/2 and gRPC framing) and freed on another (verify and write),
//! so the heaps grow and shrink all the time, and each time they grow the
//! kernel hands over fresh pages, faulted in and zeroed one by one; the
//! agent's encoding side does the same. Measured on 2 GiB uploads on
//! loopback (`whole-path --ark-only 2048 1`, five runs each, alternating):
//! 28,000–107,000 page faults in the commander and up to 146,000 in the
//! agent without, about 4,000 and 2,000 with; the upload leg 2.22–2.87 s
//! without (median 2.49), 2.36–2.48 s with (median 2.40). Fixed thresholds:
//! blocks up to [`MMAP_THRESHOLD`] come from the heaps, and up to
//! [`TRIM_THRESHOLD`] free at a heap's top stays with the process.
//!
//! Only on glibc: musl's allocator (the agent's static builds) has no such
//! knobs; there the agent's own upload buffers are reused instead
//! (`Pieces` in the agent's delivery).

/// Largest block served from a heap rather than a mapping of its own.
pub const MMAP_THRESHOLD: i32 = 4 << 20;

/// Free memory at a heap's top kept rather than given back.
pub const TRIM_THRESHOLD: i32 = 32 << 20;

/// Sets both thresholds. Call first thing in `main`, before any other
/// thread exists.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    set_thresholds();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_thresholds() {
    // SAFETY: `mallopt` takes no pointers; it only changes two of glibc's
    // malloc parameters, and is called before other threads exist (glibc
    // documents it as unsafe to race with its own initialisation).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults this process has taken so far (`/proc/self/stat`,
    /// the 8th field after the command's closing parenthesis).
    fn faults() -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        after
            .split_whitespace()
            .nth(7)
            .and_then(|f| f.parse().ok())
            .unwrap_or(u64::MAX)
    }

    /// Rounds of an upload's traffic: 256 KiB pieces allocated, written
    /// and all freed. Tuned, the second round onward reuses the first's
    /// pages; glibc's defaults give them back and fault fresh ones in.
    #[test]
    fn freed_upload_buffers_stay_with_the_process() {
        let round = || {
            let pieces: Vec<Vec<u8>> = (0..32).map(|i| vec![i as u8; 256 << 10]).collect();
            std::hint::black_box(&pieces);
        };
        tune_allocator();
        round();
        let before = faults();
        for _ in 0..8 {
            round();
        }
        let taken = faults().saturating_sub(before);
        assert!(before != u64::MAX, "/proc/self/stat unreadable");
        // 8 rounds of 8 MiB would be 16,384 faults of 4 KiB pages.
        assert!(taken < 1000, "{taken} page faults for memory just freed");
    }
}
