//! `ark-commander`: the always-on node that keeps the targets, leases jobs
//! to agents, and (in later versions) verifies and lands every result.
//!
//! Map of the modules:
//! - [`config`]: `commander.toml`, defaults as named constants.
//! - [`pki`]: the CA, the server and admin certificates, signing agent CSRs.
//! - [`tls`]: the TLS 1.3 acceptor and the peer identity each request carries.
//! - [`state`]: the SQLite store (agents, tokens, targets, runs, leases, events).
//! - [`scheduler`]: lease policy: grants, renewals, expiry, retries, pause.
//! - [`service`]: the gRPC services and the error → status boundary.
//! - [`server`]: wiring it together on a bound listener.
//! - [`archive`]: the archive on the NAS: quarantine, landing, recovery,
//!   retention, verification.
//! - [`ingest`]: the NAS's scheduled upkeep: recover, re-verify, prune,
//!   refresh the derived files.
//! - [`upload`]: receiving a verified upload (`Have`, `Upload`).
//! - [`zim_check`]: the deep structural check of a ZIM file.
//! - [`feed`]: the feed check, entries derived from landed snapshots, enclosures queued as media runs.
//! - [`git_check`]: the Git mirror kind: checking a bundle, landing it in
//!   the bare mirror atomically, the offline check of a mirror.
//! - [`window`]: off-peak windows (`--window 01:00-06:00`) in local time.
//! - [`web`]: the dashboard (HTTP, JSON, one static page) and `/metrics`.
//! - [`admin`]: the CLI's client for the admin service.
//! - [`cli`]: the `ark-commander` command line, one file per subcommand.

pub mod admin;
pub mod archive;
pub mod cli;
pub mod config;
pub mod error;
pub mod feed;
pub mod git_check;
pub mod ingest;
pub mod kinds;
pub mod landing;
pub mod library;
pub mod net;
pub mod pki;
pub mod recovery;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod state;
pub mod tls;
pub mod upload;
pub mod verify;
pub mod web;
pub mod window;
pub mod zim_check;

pub use error::{CommanderError, Result};
