//! The harvest kinds. On the wire and in the ledger a kind is its name (a
//! string, so peers of different ages keep talking); in code it is this
//! enum, and each side has one module per kind behind one `match` (the
//! agent's `harvest`, the commander's `kinds`).

use std::fmt;
use std::str::FromStr;

/// What a run harvests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// One file over HTTP(S).
    File,
    /// A Kiwix ZIM archive: a file plus the ZIM checks.
    Zim,
    /// An RSS, Atom or JSON Feed: the feed itself is the run's body; the
    /// commander derives the entries and queues the enclosures as media.
    Rss,
    /// One enclosure of a feed: a file job the commander queues, not a
    /// target kind an operator adds.
    Media,
    /// A Git repository, mirrored: the body is a bundle of what the
    /// commander's mirror lacks.
    Git,
    /// A forge account (a GitHub user or organisation, a GitLab group, a
    /// Gitea/Forgejo owner): the commander lists its repositories through
    /// the forge's API and keeps one `git` target per repository. Resolved
    /// by the commander; agents never harvest it.
    GitAccount,
    /// One Git LFS object of a mirrored repository (`--lfs`): a file job the
    /// commander queues when a landed bundle brings LFS pointers, fetched
    /// through the LFS batch API and held to the pointer's SHA-256 oid.
    Lfs,
    /// A test of the shape (feature `test-kind`): a file-like kind that
    /// lives only in its own module on each side, plus one line in each
    /// side's `match`, harvested end to end by the swarm tests.
    #[cfg(feature = "test-kind")]
    Echo,
}

impl Kind {
    /// Every kind this version knows, in a stable order.
    pub const ALL: &'static [Kind] = &[
        Kind::File,
        Kind::Zim,
        Kind::Rss,
        Kind::Media,
        Kind::Git,
        Kind::GitAccount,
        Kind::Lfs,
        #[cfg(feature = "test-kind")]
        Kind::Echo,
    ];

    /// The kinds an agent harvests (all but what the commander resolves
    /// itself).
    pub const HARVESTED: &'static [Kind] = &[
        Kind::File,
        Kind::Zim,
        Kind::Rss,
        Kind::Media,
        Kind::Git,
        Kind::Lfs,
        #[cfg(feature = "test-kind")]
        Kind::Echo,
    ];

    /// The kinds a target can have (`ark-commander target add KIND URL`).
    pub const TARGETS: &'static [Kind] = &[
        Kind::File,
        Kind::Zim,
        Kind::Rss,
        Kind::Git,
        Kind::GitAccount,
        #[cfg(feature = "test-kind")]
        Kind::Echo,
    ];

    /// The kind's name on the wire, in the ledger and in the archive layout.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Zim => "zim",
            Kind::Rss => "rss",
            Kind::Media => "media",
            Kind::Git => "git",
            Kind::GitAccount => "git-account",
            Kind::Lfs => "lfs",
            #[cfg(feature = "test-kind")]
            Kind::Echo => "echo",
        }
    }

    /// Names, for help and error messages: `file, zim, rss, git`.
    pub fn names(kinds: &[Kind]) -> String {
        kinds
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind {0:?} (known: {known})", known = Kind::names(Kind::ALL))]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| UnknownKind(name.to_string()))
    }
}

impl PartialEq<str> for Kind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<String> for Kind {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Kind> for String {
    fn eq(&self, other: &Kind) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Kind> for str {
    fn eq(&self, other: &Kind) -> bool {
        self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_by_name_and_unknown_names_are_refused() {
        for &kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
        }
        let err = "warc".parse::<Kind>().expect_err("unknown kind parsed");
        assert!(
            err.to_string().contains("file, zim, rss, media, git"),
            "{err}"
        );
        assert!(Kind::TARGETS.iter().all(|k| Kind::ALL.contains(k)));
        assert!(!Kind::TARGETS.contains(&Kind::Media));
        assert!(!Kind::HARVESTED.contains(&Kind::GitAccount));
    }
}
