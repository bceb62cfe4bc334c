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
    ark_tests::zim_fixtures()
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
    let forged = write("forged.zim", &forged_zim(&small)?)?;
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

/// Forges `small.zim` into a file whose bytes are intact (MD5 recomputed)
/// but whose dirent table is out of order.
fn forged_zim(small: &[u8]) -> Result<Vec<u8>> {
    let mut forged = small.to_vec();
    let url_ptr_pos = u64::from_le_bytes(forged[32..40].try_into()?) as usize;
    let (a, b) = (url_ptr_pos, url_ptr_pos + 8);
    let first: [u8; 8] = forged[a..a + 8].try_into()?;
    let second: [u8; 8] = forged[b..b + 8].try_into()?;
    forged[a..a + 8].copy_from_slice(&second);
    forged[b..b + 8].copy_from_slice(&first);
    let checksum_pos = forged.len() - 16;
    let md5 = Md5::digest(&forged[..checksum_pos]);
    forged[checksum_pos..].copy_from_slice(&md5);
    Ok(forged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zim_targets_land_when_sound_and_fail_with_the_reason_when_not() -> Result<()> {
    use ark_tests::*;
    use std::time::Duration;
    let dir = fixtures()?;
    let small = std::fs::read(dir.join("small.zim"))?;
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander =
        spawn_commander_with(&cdata, "127.0.0.1:0", &["--max-attempts", "1"], &[]).await?;
    let origin = Origin::start().await?;
    origin.put("wiki/small.zim", small.clone());
    origin.put("wiki/forged.zim", forged_zim(&small)?);
    let mut damaged = small.clone();
    damaged[30_000] ^= 0x01;
    origin.put("wiki/damaged.zim", damaged);
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let _agent = spawn_agent(&adata)?;
    let mut admin = admin(&cdata)?;
    for name in ["small", "forged", "damaged"] {
        admin
            .add_target(ark_proto::AddTargetRequest {
                kind: "zim".into(),
                url: origin.url(&format!("wiki/{name}.zim")),
                name: name.into(),
                ..Default::default()
            })
            .await?;
    }
    let soon = Duration::from_secs(40);
    let ok = wait_for_run(&cdata, run_of(&cdata, "small").await?, "succeeded", soon).await?;
    ensure!(ok.kind == "zim");
    let forged = wait_for_run(&cdata, run_of(&cdata, "forged").await?, "failed", soon).await?;
    ensure!(
        forged.reason.contains("ZIM check refused") && forged.reason.contains("not sorted"),
        "forged: {}",
        forged.reason
    );
    let damaged = wait_for_run(&cdata, run_of(&cdata, "damaged").await?, "failed", soon).await?;
    ensure!(
        damaged.reason.contains("MD5") && !damaged.reason.contains("commander"),
        "the agent should refuse a damaged ZIM before uploading: {}",
        damaged.reason
    );
    let landed = archive_files(&cdata);
    ensure!(
        landed.len() == 1
            && landed[0].0.starts_with("zim/small/")
            && landed[0].0.ends_with("/small.zim")
            && landed[0].1 == small,
        "{:?}",
        landed.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    ensure!(
        quarantined(&cdata).is_empty(),
        "a refused ZIM stayed in quarantine: {:?}",
        quarantined(&cdata)
    );
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "{out}{err}");

    // kiwix-serve serves the archive as it is, from zim/library.xml.
    let library = cdata.join("archive/zim/library.xml");
    let xml = std::fs::read_to_string(&library).context("zim/library.xml was not written")?;
    let answers = kiwix_serve_get(&library, &["/catalog/v2/entries", "/small/"]).await?;
    let [(_, catalog), (status, body)] =
        <[_; 2]>::try_from(answers).map_err(|_| anyhow::anyhow!("two answers expected"))?;
    let uuid = zim_uuid(&small);
    ensure!(xml.contains(&uuid), "library.xml lacks the book: {xml}");
    ensure!(
        catalog.contains(&format!("urn:uuid:{uuid}")),
        "kiwix-serve's catalog lacks it: {catalog}"
    );
    ensure!(
        status.is_success() && body.to_lowercase().contains("<html"),
        "kiwix-serve did not serve the landed ZIM's main page: {status} {body:.200}"
    );
    Ok(())
}

#[test]
fn the_streaming_check_passes_a_valid_zim_in_any_feeding_and_catches_damage() -> Result<()> {
    use ark_core::formats::zim::{StreamCheck, ZimError};
    fn check(bytes: &[u8], step: usize) -> Result<ark_core::formats::zim::Header, ZimError> {
        let mut check = StreamCheck::new();
        for piece in bytes.chunks(step.max(1)) {
            check.update(piece)?;
        }
        check.finish(bytes.len() as u64)
    }
    let small = std::fs::read(fixtures()?.join("small.zim"))?;
    for step in [1, 7, 80, 4096, 1 << 20] {
        let header = check(&small, step)?;
        ensure!((header.major, header.minor) == (6, 1));
    }
    let mut flipped = small.clone();
    flipped[20_000] ^= 0x01;
    let err = check(&flipped, 4096).expect_err("flipped byte");
    ensure!(err.0.contains("MD5"), "{err}");
    let err = check(&small[..small.len() - 1], 4096).expect_err("truncated");
    ensure!(err.0.contains("checksumPos"), "{err}");
    let err = check(&[small.as_slice(), b"x"].concat(), 4096).expect_err("padded");
    ensure!(err.0.contains("continue after the checksum"), "{err}");
    let err = check(b"<html>not found</html>", 4096).expect_err("html");
    ensure!(err.0.contains("too small"), "{err}");
    let mut html = b"<!DOCTYPE html>".to_vec();
    html.resize(200, b' ');
    let err = check(&html, 4096).expect_err("html");
    ensure!(err.0.contains("magic number"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_archive_is_one_target_and_lands_joined() -> Result<()> {
    use ark_tests::*;
    use std::time::Duration;
    let dir = fixtures()?;
    let whole = std::fs::read(dir.join("wikibooks_be_all_nopic_2017-02.zim"))?;
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    for part in ["aa", "ab", "ac"] {
        let bytes =
            std::fs::read(dir.join(format!("wikibooks_be_all_nopic_2017-02_splitted.zim{part}")))?;
        origin.put(&format!("wb/wikibooks.zim{part}"), bytes);
    }
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let _agent = spawn_agent(&adata)?;
    admin(&cdata)?
        .add_target(ark_proto::AddTargetRequest {
            kind: "zim".into(),
            url: origin.url("wb/wikibooks.zimaa"),
            name: "wikibooks".into(),
            ..Default::default()
        })
        .await?;
    let id = run_of(&cdata, "wikibooks").await?;
    let run = wait_for_run(&cdata, id, "succeeded", Duration::from_secs(40)).await?;
    ensure!(run.size_bytes == whole.len() as u64, "{run:?}");
    let landed = archive_files(&cdata);
    ensure!(
        landed.len() == 1 && landed[0].0.ends_with("/wikibooks.zim") && landed[0].1 == whole,
        "{:?}",
        landed.iter().map(|(p, b)| (p, b.len())).collect::<Vec<_>>()
    );
    // All three parts were asked for, and the fourth was found missing.
    let asked: Vec<String> = origin
        .log()
        .iter()
        .map(|l| l.path.clone())
        .filter(|p| p.contains("wikibooks.zim"))
        .collect();
    ensure!(
        asked.iter().any(|p| p.ends_with("zimac")) && asked.iter().any(|p| p.ends_with("zimad")),
        "{asked:?}"
    );
    let left: Vec<String> = std::fs::read_dir(adata.join("staging"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(left.is_empty(), "left in staging: {left:?}");
    Ok(())
}
