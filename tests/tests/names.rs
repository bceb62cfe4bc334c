//! Names from the outside world (issue 17): hostile names through file
//! targets, feed entries and enclosures land, every landed name passes the
//! portability check, none collide, the manifest keeps the original, and
//! the archive is accepted by a FAT filesystem (an image written with
//! mtools, which refuses what FAT refuses; this machine's kernel mounts no
//! vfat) and, copied with `cp -r` onto exFAT (exfat-fuse on a loop device)
//! and back, still verifies clean.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ark_tests::*;

/// Percent-encodes every byte that is not unreserved in a URL path.
fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Issue 17's table of hostile names.
fn hostile() -> Vec<String> {
    let mut names = vec![
        "a".repeat(255),
        "a".repeat(256),
        "b".repeat(1000),
        format!("{}.zim", "é".repeat(150)),
        format!("{}.pdf", "€".repeat(100)),
        format!("{}.mp3", "😀".repeat(75)),
        "Report.PDF".into(),
        "report.pdf".into(),
        "caf\u{e9}.txt".into(),
        "cafe\u{301}.txt".into(),
        "...".into(),
        "trailing space ".into(),
        "trailing dot.".into(),
        "a<b>c:d\"e\\f|g?h*i".into(),
    ];
    names.extend(["CON", "nul.txt", "COM1", "LPT9.log", "aux"].map(String::from));
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_land_portable_distinct_and_survive_a_copy_to_fat_and_exfat() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (cdata, _commander, _agent) = swarm_of_one(tmp.path(), "pi").await?;
    let origin = Origin::start().await?;
    let names = hostile();
    let mut runs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let key = format!("files/{}", encode(name));
        origin.put(&key, format!("file {i}: {name}\n").into_bytes());
        let target = format!("t{i}");
        add_file_target(&cdata, &target, &origin.url(&key)).await?;
        runs.push((run_of(&cdata, &target).await?, name.clone()));
    }
    // A feed whose entries and enclosures carry the same names.
    let mut items = String::new();
    for (i, name) in names.iter().enumerate() {
        let key = format!("media/{}", encode(name));
        origin.put(&key, format!("episode {i}").into_bytes());
        let title = name
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;");
        items.push_str(&format!(
            "<item><guid>g{i}</guid><title>{title}</title><enclosure url=\"{}\" type=\"audio/mpeg\"/></item>",
            origin.url(&key)
        ));
    }
    let feed = format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Names</title>{items}</channel></rss>"
    );
    origin.put_typed("feed.xml", feed.into_bytes(), "application/rss+xml");
    add_target(&cdata, "rss", "names", &origin.url("feed.xml"), 0).await?;
    for (run, name) in &runs {
        let r = wait_for_run(&cdata, *run, "succeeded", Duration::from_secs(60))
            .await
            .with_context(|| format!("{name:?}"))?;
        ensure!(r.state == "succeeded", "{name:?}: {}", r.reason);
    }
    wait_until(Duration::from_secs(60), "every enclosure to land", || {
        let cdata = cdata.clone();
        let want = names.len();
        async move {
            let media: Vec<_> = runs_of_kind(&cdata, "media").await?;
            ensure!(media.iter().all(|r| r.state != "failed"), "{media:?}");
            Ok(media.len() == want && media.iter().all(|r| r.state == "succeeded"))
        }
    })
    .await?;
    // Every landed name is portable, none collide.
    let (ok, out, err) = commander_cli(&cdata, &["archive", "check-names", "--json"])?;
    ensure!(ok, "check-names: {out}{err}");
    // The manifest keeps what the origin called the file.
    let long = "b".repeat(1000);
    let manifests: Vec<serde_json::Value> = archive_files_with_manifests(&cdata)?;
    ensure!(
        manifests
            .iter()
            .any(|m| m["original_name"] == long.as_str()),
        "no manifest keeps the 1000-byte original name"
    );
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "{out}{err}");
    copy_through_fat(&cdata, tmp.path())
}

async fn runs_of_kind(cdata: &Path, kind: &str) -> Result<Vec<ark_proto::RunInfo>> {
    Ok(runs(cdata)
        .await?
        .into_iter()
        .filter(|r| r.kind == kind)
        .collect())
}

fn archive_files_with_manifests(cdata: &Path) -> Result<Vec<serde_json::Value>> {
    let root = cdata.join("archive");
    let mut out = Vec::new();
    for path in ark_commander::archive::walk_files(&root) {
        if path.to_string_lossy().ends_with(".manifest.json") {
            out.push(serde_json::from_slice(&std::fs::read(&path)?)?);
        }
    }
    Ok(out)
}

/// Copies the archive onto removable-disk filesystems: into a FAT image
/// written by mtools (which refuses every name FAT refuses), and with
/// `cp -r` onto exFAT (a loop device mounted with exfat-fuse) and back over
/// the original, which must then verify clean.
fn copy_through_fat(cdata: &Path, tmp: &Path) -> Result<()> {
    let archive = cdata.join("archive");
    match (which("mkfs.vfat"), which("mcopy")) {
        (Ok(mkfs), Ok(mcopy)) => {
            let image = tmp.join("usb.img");
            std::fs::File::create(&image)?.set_len(256 << 20)?;
            run(Command::new(mkfs).arg(&image))?;
            run(Command::new(mcopy)
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-s", "-i"])
                .arg(&image)
                .arg(&archive)
                .arg("::/"))?;
        }
        _ => eprintln!("SKIPPED the FAT copy: install dosfstools and mtools"),
    }
    let (Ok(mkfs), Ok(mount)) = (which("mkfs.exfat"), which("mount.exfat-fuse")) else {
        eprintln!("SKIPPED the exFAT round trip: install exfatprogs and exfat-fuse");
        return Ok(());
    };
    let image = tmp.join("exfat.img");
    std::fs::File::create(&image)?.set_len(256 << 20)?;
    run(Command::new(mkfs).arg(&image))?;
    let losetup = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&image)
        .output()?;
    if !losetup.status.success() {
        eprintln!(
            "SKIPPED the exFAT round trip: no loop device here ({})",
            String::from_utf8_lossy(&losetup.stderr).trim()
        );
        return Ok(());
    }
    let device = String::from_utf8_lossy(&losetup.stdout).trim().to_string();
    let at = tmp.join("usb");
    std::fs::create_dir_all(&at)?;
    let mounted = run(Command::new(mount).arg(&device).arg(&at));
    let result = mounted.and_then(|()| {
        run(Command::new("cp").arg("-r").arg(&archive).arg(&at))?;
        let back = tmp.join("back");
        std::fs::create_dir_all(&back)?;
        run(Command::new("cp")
            .arg("-r")
            .arg(at.join("archive"))
            .arg(&back))?;
        std::fs::remove_dir_all(&archive)?;
        run(Command::new("cp")
            .arg("-r")
            .arg(back.join("archive"))
            .arg(cdata))?;
        let (clean, out, err) = commander_cli(cdata, &["archive", "verify"])?;
        ensure!(clean, "after the round trip through exFAT: {out}{err}");
        Ok(())
    });
    let _ = Command::new("umount").arg(&at).status();
    let _ = Command::new("losetup").arg("-d").arg(&device).status();
    result
}

/// Runs `cmd`; an error carries its stderr.
fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success()
            && (out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("refus")),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn which(program: &str) -> Result<std::path::PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| p.exists())
        })
        .or_else(|| Some(Path::new("/usr/sbin").join(program)).filter(|p| p.exists()))
        .with_context(|| format!("{program} not found"))
}

/// The same for git: repositories whose names are too long, are device
/// names or end in a dot land as portable mirror and bundle paths that
/// still clone; a case twin of a kept mirror is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_git_repository_names_land_as_portable_mirrors() -> Result<()> {
    use ark_agent::git::fixture::{fsck_and_clone, Upstream};
    use ark_tests::git_origin::GitHttp;
    let tmp = tempfile::tempdir()?;
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(&repos)?;
    let names = [
        // (Non-ASCII repository names are the file tests' job: the test
        // origin hands git http-backend the path undecoded.)
        "r".repeat(240),
        "CON".to_string(),
        "aux.tar".to_string(),
        "Repo".to_string(),
        "ends.with.dot.".to_string(),
    ];
    // A case twin of a repository already kept: refused at `target add`,
    // since both mirrors would be one directory on a case-insensitive disk.
    Upstream::populated(&repos, "repo")?;
    for name in &names {
        Upstream::populated(&repos, name)?;
    }
    let http = GitHttp::start(&repos)?;
    let (cdata, _commander, _agent) = swarm_of_one(tmp.path(), "pi").await?;
    for (i, name) in names.iter().enumerate() {
        let url = http.url(&format!("{}.git", encode(name)));
        add_target(&cdata, "git", &format!("g{i}"), &url, 0).await?;
    }
    let twin = add_target(&cdata, "git", "twin", &http.url("repo.git"), 0).await;
    let refused = twin
        .expect_err("a case twin of a mirror was accepted")
        .to_string();
    ensure!(refused.contains("only by case"), "{refused}");
    for (i, name) in names.iter().enumerate() {
        let id = run_of(&cdata, &format!("g{i}")).await?;
        let waited = wait_for_run(&cdata, id, "succeeded", Duration::from_secs(60)).await;
        let r = ark_tests::run(&cdata, id).await?;
        ensure!(
            waited.is_ok() && r.state == "succeeded",
            "{name:?}: {} — {}",
            r.state,
            r.reason
        );
    }
    let (ok, out, err) = commander_cli(&cdata, &["archive", "check-names"])?;
    ensure!(ok, "check-names: {out}{err}");
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "{out}{err}");
    // Every mirror clones.
    let mirrors: Vec<_> = std::fs::read_dir(cdata.join("archive/git"))?
        .flatten()
        .flat_map(|host| {
            std::fs::read_dir(host.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|e| e.file_name().to_string_lossy().ends_with(".git"))
        .collect();
    ensure!(mirrors.len() == names.len(), "{} mirrors", mirrors.len());
    for (i, m) in mirrors.iter().enumerate() {
        fsck_and_clone(&m.path(), &tmp.path().join(format!("clone{i}")))?;
    }
    Ok(())
}
