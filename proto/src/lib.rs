//! Ark's wire protocol: the `ark.v1` messages and services generated from
//! `proto/ark/v1/ark.proto`, and nothing else. Logic lives in `ark-agent` and
//! `ark-commander`; this crate only gives both sides the same types.
//!
//! The package is versioned (`ark.v1`): a breaking change becomes `ark.v2`
//! beside it, and fields inside v1 are only ever added, so peers of different
//! ages keep talking (proto3 skips unknown fields).

#![allow(missing_docs, missing_debug_implementations)]

/// Generated code for package `ark.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, clippy::unwrap_used)]
    tonic::include_proto!("ark.v1");
}

pub use v1::*;

// The kinds travel as their names (`ark_core::Kind::as_str`): a string,
// so peers of different ages keep talking.

impl LeaseRef {
    /// The reference a report on `lease` must carry.
    pub fn of(lease: &Lease) -> Self {
        Self {
            run_id: lease.run_id,
            generation: lease.generation,
        }
    }
}
