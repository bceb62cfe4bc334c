//! A body fetched whole but not yet delivered, recorded beside its staged
//! file (`<staged>.fetched`). The fetch drops its resume state once the body
//! is in; without this record a lease that ran out between the fetch and
//! the landing (the commander unreachable) would leave bytes nobody could
//! use, and the run's next lease would fetch them all again. With it, the
//! next lease of the same run re-hashes the staged file and, if it still
//! has the recorded root, delivers it at once.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::fetch::{fetched_path, Fetched, Validators};

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    url: String,
    size: u64,
    /// BLAKE3 root, hex.
    root: String,
    validators: Validators,
}

/// Records that `staged` holds the whole body of `url` (written, synced,
/// renamed: never a record ahead of its bytes, which the fetch synced).
pub async fn record(staged: &Path, url: &str, fetched: &Fetched) {
    let Fetched::Body {
        size,
        root,
        validators,
        ..
    } = fetched
    else {
        return;
    };
    let record = Record {
        url: url.to_string(),
        size: *size,
        root: root.to_hex().to_string(),
        validators: validators.clone(),
    };
    let (at, staged) = (fetched_path(staged), staged.to_path_buf());
    let written = tokio::task::spawn_blocking(move || {
        let json = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        ark_core::fs::write_atomic(&at, &json, 0o600)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    if let Err(e) = written {
        warn!(staged = %staged.display(), "recording the fetched body: {e}; a lease that runs out before delivery will fetch it again");
    }
}

/// The body a previous lease of this run fetched whole into `staged`, if it
/// is still there and still hashes to its recorded root.
pub async fn recall(staged: &Path, url: &str) -> Option<Fetched> {
    let json = tokio::fs::read(fetched_path(staged)).await.ok()?;
    let record: Record = serde_json::from_slice(&json).ok()?;
    if record.url != url {
        return None;
    }
    let data = staged.to_path_buf();
    let hashed = tokio::task::spawn_blocking(move || ark_core::tree::hash_with_outboard(&data))
        .await
        .ok()?;
    match hashed {
        Ok((size, root)) if size == record.size && root.to_hex().as_str() == record.root => {
            info!(staged = %staged.display(), size, "the body an earlier lease fetched is whole and re-verified: delivering it");
            Some(Fetched::Body {
                size,
                root,
                validators: record.validators,
                resumes: 0,
                restarts: 0,
                reused: size,
            })
        }
        _ => {
            warn!(staged = %staged.display(), "the body an earlier lease fetched no longer hashes to its root: fetching again");
            crate::fetch::remove_staged(staged).await;
            None
        }
    }
}
