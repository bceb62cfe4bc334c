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

/// A thin bundle (deltas against objects of the landed mirror) lands, and
/// the same bundle against a mirror without those bases is refused.
#[test]
fn thin_bundles_resolve_against_the_mirror_or_are_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let up = Upstream::delta_heavy(tmp.path(), "up", 60)?;
    let source = cli_mirror(tmp.path(), &up, "agent")?;
    let first = tmp.path().join("b1");
    bundle(&source, &Refs::new(), &first)?;
    let mirror = tmp.path().join("nas.git");
    land(&first, &mirror, tmp.path(), "run-1")?;

    // A root commit with an older tree: its files are deltas against the
    // newer versions the mirror holds.
    let known = landed(&mirror)?;
    let commit = git(&source, &["commit-tree", "main~4^{tree}", "-m", "rewind"])?;
    git(&source, &["update-ref", "refs/heads/rewind", commit.trim()])?;
    let thin = tmp.path().join("b2");
    let refs = ls_remote(&source)?;
    let summary = write_bundle(&source, &refs, &known, std::fs::File::create(&thin)?)?;
    assert!(summary.thin_deltas >= 1, "{summary:?}");

    // Against a mirror that lacks the bases (only the prerequisite commit
    // copied in, so the header passes): refused, naming the missing base.
    let bare = tmp.path().join("bare.git");
    git(
        tmp.path(),
        &["init", "-q", "--bare", &bare.to_string_lossy()],
    )?;
    let tip = &known["refs/heads/main"];
    let cat = git(&source, &["cat-file", "commit", tip])?;
    let raw = tmp.path().join("commit.raw");
    std::fs::write(&raw, cat)?;
    let copied = git(
        &bare,
        &[
            "hash-object",
            "-t",
            "commit",
            "-w",
            "--literally",
            &raw.to_string_lossy(),
        ],
    )?;
    assert_eq!(copied.trim(), tip);
    let err = check_bundle(&thin, &bare, tmp.path())
        .err()
        .ok_or("a thin bundle without its bases was accepted")?;
    assert!(
        matches!(err, GitCheckError::MissingDeltaBase { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("not in the mirror"), "{err}");

    land(&thin, &mirror, tmp.path(), "run-2")?;
    git(&mirror, &["fsck", "--full", "--strict"])?;
    assert_eq!(landed(&mirror)?, refs);
    check_repo(&mirror)?;
    Ok(())
}

/// Hand-written packs: deltas the check must refuse, each with its reason,
/// and the valid forms beside them (so the refusals are about the delta).
#[test]
fn broken_deltas_are_refused_with_their_reason() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mirror = tmp.path().join("m.git");
    let base = b"hello\n";
    let target = b"hello\nworld\n";
    // Copy the 6 base bytes, insert "world\n".
    let ops = [&[0x90, 0x06, 0x06][..], b"world\n"].concat();
    let good_delta = delta(base.len(), target.len(), &ops);
    let base_entry = pack_entry(3, base.len(), &[], base);
    let ofs = |distance: u64, body: &[u8]| pack_entry(6, body.len(), &ofs_distance(distance), body);
    let ref_to = |id: &[u8; 20], body: &[u8]| pack_entry(7, body.len(), id, body);
    let target_id = object_id("blob", target);
    let base_id = object_id("blob", base);
    let absent_id = object_id("blob", b"absent\n");

    // What each pack should come to: accepted, refused for a missing delta
    // base (named), or refused as corrupt.
    enum Outcome {
        Lands,
        MissingBase([u8; 20]),
        Corrupt,
    }
    use Outcome::*;
    let cases: Vec<(&str, Vec<Vec<u8>>, Outcome)> = vec![
        (
            "ofs-delta on the entry before",
            vec![
                base_entry.clone(),
                ofs(base_entry.len() as u64, &good_delta),
            ],
            Lands,
        ),
        (
            "ref-delta on a base neither in the pack nor in the mirror",
            vec![ref_to(&absent_id, &good_delta)],
            MissingBase(absent_id),
        ),
        (
            // Out of order: git's index-pack would wait for the base; a
            // bundle's bases come first (git and the agent write them so).
            "ref-delta on a later entry",
            vec![ref_to(&base_id, &good_delta), base_entry.clone()],
            MissingBase(base_id),
        ),
        (
            // Bases inside the pack are named by offset (OFS_DELTA), as
            // `git bundle create` and the agent write them.
            "ref-delta on an earlier entry",
            vec![base_entry.clone(), ref_to(&base_id, &good_delta)],
            MissingBase(base_id),
        ),
        (
            "two ref-deltas on each other",
            vec![
                ref_to(&target_id, &good_delta),
                ref_to(&base_id, &good_delta),
            ],
            MissingBase(target_id),
        ),
        (
            "ofs-delta before the start of the pack",
            vec![
                base_entry.clone(),
                ofs(base_entry.len() as u64 + 13, &good_delta),
            ],
            Corrupt,
        ),
        (
            "ofs-delta into the middle of an entry",
            vec![
                base_entry.clone(),
                ofs(base_entry.len() as u64 - 2, &good_delta),
            ],
            Corrupt,
        ),
        (
            "ofs-delta on itself",
            vec![base_entry.clone(), ofs(0, &good_delta)],
            Corrupt,
        ),
        (
            "delta whose result is shorter than its header says",
            vec![
                base_entry.clone(),
                ofs(
                    base_entry.len() as u64,
                    &delta(base.len(), target.len() + 1, &ops),
                ),
            ],
            Corrupt,
        ),
        (
            "delta for a base of another size",
            vec![
                base_entry.clone(),
                ofs(
                    base_entry.len() as u64,
                    &delta(base.len() + 3, target.len(), &ops),
                ),
            ],
            Corrupt,
        ),
    ];
    for (name, entries, outcome) in cases {
        let path = tmp.path().join("hand.bundle");
        hand_bundle(&path, &hex(&target_id), &entries)?;
        match (check_bundle(&path, &mirror, tmp.path()), outcome) {
            (Ok(checked), Lands) => assert_eq!(checked.objects, 2, "{name}"),
            (Ok(_), _) => return Err(format!("{name}: accepted").into()),
            (Err(e), Lands) => return Err(format!("{name}: refused: {e}").into()),
            (Err(e), MissingBase(id)) => {
                assert!(
                    matches!(e, GitCheckError::MissingDeltaBase { .. }),
                    "{name}: {e}"
                );
                assert!(e.to_string().contains(&hex(&id)), "{name}: {e}");
            }
            (Err(e), Corrupt) => assert!(
                matches!(e, GitCheckError::CorruptPack { .. }),
                "{name}: {e}"
            ),
        }
    }
    assert!(!mirror.exists());
    Ok(())
}

/// Hand-written packs whose objects name others: what they name must be in
/// the pack or the mirror (looked up once the pack is decoded), and what
/// does not decode is refused.
#[test]
fn pack_objects_naming_absent_objects_are_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (present, absent) = (b"in the mirror\n", b"nowhere\n");
    let mirror = tmp.path().join("m.git");
    git(
        tmp.path(),
        &["init", "-q", "--bare", &mirror.to_string_lossy()],
    )?;
    let file = tmp.path().join("present");
    std::fs::write(&file, present)?;
    git(&mirror, &["hash-object", "-w", &file.to_string_lossy()])?;
    let no_mirror = tmp.path().join("none.git");
    let tree = |names: &[&[u8; 20]]| -> Vec<u8> {
        let mut body = Vec::new();
        for (n, id) in names.iter().enumerate() {
            body.extend(format!("100644 f{n}\0").into_bytes());
            body.extend(*id);
        }
        body
    };
    let (present_id, absent_id) = (object_id("blob", present), object_id("blob", absent));
    let blob = b"in the pack\n";
    let blob_id = object_id("blob", blob);
    // Name, the tree's body, the mirror checked against, the id refused.
    type Case<'a> = (&'a str, Vec<u8>, &'a Path, Option<[u8; 20]>);
    let cases: Vec<Case> = vec![
        ("a blob in the pack", tree(&[&blob_id]), &no_mirror, None),
        (
            "a blob in the mirror",
            tree(&[&present_id, &blob_id]),
            &mirror,
            None,
        ),
        (
            "an absent blob, no mirror",
            tree(&[&blob_id, &absent_id]),
            &no_mirror,
            Some(absent_id),
        ),
        (
            "an absent blob beside one in the mirror",
            tree(&[&present_id, &absent_id]),
            &mirror,
            Some(absent_id),
        ),
    ];
    let path = tmp.path().join("hand.bundle");
    for (name, body, against, missing) in cases {
        let entries = [
            pack_entry(3, blob.len(), &[], blob),
            pack_entry(2, body.len(), &[], &body),
        ];
        hand_bundle(&path, &hex(&object_id("tree", &body)), &entries)?;
        match (check_bundle(&path, against, tmp.path()), missing) {
            (Ok(checked), None) => assert_eq!(checked.objects, 2, "{name}"),
            (Ok(_), Some(_)) => return Err(format!("{name}: accepted").into()),
            (Err(e), None) => return Err(format!("{name}: refused: {e}").into()),
            (Err(e), Some(id)) => assert!(
                matches!(&e, GitCheckError::MissingObject { id: got, .. } if got.as_bytes() == id),
                "{name}: {e}"
            ),
        }
    }

    let garbage = b"100644 no id follows";
    let entries = [pack_entry(2, garbage.len(), &[], garbage)];
    hand_bundle(&path, &hex(&object_id("tree", garbage)), &entries)?;
    let err = check_bundle(&path, &mirror, tmp.path())
        .err()
        .ok_or("a tree that does not decode was accepted")?;
    assert!(matches!(err, GitCheckError::BadObject { .. }), "{err}");
    Ok(())
}

/// A bundle with one ref (`refs/tags/t` → `tip`) and a pack of `entries`.
fn hand_bundle(path: &Path, tip: &str, entries: &[Vec<u8>]) -> TestResult {
    let mut pack = b"PACK".to_vec();
    pack.extend(2u32.to_be_bytes());
    pack.extend(u32::try_from(entries.len())?.to_be_bytes());
    for entry in entries {
        pack.extend(entry);
    }
    pack.extend(sha1(&pack));
    let mut bundle = format!("# v2 git bundle\n{tip} refs/tags/t\n\n").into_bytes();
    bundle.extend(pack);
    std::fs::write(path, bundle)?;
    Ok(())
}

/// A pack entry: type and size header, `extra` (an OFS_DELTA's distance or
/// a REF_DELTA's base id), then `body` as a zlib stream.
fn pack_entry(type_bits: u8, size: usize, extra: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = vec![(type_bits << 4) | (size & 0x0f) as u8];
    let mut rest = size >> 4;
    while rest > 0 {
        *out.last_mut().expect("one byte at least") |= 0x80;
        out.push((rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.extend(extra);
    out.extend(zlib_stored(body));
    out
}

/// An OFS_DELTA's base distance: 7 bits a byte, big-endian, each
/// continuation adding one (git's encoding).
fn ofs_distance(mut distance: u64) -> Vec<u8> {
    let mut out = vec![(distance & 0x7f) as u8];
    distance >>= 7;
    while distance > 0 {
        distance -= 1;
        out.insert(0, 0x80 | (distance & 0x7f) as u8);
        distance >>= 7;
    }
    out
}

/// A delta: the base's and the result's sizes (varints), then `ops`.
fn delta(base: usize, result: usize, ops: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for mut size in [base, result] {
        loop {
            let byte = (size & 0x7f) as u8;
            size >>= 7;
            if size == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    out.extend(ops);
    out
}

/// A zlib stream of one stored (uncompressed) block.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("small test bodies");
    let mut out = vec![0x78, 0x01, 0x01];
    out.extend(len.to_le_bytes());
    out.extend((!len).to_le_bytes());
    out.extend(data);
    let (mut a, mut b) = (1u32, 0u32);
    for byte in data {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend(((b << 16) | a).to_be_bytes());
    out
}

fn sha1(bytes: &[u8]) -> [u8; 20] {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    digest.as_ref().try_into().expect("SHA-1 is 20 bytes")
}

fn object_id(kind: &str, data: &[u8]) -> [u8; 20] {
    let mut bytes = format!("{kind} {}\0", data.len()).into_bytes();
    bytes.extend(data);
    sha1(&bytes)
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
