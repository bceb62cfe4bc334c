//! `ark-commander`: the always-on node that keeps the targets, leases jobs
//! to agents, verifies every result itself and lands it on the NAS.
//!
//! Map of the modules, bottom up (no module imports one above it in a
//! circle):
//! - [`config`]: `commander.toml`, defaults as named constants.
//! - [`state`]: the SQLite store (agents, tokens, targets, runs, leases,
//!   events) and run insertion.
//! - [`pki`], [`tls`], [`net`]: the CA and certificates, the TLS 1.3
//!   acceptor, binding listeners and the endpoint files.
//! - [`archive`]: the layout on the NAS and the ledger's view of versions.
//! - [`zim_check`], [`feed`], [`git_check`]: the deep checks and the
//!   derivations the kinds use.
//! - [`kinds`]: one module per harvest kind behind [`kinds::KindSpec`] —
//!   the only place that knows what a kind is.
//! - [`landing`], [`recovery`], [`verify`], [`library`], [`names`]: the
//!   kind-neutral pipeline on the archive — the landing protocol, crash
//!   recovery and quarantine reclaim, `archive verify`, the Kiwix library
//!   and index, `archive check-names`.
//! - [`scheduler`]: lease policy: grants, renewals, expiry, retries,
//!   deferrals, pause.
//! - [`upload`]: receiving a verified upload (`Have`, `Upload`).
//! - [`household`]: `[[pause_when]]` rules: the swarm yields to the
//!   household's own use of the network.
//! - [`opml`]: feed lists in and out (`target import|export opml`).
//! - [`sources`]: sources that move (a Kiwix book's newest release),
//!   resolved by the commander before a run is leased.
//! - [`service`]: the gRPC services and the error → status boundary.
//! - [`history`]: the dashboard's history, sampled into the store and
//!   bounded.
//! - [`web`]: the dashboard (HTTP, JSON, one static page) and `/metrics`.
//! - [`server`]: wiring it together on a bound listener.
//! - [`ingest`]: the NAS's scheduled upkeep: recover, re-verify, prune,
//!   refresh the derived files.
//! - `fuzzing` (hidden): the bodies of the fuzz targets in `fuzz/`.
//! - [`window`]: off-peak windows (`--window 01:00-06:00`) in local time.
//! - [`admin`], [`cli`]: the CLI's client for the admin service, and the
//!   `ark-commander` command line, one file per subcommand.

pub mod admin;
pub mod archive;
pub mod backend;
pub mod cli;
pub mod config;
pub mod error;
pub mod feed;
#[doc(hidden)]
pub mod fuzzing;
pub mod git_check;
pub mod history;
pub mod household;
pub mod ingest;
pub mod kinds;
pub mod landing;
pub mod lfs;
pub mod library;
pub mod migrate;
pub mod names;
pub mod net;
pub mod opml;
pub mod pki;
pub mod recovery;
pub mod replica;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod sources;
pub mod state;
pub mod tls;
pub mod upload;
pub mod verify;
pub mod web;
pub mod window;
pub mod zim_check;

pub use error::{CommanderError, Result};
