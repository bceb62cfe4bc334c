//! `ark-agent`: the harvester that runs on every spare device.
//!
//! The agent enrols once with a one-time token (getting a client certificate
//! signed by the commander's CA), then keeps a session with the commander:
//! it registers its capabilities, heartbeats telemetry, takes the leases the
//! commander hands it, reports progress (which renews each lease) and
//! completes runs. Everything here is library code; `main.rs` only parses
//! arguments.
//!
//! Map of the modules:
//! - [`config`]: `agent.toml` in the data dir, CLI overrides on top.
//! - [`identity`]: the agent's key, certificate and pinned CA on disk (0600).
//! - [`link`]: TLS 1.3 client configurations and the gRPC channel to the
//!   commander (also used by the commander's own CLI).
//! - [`enroll`]: the one-time token format and the enrolment exchange.
//! - [`telemetry`]: CPU, memory, temperature and disk readings (sysinfo).
//! - [`fetch`]: streaming HTTP fetch: conditional GET, range resume, refusals.
//! - [`destination`]: where a fetch may go (no household network unless
//!   allowed, never the commander), checked at every hop and connect.
//! - [`sniff`]: an HTML page recognised by its first bytes.
//! - [`digests`]: digests an origin publishes beside a file (.meta4, .sha256, .md5).
//! - [`jobs`]: running one leased job: fetch, report, complete, clean up.
//! - [`tree`]: chunked BLAKE3 in one pass: the root and the group outboard,
//!   and the verifier the commander checks uploads with.
//! - [`manifest`]: the signed claim sent with each harvested body.
//! - [`registry`]: the local dedupe registry (SQLite).
//! - [`zim`]: the ZIM header and MD5 checks that run while bytes stream.
//! - [`git`]: the Git mirror kind: a bare mirror of every ref, and the
//!   bundle of what changed since the commander's landed state.
//! - [`session`]: the long-lived loop: register, heartbeat, reconnect.
//! - [`process`]: logging and the shutdown signal, shared by both binaries.
//! - [`status`]: the agent's last known state, written for `ark-agent status`.

pub mod config;
pub mod destination;
pub mod digests;
pub mod enroll;
pub mod error;
pub mod fetch;
pub mod git;
pub mod identity;
pub mod jobs;
pub mod link;
pub mod manifest;
pub mod process;
pub mod registry;
pub mod session;
pub mod sniff;
pub mod status;
pub mod telemetry;
pub mod tree;
pub mod zim;

pub use error::{AgentError, Result};

/// The version every agent reports at registration.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Milliseconds since the Unix epoch: the one clock format on the wire and on disk.
pub fn unix_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename), with the
/// given Unix permissions, so a crash never leaves a half-written file.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
