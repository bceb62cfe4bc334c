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
//! - [`digests`]: digests an origin publishes beside a file (.meta4, .sha256, .md5).
//! - [`jobs`]: running one leased job: fetch, report, complete, clean up.
//! - [`harvest`]: what each kind adds to a fetch (the ZIM check and split
//!   archives, the feed sniff, the git mirror and bundle).
//! - [`registry`]: the local dedupe registry (SQLite).
//! - [`git`]: the Git mirror kind: a bare mirror of every ref, and the
//!   bundle of what changed since the commander's landed state.
//! - [`self_yield`]: noticing by itself: RTT probes while transferring and
//!   a delay-based rate limit (after LEDBAT) that keeps the uplink's queue
//!   under the target.
//! - [`session`]: the long-lived loop: register, heartbeat, reconnect.
//! - [`process`]: logging and the shutdown signal, shared by both binaries.
//! - From `ark-core`: [`tree`] (chunked BLAKE3 and its outboard),
//!   [`manifest`] (the signed claim), [`zim`] and [`sniff`] (streaming checks).
//! - [`status`]: the agent's last known state, written for `ark-agent status`.

pub mod config;
pub mod destination;
pub mod digests;
pub mod enroll;
pub mod error;
pub mod fetch;
pub mod harvest;
pub mod identity;
pub mod jobs;
pub mod lease;
pub mod registry;
pub mod self_yield;
pub mod session;
pub mod status;
pub mod telemetry;

// What the agent shares with the commander lives in ark-core; these paths
// stay for the agent's callers.
pub use ark_core::formats::zim;
pub use ark_core::{manifest, sniff, tree, unix_ms, write_atomic};
pub use ark_link::{process, tls as link};
pub use harvest::git;

pub use error::{AgentError, Result};

/// The version every agent reports at registration.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
