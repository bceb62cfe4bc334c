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

/// The job kinds this version of the protocol knows.
pub const KIND_FILE: &str = "file";
/// A Kiwix ZIM archive: the file kind plus the ZIM checks.
pub const KIND_ZIM: &str = "zim";
/// An RSS, Atom or JSON Feed: the feed itself is the run's body; the
/// commander derives the entries and queues the enclosures as media jobs.
pub const KIND_RSS: &str = "rss";
/// One enclosure of a feed: a file job the commander queues, not a target
/// kind an operator adds.
pub const KIND_MEDIA: &str = "media";
/// A Git repository, mirrored: the run's body is a git bundle of what the
/// commander's mirror lacks.
pub const KIND_GIT: &str = "git";
/// The kinds a target can have (`ark-commander target add KIND URL`).
pub const KINDS: &[&str] = &[KIND_FILE, KIND_ZIM, KIND_RSS, KIND_GIT];
/// The kinds of job this version of the agent harvests.
pub const JOB_KINDS: &[&str] = &[KIND_FILE, KIND_ZIM, KIND_RSS, KIND_MEDIA, KIND_GIT];

impl LeaseRef {
    /// The reference a report on `lease` must carry.
    pub fn of(lease: &Lease) -> Self {
        Self {
            run_id: lease.run_id,
            generation: lease.generation,
        }
    }
}
