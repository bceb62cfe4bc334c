//! The ZIM deep check against real Kiwix files: every fixture in
//! `../shared/fixtures/zim` (valid and deliberately broken, from openzim's
//! test suite) and broken files of our own, through the real
//! `ark-commander check zim`, with `zimcheck -A` (Debian zim-tools) run on the
//! same file as the oracle.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use ark_tests::bin;
use md5::{Digest, Md5};

fn fixtures() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/zim");
    ensure!(
        dir.join("small.zim").exists(),
        "ZIM fixtures not found at {} (../shared/fixtures/zim beside the repo)",
        dir.display()
    );
    Ok(dir)
}

/// (passed, output) of `ark-commander check zim FILE`.
fn ark_check(file: &Path) -> Result<(bool, String)> {
    let out = Command::new(bin("ark-commander")?)
        .args(["check", "zim"])
        .arg(file)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Whether `zimcheck -A` accepts the file.
fn zimcheck(file: &Path) -> Result<bool> {
    let status = Command::new("zimcheck")
        .arg("-A")
        .arg(file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("zimcheck (apt-get install zim-tools)")?;
    Ok(status.success())
}

#[test]
fn every_fixture_gets_the_verdict_zimcheck_gives_with_a_reason() -> Result<()> {
    let dir = fixtures()?;
    let mut checked = 0;
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Split parts are one archive together, not files on their own.
            name.contains(".zim") && !name.contains("_splitted.zima")
        })
        .collect();
    names.sort();
    for file in &names {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (ours, output) = ark_check(file)?;
        let oracle = zimcheck(file)?;
        ensure!(
            ours == oracle,
            "{name}: ark says {}, zimcheck says {}: {output}",
            if ours { "ok" } else { "invalid" },
            if oracle { "ok" } else { "invalid" }
        );
        if name.starts_with("invalid.") {
            ensure!(!ours && output.starts_with("FAIL"), "{name}: {output}");
        }
        checked += 1;
    }
    ensure!(checked >= 19, "only {checked} fixtures found");
    // The reasons say what is wrong, as libzim would.
    for (name, expect) in [
        (
            "invalid.nonsorted_dirent_table.zim",
            "dirent table is not sorted",
        ),
        (
            "invalid.nonsorted_title_index.zim",
            "title index is not sorted",
        ),
        (
            "invalid.outofbounds_first_direntptr.zim",
            "dirent pointer #0",
        ),
        (
            "invalid.outofbounds_last_direntptr.zim",
            "dirent pointer #15",
        ),
        (
            "invalid.outofbounds_first_clusterptr.zim",
            "cluster pointer #0",
        ),
        ("invalid.offset_in_cluster.zim", "cluster #1"),
        ("invalid.bad_mimetype_in_dirent.zim", "has mimetype"),
        ("invalid.invalid_mimelistpos.zim", "mimeListPos"),
        ("invalid.invalid_checksumpos.zim", "checksumPos"),
        ("invalid.smaller_than_header.zim", "too small"),
        ("invalid.outofbounds_urlptrpos.zim", "path pointer table"),
        (
            "invalid.outofbounds_clusterptrpos.zim",
            "cluster pointer table",
        ),
        ("invalid.outofbounds_titleptrpos.zim", "title index table"),
        (
            "invalid.outofbounds_first_title_entry.zim",
            "title index entry #0",
        ),
    ] {
        let (_, output) = ark_check(&dir.join(name))?;
        ensure!(
            output.contains(expect),
            "{name}: expected {expect:?} in {output}"
        );
    }
    Ok(())
}

#[test]
fn our_own_broken_files_are_refused_including_a_fault_only_a_deep_check_sees() -> Result<()> {
    let dir = fixtures()?;
    let tmp = tempfile::tempdir()?;
    let small = std::fs::read(dir.join("small.zim"))?;
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf> {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes)?;
        Ok(path)
    };
    // Truncated, and a flipped byte: the checksum layer catches both.
    let truncated = write("truncated.zim", &small[..small.len() - 1000])?;
    let mut flipped = small.clone();
    flipped[5_000] ^= 0x01;
    let flipped = write("flipped.zim", &flipped)?;
    // Two dirent pointers swapped and the MD5 recomputed: the file is
    // "intact" byte-wise; only the structural check can refuse it.
    let mut forged = small.clone();
    let url_ptr_pos = u64::from_le_bytes(forged[32..40].try_into()?) as usize;
    let (a, b) = (url_ptr_pos, url_ptr_pos + 8);
    let first: [u8; 8] = forged[a..a + 8].try_into()?;
    let second: [u8; 8] = forged[b..b + 8].try_into()?;
    forged[a..a + 8].copy_from_slice(&second);
    forged[b..b + 8].copy_from_slice(&first);
    let checksum_pos = forged.len() - 16;
    let md5 = Md5::digest(&forged[..checksum_pos]);
    forged[checksum_pos..].copy_from_slice(&md5);
    let forged = write("forged.zim", &forged)?;
    for (file, expect) in [
        (&truncated, "checksumPos"),
        (&flipped, "MD5"),
        (&forged, "dirent table is not sorted"),
    ] {
        let (ours, output) = ark_check(file)?;
        ensure!(
            !ours && output.contains(expect),
            "{}: {output}",
            file.display()
        );
        ensure!(!zimcheck(file)?, "zimcheck accepts {}", file.display());
    }
    ensure!(
        !ark_check(&forged)?.1.contains("MD5"),
        "the forged file's checksum should be right"
    );
    // Several files at once: one line each, exit non-zero if any fails.
    let out = Command::new(bin("ark-commander")?)
        .args(["check", "zim"])
        .arg(dir.join("small.zim"))
        .arg(&flipped)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        !out.status.success() && stdout.lines().count() == 2,
        "{stdout}"
    );
    ensure!(stdout.starts_with("ok "), "{stdout}");
    Ok(())
}
