//! Git LFS objects of mirrored repositories (`--lfs`).
//!
//! A repository that uses LFS holds small pointer files in place of its
//! large files; a mirror of it is complete only with the objects they name.
//! The commander finds the pointers itself, in its own verified mirror,
//! once a bundle has moved the mirror's refs: it walks the commits that are
//! new since its last scan and reads every blob small enough to be a
//! pointer ([`scan`]). Each object it has not seen becomes one `lfs` run
//! ([`record`], inside the landing transaction), held to the pointer's
//! SHA-256 oid (`runs.expected_sha256`): whatever an agent or an LFS server
//! says, only those bytes land, beside the mirror under
//! `lfs/objects/ab/cd/<oid>` — where git-lfs itself keeps them, so a clone
//! of the mirror with git-lfs finds them.

use std::collections::HashSet;
use std::path::Path;

use ark_core::formats::lfs::{self, Pointer};
use gix::ObjectId;
use rusqlite::{params, Connection, OptionalExtension};

use crate::{CommanderError, Result};

/// What a scan of a mirror found: the pointers of the commits it walked,
/// and the tips it walked from (the next scan stops there).
#[derive(Debug, Default)]
pub struct Scan {
    pub pointers: Vec<Pointer>,
    pub tips: Vec<String>,
    /// Commits walked (for the log).
    pub commits: usize,
}

/// Whether target `name` fetches its LFS objects.
pub fn wanted(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .query_row("SELECT lfs FROM targets WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(false))
}

/// Reads the LFS pointers of every commit of `mirror` reachable from its
/// refs and not from `scanned` (the tips of the last scan).
pub fn scan(mirror: &Path, scanned: &[String]) -> Result<Scan> {
    let fail = |e: &dyn std::fmt::Display| {
        CommanderError::Invalid(format!(
            "reading the mirror {} for Git LFS pointers: {e}",
            mirror.display()
        ))
    };
    let repo = gix::open_opts(mirror, gix::open::Options::isolated()).map_err(|e| fail(&e))?;
    let refs = crate::git_check::landed_refs(mirror).map_err(|e| fail(&e))?;
    let mut tips: Vec<ObjectId> = Vec::new();
    for id in refs.values() {
        let id = ObjectId::from_hex(id.as_bytes()).map_err(|e| fail(&e))?;
        // A tag is peeled to what it names; refs to trees or blobs (rare)
        // hold no commits to walk.
        let object = repo
            .find_object(id)
            .map_err(|e| fail(&e))?
            .peel_tags_to_end()
            .map_err(|e| fail(&e))?;
        if object.kind == gix::object::Kind::Commit {
            tips.push(object.id);
        }
    }
    tips.sort();
    tips.dedup();
    let hidden: Vec<ObjectId> = scanned
        .iter()
        .filter_map(|hex| ObjectId::from_hex(hex.as_bytes()).ok())
        .filter(|id| repo.find_commit(*id).is_ok())
        .collect();
    let walk = repo
        .rev_walk(tips.iter().copied())
        .with_hidden(hidden)
        .all()
        .map_err(|e| fail(&e))?;
    let mut found = Found {
        repo: &repo,
        trees: HashSet::new(),
        blobs: HashSet::new(),
        pointers: Vec::new(),
    };
    let mut commits = 0;
    for info in walk {
        let info = info.map_err(|e| fail(&e))?;
        let commit = repo.find_commit(info.id).map_err(|e| fail(&e))?;
        let tree = commit.tree_id().map_err(|e| fail(&e))?;
        found.tree(tree.detach()).map_err(|e| fail(&e))?;
        commits += 1;
    }
    let mut pointers = found.pointers;
    pointers.sort();
    pointers.dedup();
    Ok(Scan {
        pointers,
        tips: tips.iter().map(ObjectId::to_string).collect(),
        commits,
    })
}

/// The walk's memory: every tree and blob is read once per scan.
struct Found<'r> {
    repo: &'r gix::Repository,
    trees: HashSet<ObjectId>,
    blobs: HashSet<ObjectId>,
    pointers: Vec<Pointer>,
}

type Cause = Box<dyn std::error::Error + Send + Sync>;

impl Found<'_> {
    fn tree(&mut self, id: ObjectId) -> std::result::Result<(), Cause> {
        // Depth-first with a stack: a hostile repository's deep nesting
        // costs memory, never the thread's stack.
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            if !self.trees.insert(id) {
                continue;
            }
            let tree = self.repo.find_tree(id)?;
            for entry in tree.iter() {
                let entry = entry?;
                let mode = entry.mode();
                if mode.is_tree() {
                    stack.push(entry.oid().to_owned());
                } else if mode.is_blob() {
                    self.blob(entry.oid().to_owned())?;
                }
            }
        }
        Ok(())
    }

    fn blob(&mut self, id: ObjectId) -> std::result::Result<(), Cause> {
        if !self.blobs.insert(id) {
            return Ok(());
        }
        // The header says the size without inflating a large blob.
        if self.repo.find_header(id)?.size() >= lfs::POINTER_MAX {
            return Ok(());
        }
        if let Some(pointer) = Pointer::parse(&self.repo.find_object(id)?.data) {
            self.pointers.push(pointer);
        }
        Ok(())
    }
}

/// The tips target `name`'s last recorded scan walked from.
pub fn scanned(conn: &Connection, name: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT tip FROM lfs_scanned WHERE target = ?1")?;
    let rows = stmt.query_map([name], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records a scan inside the landing transaction of `run_id`: one `lfs`
/// run for every object the target has not met before, held to its oid,
/// and the tips the next scan starts from. Returns the runs queued.
pub fn record(
    tx: &Connection,
    target: &str,
    git_url: &str,
    run_id: i64,
    scan: &Scan,
    now: i64,
) -> Result<usize> {
    let mut queued = 0;
    for pointer in &scan.pointers {
        let known: bool = tx.query_row(
            "SELECT COUNT(*) > 0 FROM lfs_objects WHERE target = ?1 AND oid = ?2",
            params![target, pointer.oid],
            |r| r.get(0),
        )?;
        if known {
            continue;
        }
        let url = lfs::object_url(git_url, pointer);
        let run = crate::state::insert_run(
            tx,
            target,
            ark_core::Kind::Lfs.as_str(),
            &url,
            &format!(
                "Git LFS object {} ({} bytes) of {target} queued",
                pointer.oid, pointer.size
            ),
            now,
        )?;
        tx.execute(
            "UPDATE runs SET expected_sha256 = ?2, expected_source = ?3 WHERE id = ?1",
            params![
                run,
                pointer.oid,
                format!("the LFS pointer's oid in {git_url}")
            ],
        )?;
        tx.execute(
            "INSERT INTO lfs_objects (target, oid, size, run_id, state) VALUES (?1, ?2, ?3, ?4, 'queued')",
            params![target, pointer.oid, pointer.size as i64, run],
        )?;
        queued += 1;
    }
    tx.execute("DELETE FROM lfs_scanned WHERE target = ?1", [target])?;
    for tip in &scan.tips {
        tx.execute(
            "INSERT OR IGNORE INTO lfs_scanned (target, tip) VALUES (?1, ?2)",
            params![target, tip],
        )?;
    }
    crate::state::event(
        tx,
        now,
        Some(run_id),
        None,
        "lfs_pointers",
        &format!(
            "{target}: {} commits read, {} Git LFS pointers, {queued} objects queued",
            scan.commits,
            scan.pointers.len()
        ),
    )?;
    Ok(queued)
}

/// Records that the `lfs` run of `url` landed.
pub fn landed(tx: &Connection, target: &str, url: &str, run_id: i64) -> Result<()> {
    if let Some((_, pointer)) = lfs::parse_object_url(url) {
        tx.execute(
            "UPDATE lfs_objects SET state = 'landed', run_id = ?3 WHERE target = ?1 AND oid = ?2",
            params![target, pointer.oid, run_id],
        )?;
    }
    Ok(())
}
