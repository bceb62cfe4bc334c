//! The `git-account` kind: a forge account whose repositories the
//! commander lists itself ([`crate::sources::forge`]) and keeps as one `git`
//! target each. Its runs never reach an agent and never land a version:
//! everything else is a plain target's default.

use ark_core::Kind;

use super::KindSpec;

#[derive(Debug)]
pub struct GitAccount;

impl KindSpec for GitAccount {
    fn kind(&self) -> Kind {
        Kind::GitAccount
    }

    fn schemes(&self) -> &'static [&'static str] {
        &["http", "https"]
    }
}
