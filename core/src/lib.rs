//! `ark-core`: what Ark's agent and commander share, and nothing else. No
//! async runtime, no RPC, no database: pure functions and small state
//! machines both processes run on the same bytes, so the commander checks a
//! body exactly as the agent did (and never takes the agent's word for it).
//!
//! Map of the modules:
//! - [`kind`]: the harvest kinds ([`Kind`]).
//! - [`tree`]: BLAKE3 in 16 KiB chunk groups: the hasher that builds the
//!   outboard as bytes arrive, and the verifier that checks an upload group
//!   by group.
//! - [`manifest`]: the claim an agent signs for each body, its signing and
//!   its verification against the agent's certificate.
//! - [`body_check`]: the trait a kind's streaming check implements;
//!   [`formats`] the checks themselves (ZIM header and MD5, the feed sniff);
//!   [`sniff`] an HTML page recognised by its first bytes, for every kind.
//! - [`digest`]: digests origins publish beside a file, and computing them.
//! - [`path`]: one safe path segment, a file name from a URL.
//! - [`fs`]: atomic file writes. [`config`]: the TOML config loader.
//! - `fuzzing` (hidden): the bodies of the fuzz targets in `fuzz/`.

pub mod body_check;
pub mod config;
pub mod digest;
pub mod formats;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub mod kind;
pub mod manifest;
pub mod path;
pub mod sniff;
pub mod tree;

pub use body_check::BodyCheck;
pub use fs::write_atomic;
pub use kind::Kind;

/// Milliseconds since the Unix epoch: the one clock format on the wire and
/// on disk.
pub fn unix_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// "12s ago" style age of a Unix-ms timestamp (0 = never), for people.
pub fn ago(at_ms: i64) -> String {
    if at_ms == 0 {
        return "never".into();
    }
    let secs = (unix_ms() - at_ms).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}
