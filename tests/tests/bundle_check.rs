//! The commander's git checks (`ark_commander::git_check`) on bundles and
//! mirrors built by the agent's bundle writer and the `git` CLI: what
//! belongs here is every way a bundle or a mirror can be refused, and the
//! ref switch. (Moved from the commander's unit tests so the commander does
//! not depend on the agent, not even for its tests.)
use std::path::Path;

use ark_agent::git::fixture::{cli_mirror, fsck_and_clone, git, ls_remote, Upstream};
use ark_agent::git::write_bundle;
use ark_commander::git_check::*;
use ark_core::formats::bundle::Refs;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn bundle(source: &Path, known: &Refs, path: &Path) -> TestResult {
    let refs = ls_remote(source)?;
    write_bundle(source, &refs, known, std::fs::File::create(path)?)?;
    Ok(())
}

/// The landed mirror's refs outside refs/ark/.
fn landed(mirror: &Path) -> std::io::Result<Refs> {
    let mut refs = ls_remote(mirror)?;
    refs.retain(|name, _| !name.starts_with(ARK_NAMESPACE));
    Ok(refs)
}

fn land(bundle_path: &Path, mirror: &Path, scratch: &Path, stamp: &str) -> Result<RefChanges> {
    let checked = check_bundle(bundle_path, mirror, scratch)?;
    apply(&checked, mirror, stamp)
}

#[test]
fn first_bundle_lands_in_a_new_mirror() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let up = Upstream::populated(tmp.path(), "up")?;
    let source = cli_mirror(tmp.path(), &up, "agent")?;
    let path = tmp.path().join("b1");
    bundle(&source, &Refs::new(), &path)?;
    let mirror = tmp.path().join("nas/up.git");
    std::fs::create_dir_all(tmp.path().join("nas"))?;
    let changes = land(&path, &mirror, tmp.path(), "run-1")?;
    assert_eq!(
        changes.created.len(),
        up.refs()?.len(),
        "{}",
        changes.summary()
    );
    assert_eq!(landed(&mirror)?, up.refs()?);
    let report = check_repo(&mirror)?;
    assert_eq!(report.refs, up.refs()?.len());
    let clone = fsck_and_clone(&mirror, &tmp.path().join("clone"))?;
    assert!(clone.join("src/main.txt").exists());
    Ok(())
}

#[test]
fn incremental_bundle_lands_and_preserves_forced_and_deleted() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let up = Upstream::populated(tmp.path(), "up")?;
    let source = cli_mirror(tmp.path(), &up, "agent")?;
    let path = tmp.path().join("b1");
    bundle(&source, &Refs::new(), &path)?;
    let mirror = tmp.path().join("nas.git");
    land(&path, &mirror, tmp.path(), "run-1")?;
    let before = landed(&mirror)?;

    git(&up.work, &["checkout", "-q", "-b", "doomed", "main"])?;
    up.commit("doomed.txt", "x\n")?;
    git(&up.work, &["checkout", "-q", "main"])?;
    up.push()?;
    let source = cli_mirror(tmp.path(), &up, "agent")?;
    let path = tmp.path().join("b2");
    bundle(&source, &landed(&mirror)?, &path)?;
    land(&path, &mirror, tmp.path(), "run-2")?;
    let old_feature = landed(&mirror)?["refs/heads/feature"].clone();
    let old_doomed = landed(&mirror)?["refs/heads/doomed"].clone();
    assert_ne!(before, landed(&mirror)?);

    up.commit("src/new.txt", "new\n")?;
    up.rewrite("feature")?;
    up.delete_branch("doomed")?;
    up.push()?;
    let source = cli_mirror(tmp.path(), &up, "agent")?;
    let path = tmp.path().join("b3");
    bundle(&source, &landed(&mirror)?, &path)?;
    let full = tmp.path().join("b3-full");
    bundle(&source, &Refs::new(), &full)?;
    assert!(std::fs::metadata(&path)?.len() < std::fs::metadata(&full)?.len() / 2);

    let checked = check_bundle(&path, &mirror, tmp.path())?;
    assert!(!checked.prerequisites.is_empty());
    let changes = apply(&checked, &mirror, "run-3")?;
    assert_eq!(changes.forced, vec!["refs/heads/feature".to_string()]);
    assert_eq!(changes.deleted, vec!["refs/heads/doomed".to_string()]);
    assert_eq!(changes.fast_forwarded, vec!["refs/heads/main".to_string()]);
    assert!(changes.summary().contains("1 forced (refs/heads/feature)"));
    git(&mirror, &["fsck", "--full", "--strict"])?;
    assert_eq!(landed(&mirror)?, up.refs()?);
    let all = ls_remote(&mirror)?;
    assert_eq!(all["refs/ark/previous/run-3/heads/feature"], old_feature);
    assert_eq!(all["refs/ark/previous/run-3/heads/doomed"], old_doomed);
    let clone = tmp.path().join("clone");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            &mirror.to_string_lossy(),
            &clone.to_string_lossy(),
        ],
    )?;
    assert_eq!(std::fs::read_to_string(clone.join("src/new.txt"))?, "new\n");
    check_repo(&mirror)?;

    // An unchanged upstream: a bundle without objects changes nothing.
    let path = tmp.path().join("b4");
    bundle(&source, &landed(&mirror)?, &path)?;
    let checked = check_bundle(&path, &mirror, tmp.path())?;
    assert_eq!(checked.pack, None);
    assert!(apply(&checked, &mirror, "run-4")?.is_empty());

    assert_eq!(prune_preserved(&mirror, &["run-4".to_string()])?, 2);
    assert!(!ls_remote(&mirror)?
        .keys()
        .any(|n| n.starts_with(PRESERVED_PREFIX)));
    git(&mirror, &["fsck", "--full"])?;
    Ok(())
}

#[test]
fn empty_upstream_lands_zero_refs() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let up = Upstream::empty(tmp.path(), "empty")?;
    let path = tmp.path().join("b");
    bundle(&up.bare, &Refs::new(), &path)?;
    let mirror = tmp.path().join("m.git");
    let checked = check_bundle(&path, &mirror, tmp.path())?;
    assert!(checked.refs.is_empty());
    assert!(apply(&checked, &mirror, "run-1")?.is_empty());
    assert_eq!(
        check_repo(&mirror)?,
        RepoReport {
            refs: 0,
            objects: 0
        }
    );
    Ok(())
}

/// A bundle whose header is `header` and whose pack is `pack`'s.
fn rewrite_bundle(from: &Path, to: &Path, edit: impl Fn(&str) -> String) -> TestResult {
    let bytes = std::fs::read(from)?;
    let end = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or("no header end")?
        + 2;
    let header = std::str::from_utf8(&bytes[..end])?;
    let mut out = edit(header).into_bytes();
    out.extend_from_slice(&bytes[end..]);
    std::fs::write(to, out)?;
    Ok(())
}

#[test]
fn broken_bundles_are_refused_with_their_reason() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let up = Upstream::populated(tmp.path(), "up")?;
    let source = cli_mirror(tmp.path(), &up, "agent")?;
    let good = tmp.path().join("good");
    bundle(&source, &Refs::new(), &good)?;
    let mirror = tmp.path().join("m.git");
    let missing = "1234".repeat(10);

    let path = tmp.path().join("dangling");
    rewrite_bundle(&good, &path, |h| {
        h.replace("\n\n", &format!("\n{missing} refs/heads/dangling\n\n"))
    })?;
    let err = check_bundle(&path, &mirror, tmp.path())
        .err()
        .ok_or("accepted")?;
    assert!(
        matches!(err, GitCheckError::MissingRefTarget { ref name, .. } if name == "refs/heads/dangling"),
        "{err}"
    );
    assert!(err.to_string().contains("the transfer is incomplete"));

    let path = tmp.path().join("prereq");
    rewrite_bundle(&good, &path, |h| {
        h.replacen("bundle\n", &format!("bundle\n-{missing} gone\n"), 1)
    })?;
    let err = check_bundle(&path, &mirror, tmp.path())
        .err()
        .ok_or("accepted")?;
    assert!(
        matches!(err, GitCheckError::MissingPrerequisite { .. }),
        "{err}"
    );

    let mut bytes = std::fs::read(&good)?;
    let pack_at = bytes
        .windows(4)
        .position(|w| w == b"PACK")
        .ok_or("no pack")?;
    let flip = pack_at + (bytes.len() - pack_at) / 2;
    bytes[flip] ^= 0x40;
    let path = tmp.path().join("flipped");
    std::fs::write(&path, bytes)?;
    let err = check_bundle(&path, &mirror, tmp.path())
        .err()
        .ok_or("accepted")?;
    assert!(matches!(err, GitCheckError::CorruptPack { .. }), "{err}");

    for (name, edit) in [
        ("v3", "# v3 git bundle\n"),
        ("dup", "# v2 git bundle\n"),
        ("badname", "# v2 git bundle\n"),
        ("ark", "# v2 git bundle\n"),
    ] {
        let path = tmp.path().join(name);
        let main = &ls_remote(&source)?["refs/heads/main"];
        rewrite_bundle(&good, &path, |h| {
            let h = h.replacen("# v2 git bundle\n", edit, 1);
            match name {
                "dup" => h.replace("\n\n", &format!("\n{main} refs/heads/main\n\n")),
                "badname" => h.replace("\n\n", &format!("\n{main} refs/heads/a..b\n\n")),
                "ark" => h.replace("\n\n", &format!("\n{main} refs/ark/x\n\n")),
                _ => h,
            }
        })?;
        let err = check_bundle(&path, &mirror, tmp.path()).err().ok_or(name)?;
        match name {
            "v3" => assert!(matches!(err, GitCheckError::NotABundle { .. }), "{err}"),
            "dup" => assert!(matches!(err, GitCheckError::DuplicateRef { .. }), "{err}"),
            _ => assert!(matches!(err, GitCheckError::BadLine { .. }), "{err}"),
        }
    }
    // Nothing was landed by any refused bundle.
    assert!(!mirror.exists());
    Ok(())
}

#[test]
fn check_repo_finds_corrupt_loose_objects_and_packs() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let up = Upstream::populated(tmp.path(), "up")?;
    let good = cli_mirror(tmp.path(), &up, "good")?;
    let report = check_repo(&good)?;
    assert!(
        report.objects > 10 && report.refs == up.refs()?.len(),
        "{report:?}"
    );

    // A loose blob under a ref, then damaged.
    let loose = cli_mirror(tmp.path(), &up, "loose")?;
    let blob_file = tmp.path().join("blob.txt");
    std::fs::write(&blob_file, "loose blob\n")?;
    let id = git(&loose, &["hash-object", "-w", &blob_file.to_string_lossy()])?;
    let id = id.trim();
    git(&loose, &["update-ref", "refs/blobs/one", id])?;
    check_repo(&loose)?;
    let object = loose.join("objects").join(&id[..2]).join(&id[2..]);
    let mut perms = std::fs::metadata(&object)?.permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&object, perms)?;
    let mut bytes = std::fs::read(&object)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&object, bytes)?;
    let err = check_repo(&loose)
        .err()
        .ok_or("corrupt loose object passed")?;
    assert!(
        matches!(
            err,
            GitCheckError::Integrity { .. } | GitCheckError::BadObject { .. }
        ),
        "{err}"
    );

    // A flipped byte in the middle of a pack.
    let packed = cli_mirror(tmp.path(), &up, "packed")?;
    git(&packed, &["repack", "-q", "-a", "-d"])?;
    check_repo(&packed)?;
    let pack = std::fs::read_dir(packed.join("objects/pack"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .ok_or("no pack")?;
    let mut perms = std::fs::metadata(&pack)?.permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&pack, perms)?;
    let mut bytes = std::fs::read(&pack)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&pack, bytes)?;
    let err = check_repo(&packed).err().ok_or("corrupt pack passed")?;
    assert!(matches!(err, GitCheckError::Integrity { .. }), "{err}");
    Ok(())
}
