//! A lying agent, for the tests of zero trust: with
//! [`FAULT_FORGE_BODY`] set, every fetched body is replaced by the named
//! file's bytes before the manifest is made, and the agent hashes, signs and
//! delivers them exactly as it would honest ones — a well-formed lie the
//! commander must catch by itself. Compiled into debug builds only: a
//! release agent has no such hook.

use std::path::Path;

use tracing::warn;

/// Environment variable naming the file whose bytes replace every body.
pub const FAULT_FORGE_BODY: &str = "ARK_FAULT_FORGE_BODY";

/// Replaces `staged` (and its outboard) with the forged bytes when the hook
/// is set; returns their size and root.
pub(super) async fn forged(staged: &Path) -> Option<(u64, blake3::Hash)> {
    let forged = std::env::var_os(FAULT_FORGE_BODY)?;
    let staged = staged.to_path_buf();
    let done = tokio::task::spawn_blocking(move || {
        std::fs::copy(&forged, &staged)?;
        ark_core::tree::hash_with_outboard(&staged)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|hashed| hashed);
    match done {
        Ok((size, root)) => {
            warn!(%root, size, "fault injection: the body was replaced by forged bytes ({FAULT_FORGE_BODY})");
            Some((size, root))
        }
        Err(e) => {
            warn!("fault injection {FAULT_FORGE_BODY}: {e}");
            None
        }
    }
}
