//! The landed mirror: applying a checked bundle with one atomic
//! `packed-refs` switch (old tips of a force-push kept under `refs/ark/`),
//! reading its refs, and [`check_repo`], the offline check of a whole
//! mirror.

use super::*;

/// Lands a checked bundle in the bare mirror at `mirror` (created if
/// missing): the pack, then its index, then one atomic `packed-refs` with
/// the bundle's refs, the kept `refs/ark/` refs, and the old tip of every
/// ref forced or deleted upstream under `refs/ark/previous/<preserve_as>/`.
pub fn apply(checked: &CheckedBundle, mirror: &Path, preserve_as: &str) -> Result<RefChanges> {
    check_stamp(preserve_as)?;
    ensure_bare(mirror)?;
    if let Some(files) = &checked.pack {
        let pack_dir = mirror.join("objects/pack");
        // The index last: git (and gix) only see a pack once its index exists.
        move_into(&files.pack, &pack_dir)?;
        move_into(&files.index, &pack_dir)?;
    }
    let repo =
        gix::open_opts(mirror, gix::open::Options::isolated()).map_err(|e| GitCheckError::Odb {
            dir: mirror.into(),
            source: e.into(),
        })?;

    let old = read_refs(mirror)?;
    let mut state: BTreeMap<String, ObjectId> = old
        .iter()
        .filter(|(name, _)| name.starts_with(ARK_NAMESPACE))
        .map(|(name, id)| (name.clone(), *id))
        .collect();
    let mut changes = RefChanges::default();
    let preserve = |state: &mut BTreeMap<String, ObjectId>, name: &str, id: ObjectId| {
        let rest = name.strip_prefix("refs/").unwrap_or(name);
        state.insert(format!("{PRESERVED_PREFIX}{preserve_as}/{rest}"), id);
    };
    for (name, hex) in &checked.refs {
        let new = parse_id(hex).ok_or_else(|| GitCheckError::BadRef {
            dir: mirror.into(),
            name: name.clone(),
            reason: format!("{hex:?} is not an object id"),
        })?;
        state.insert(name.clone(), new);
        match old.get(name) {
            None => changes.created.push(name.clone()),
            Some(old_id) if *old_id == new => {}
            Some(old_id) if descends(&repo, *old_id, new) => {
                changes.fast_forwarded.push(name.clone())
            }
            Some(old_id) => {
                changes.forced.push(name.clone());
                preserve(&mut state, name, *old_id);
            }
        }
    }
    for (name, old_id) in &old {
        if !name.starts_with(ARK_NAMESPACE) && !checked.refs.contains_key(name) {
            changes.deleted.push(name.clone());
            preserve(&mut state, name, *old_id);
        }
    }
    write_refs(mirror, &state)?;
    Ok(changes)
}

/// Removes `refs/ark/previous/<stamp>/…` for every stamp not in `keep`;
/// returns how many refs went.
pub fn prune_preserved(mirror: &Path, keep: &[String]) -> Result<usize> {
    let mut state = read_refs(mirror)?;
    let before = state.len();
    state.retain(|name, _| match name.strip_prefix(PRESERVED_PREFIX) {
        Some(rest) => {
            let stamp = rest.split('/').next().unwrap_or_default();
            keep.iter().any(|k| k == stamp)
        }
        None => true,
    });
    let removed = before - state.len();
    if removed > 0 {
        write_refs(mirror, &state)?;
    }
    Ok(removed)
}

/// The offline check of a whole repository: every pack's checksum and every
/// object's hash, every ref resolving, and everything reachable from the
/// refs present and decodable.
pub fn check_repo(dir: &Path) -> Result<RepoReport> {
    let objects = dir.join("objects");
    if !objects.is_dir() || !dir.join("HEAD").is_file() {
        return Err(GitCheckError::Integrity {
            dir: dir.into(),
            source: "not a bare Git repository (no HEAD or objects/)".into(),
        });
    }
    let odb = open_odb(&objects)?;
    odb.store_ref()
        .verify_integrity(
            &mut gix::progress::Discard,
            &AtomicBool::new(false),
            gix::odb::pack::index::verify::integrity::Options::default(),
        )
        .map_err(|e| GitCheckError::Integrity {
            dir: dir.into(),
            source: error_chain(&e).into(),
        })?;
    let refs = read_refs(dir)?;
    let mut roots = Vec::new();
    for (name, id) in &refs {
        if !odb.exists(id) {
            return Err(GitCheckError::BadRef {
                dir: dir.into(),
                name: name.clone(),
                reason: format!("it points to {id}, which the repository lacks"),
            });
        }
        roots.push((*id, name.clone()));
    }
    let objects = Walk::new(&odb).run(roots)?;
    Ok(RepoReport {
        refs: refs.len(),
        objects,
    })
}

pub(super) fn check_stamp(stamp: &str) -> Result<()> {
    let ok = !stamp.is_empty()
        && !stamp.starts_with('.')
        && !stamp.ends_with(".lock")
        && !stamp.contains("..")
        && stamp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(GitCheckError::BadStamp {
            stamp: stamp.into(),
        })
    }
}

/// True when `new` is `old` or descends from it (both peeled to commits).
/// A ref that is not a commit (a tag of a tree, say) never fast-forwards.
pub(super) fn descends(repo: &gix::Repository, old: ObjectId, new: ObjectId) -> bool {
    let peel = |id: ObjectId| {
        repo.find_object(id)
            .ok()?
            .peel_to_kind(Kind::Commit)
            .ok()
            .map(|object| (object.id, object.into_commit().time().ok()))
    };
    let (Some((old, old_time)), Some((new, _))) = (peel(old), peel(new)) else {
        return false;
    };
    if old == new {
        return true;
    }
    // Commits older than `old` cannot lead to it (a skewed clock only makes
    // a fast-forward look forced, which preserves one ref too many).
    let sorting = match old_time {
        Some(time) => gix::revision::walk::Sorting::ByCommitTimeCutoff {
            order: gix::traverse::commit::simple::CommitTimeOrder::NewestFirst,
            seconds: time.seconds,
        },
        None => gix::revision::walk::Sorting::BreadthFirst,
    };
    let Ok(walk) = repo.rev_walk([new]).sorting(sorting).all() else {
        return false;
    };
    walk.filter_map(|info| info.ok()).any(|info| info.id == old)
}

/// Creates the minimal bare layout git needs, if `mirror` has none yet
/// (built beside it and renamed, so a crash leaves no half repository).
pub(super) fn ensure_bare(mirror: &Path) -> Result<()> {
    if mirror.join("HEAD").is_file() && mirror.join("objects").is_dir() {
        return Ok(());
    }
    let parent = mirror.parent().unwrap_or_else(|| Path::new("."));
    let name = mirror.file_name().unwrap_or_default().to_string_lossy();
    let temp = parent.join(format!(".{name}.new-{}", std::process::id()));
    if temp.exists() {
        std::fs::remove_dir_all(&temp).map_err(io("clearing", &temp))?;
    }
    for sub in ["objects/pack", "objects/info", "refs/heads", "refs/tags"] {
        std::fs::create_dir_all(temp.join(sub)).map_err(io("creating", &temp))?;
    }
    std::fs::write(temp.join("HEAD"), "ref: refs/heads/main\n").map_err(io("writing", &temp))?;
    std::fs::write(
        temp.join("config"),
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n",
    )
    .map_err(io("writing", &temp))?;
    if mirror.exists() {
        // An empty directory made by the caller: replace it.
        std::fs::remove_dir(mirror).map_err(io("replacing (not an empty directory)", mirror))?;
    }
    std::fs::rename(&temp, mirror).map_err(io("creating mirror", mirror))?;
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", parent))
}

/// Moves `file` into `dir` under the same name: a rename, or a copy (fsync,
/// rename) when `dir` is on another file system.
pub(super) fn move_into(file: &Path, dir: &Path) -> Result<()> {
    let name = file.file_name().unwrap_or_default();
    let target = dir.join(name);
    if std::fs::rename(file, &target).is_err() {
        let temp = dir.join(format!("{}.tmp", name.to_string_lossy()));
        std::fs::copy(file, &temp).map_err(io("copying into the mirror", &temp))?;
        std::fs::File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(io("syncing", &temp))?;
        std::fs::rename(&temp, &target).map_err(io("moving into the mirror", &target))?;
        let _ = std::fs::remove_file(file);
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

/// The refs a landed mirror holds from upstream (not the commander's own
/// `refs/ark/…`), as the agent's `known` state: empty when there is no
/// mirror yet.
pub fn landed_refs(mirror: &Path) -> Result<Refs> {
    if !mirror.join("objects").is_dir() {
        return Ok(Refs::new());
    }
    Ok(read_refs(mirror)?
        .into_iter()
        .filter(|(name, _)| !name.starts_with(ARK_NAMESPACE))
        .map(|(name, id)| (name, id.to_string()))
        .collect())
}

/// The refs a bundle's header lists (the header only: cheap).
pub fn bundle_refs(bundle: &Path) -> Result<Refs> {
    let file = std::fs::File::open(bundle).map_err(io("opening bundle", bundle))?;
    Ok(parse_header(bundle, &mut BufReader::new(file))?.refs)
}

/// The refs a bundle's header lists, from its first bytes (`head`, read
/// from wherever the bundle is stored); `name` says which bundle in errors.
pub fn bundle_refs_in(name: &Path, head: &[u8]) -> Result<Refs> {
    Ok(parse_header(name, &mut std::io::Cursor::new(head))?.refs)
}

/// Every direct ref under `refs/`: `packed-refs`, overridden by loose refs.
pub(super) fn read_refs(dir: &Path) -> Result<BTreeMap<String, ObjectId>> {
    let mut refs = BTreeMap::new();
    let packed = dir.join("packed-refs");
    match std::fs::read_to_string(&packed) {
        Ok(text) => {
            for line in text.lines() {
                if line.starts_with('#') || line.starts_with('^') || line.is_empty() {
                    continue;
                }
                let parsed = line
                    .split_once(' ')
                    .and_then(|(hex, name)| Some((parse_id(hex)?, name)));
                let Some((id, name)) = parsed else {
                    return Err(GitCheckError::BadRef {
                        dir: dir.into(),
                        name: line.into(),
                        reason: "malformed packed-refs line".into(),
                    });
                };
                refs.insert(name.to_string(), id);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("reading", &packed)(e)),
    }
    let mut pending = vec![dir.join("refs")];
    while let Some(folder) = pending.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("reading", &folder)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io("reading", &folder))?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let name = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
            let text = text.trim();
            if text.starts_with("ref: ") {
                continue; // symbolic: not part of the mirror's state
            }
            let id = parse_id(text).ok_or_else(|| GitCheckError::BadRef {
                dir: dir.into(),
                name: name.clone(),
                reason: format!("{text:?} is not an object id"),
            })?;
            refs.insert(name, id);
        }
    }
    Ok(refs)
}

/// Replaces the whole ref state with one atomic `packed-refs`, then drops
/// loose refs (which would shadow it) and keeps `HEAD` on a branch.
pub(super) fn write_refs(dir: &Path, refs: &BTreeMap<String, ObjectId>) -> Result<()> {
    // No "peeled" trait: git then peels annotated tags itself.
    let mut text = String::from("# pack-refs with: sorted \n");
    for (name, id) in refs {
        text.push_str(&format!("{id} {name}\n"));
    }
    let packed = dir.join("packed-refs");
    ark_core::write_atomic(&packed, text.as_bytes(), 0o644).map_err(io("writing", &packed))?;
    remove_loose_refs(&dir.join("refs"), true)?;

    let head = dir.join("HEAD");
    let current = std::fs::read_to_string(&head).unwrap_or_default();
    let branch = ark_core::formats::bundle::head_branch(&current, refs.keys().map(String::as_str));
    if let Some(branch) = branch {
        ark_core::write_atomic(&head, format!("ref: {branch}\n").as_bytes(), 0o644)
            .map_err(io("writing", &head))?;
    }
    Ok(())
}

/// Deletes every file under `folder` and the emptied sub-directories (the
/// top `refs/` and its `heads/` and `tags/` stay: git wants them).
pub(super) fn remove_loose_refs(folder: &Path, top: bool) -> Result<()> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("reading", folder)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io("reading", folder))?.path();
        if path.is_dir() {
            remove_loose_refs(&path, false)?;
            let keep = top
                && path
                    .file_name()
                    .is_some_and(|n| n == "heads" || n == "tags");
            if !keep {
                let _ = std::fs::remove_dir(&path);
            }
        } else {
            std::fs::remove_file(&path).map_err(io("removing loose ref", &path))?;
        }
    }
    Ok(())
}
