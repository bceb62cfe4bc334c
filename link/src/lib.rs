//! `ark-link`: the link between Ark's processes, shared by the agent and
//! the commander's CLI (which talks to its own commander the same way).
//!
//! Map of the modules:
//! - [`tls`]: TLS 1.3 client configurations (rustls with ring) — pinned for
//!   enrolment, mutual afterwards — and the lazily connecting gRPC channel.
//! - [`token`]: the one-time enrolment token.
//! - [`error`]: [`LinkError`], including how a failed RPC is sorted into
//!   "refused" (final) and "unreachable" (retry).
//! - [`process`]: logging, the shutdown signal and `completions`, for both
//!   binaries.
//! - [`memory`]: glibc's allocator thresholds, set first thing by both
//!   binaries so an upload's buffers are reused, not faulted in afresh.

pub mod error;
pub mod memory;
pub mod process;
pub mod tls;
pub mod token;

pub use error::{LinkError, Result};
