//! Digests an origin publishes beside a file — a Metalink (`<url>.meta4`,
//! MirrorBrain-style, with SHA-256 and size), or a `<url>.sha256` /
//! `<url>.md5` sum file — found after a body arrives and compared with the
//! staged bytes. Their absence is recorded, not an error; a mismatch is a
//! damaged download and fails the job before anything is uploaded.
//!
//! Sidecars are looked for only when a body was fetched (an unchanged origin
//! still costs one request), and are small: anything over [`SIDECAR_LIMIT`]
//! is ignored.

use std::path::Path;
use std::time::Duration;

pub use ark_core::digest::{digest_file, parse_meta4, parse_sum};

use crate::destination::Guard;

/// Largest sidecar read.
pub const SIDECAR_LIMIT: usize = 64 * 1024;
const SIDECAR_TIMEOUT: Duration = Duration::from_secs(15);

/// A digest the origin published for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// "sha256" or "md5".
    pub algorithm: &'static str,
    pub hex: String,
    /// Where it was published.
    pub source: String,
    /// The size the metalink declares, if any.
    pub size: Option<u64>,
}

async fn sidecar(http: &reqwest::Client, guard: &Guard, url: &str) -> Option<String> {
    let sent = crate::fetch::send(http, url, guard, |r| r);
    let mut response = tokio::time::timeout(SIDECAR_TIMEOUT, sent)
        .await
        .ok()?
        .ok()?;
    if !response.status().is_success()
        || response
            .content_length()
            .is_some_and(|n| n > SIDECAR_LIMIT as u64)
    {
        return None;
    }
    // Read in pieces up to the limit: an endless sidecar costs no memory.
    let mut bytes = Vec::new();
    while let Some(chunk) = tokio::time::timeout(SIDECAR_TIMEOUT, response.chunk())
        .await
        .ok()?
        .ok()?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > SIDECAR_LIMIT {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Looks for a published digest of `url`: `.meta4`, then `.sha256`, then
/// `.md5`. None when the origin publishes none.
pub async fn discover(http: &reqwest::Client, guard: &Guard, url: &str) -> Option<Published> {
    let base = url.split(['?', '#']).next().unwrap_or(url);
    let meta4 = format!("{base}.meta4");
    if let Some((hex, size)) = sidecar(http, guard, &meta4)
        .await
        .and_then(|t| parse_meta4(&t))
    {
        return Some(Published {
            algorithm: "sha256",
            hex,
            source: meta4,
            size,
        });
    }
    for (algorithm, ext, len) in [("sha256", "sha256", 64), ("md5", "md5", 32)] {
        let at = format!("{base}.{ext}");
        if let Some(hex) = sidecar(http, guard, &at)
            .await
            .and_then(|t| parse_sum(&t, len))
        {
            return Some(Published {
                algorithm,
                hex,
                source: at,
                size: None,
            });
        }
    }
    None
}

/// Compares the staged file with what was published; Ok carries the digest.
pub async fn check(staged: &Path, size: u64, published: &Published) -> Result<String, String> {
    if let Some(declared) = published.size.filter(|&d| d != size) {
        return Err(format!(
            "{} declares {declared} bytes; {size} arrived",
            published.source
        ));
    }
    let (path, algorithm) = (staged.to_path_buf(), published.algorithm);
    let computed = tokio::task::spawn_blocking(move || digest_file(&path, algorithm))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading the staged file: {e}"))?;
    if computed != published.hex {
        return Err(format!(
            "{} of the download is {computed}; {} publishes {}: the bytes are damaged",
            algorithm.to_uppercase(),
            published.source,
            published.hex
        ));
    }
    Ok(computed)
}
