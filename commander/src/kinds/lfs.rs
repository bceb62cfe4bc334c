//! The `lfs` kind: one Git LFS object of a mirrored repository (`--lfs`),
//! queued by the git landing that brought its pointer (`crate::lfs`). It is
//! held to the pointer's SHA-256 oid (`runs.expected_sha256`, checked by
//! the upload before anything lands) and lands once, beside the mirror
//! where git-lfs keeps objects: `<mirror>/lfs/objects/ab/cd/<oid>`. Like a
//! feed's media it is the repository's history: never pruned, never
//! "unchanged", no validators.

use ark_core::formats::lfs::parse_object_url;
use ark_core::Kind;
use rusqlite::Connection;

use super::{Derived, KindSpec};
use crate::archive::{Archive, NewVersion, Version};
use crate::{CommanderError, Result};

#[derive(Debug)]
pub struct Lfs;

impl KindSpec for Lfs {
    fn kind(&self) -> Kind {
        Kind::Lfs
    }

    fn conditional(&self) -> bool {
        false
    }

    fn unchanged_when_latest(&self) -> bool {
        false
    }

    fn version_path(
        &self,
        archive: &Archive,
        conn: &Connection,
        v: &NewVersion,
        _now: i64,
    ) -> Result<String> {
        let (_, pointer) = parse_object_url(&v.url).ok_or_else(|| {
            CommanderError::Invalid(format!("{} is not the URL of a Git LFS object", v.url))
        })?;
        let repo: String = conn.query_row(
            "SELECT url FROM targets WHERE name = ?1",
            [&v.target],
            |r| r.get(0),
        )?;
        let relative = format!("{}/{}", super::git_mirror_path(&repo), pointer.store_path());
        super::unclaimed(archive, conn, relative)
    }

    fn shared_dir(&self) -> bool {
        true
    }

    fn retained(&self) -> bool {
        false
    }

    fn record(
        &self,
        tx: &Connection,
        version: &Version,
        _derived: Derived,
        _now: i64,
    ) -> Result<()> {
        crate::lfs::landed(tx, &version.target, &version.url, version.run_id)
    }
}
