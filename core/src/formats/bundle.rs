//! The git bundle v2 as Ark exchanges it: what the agent writes and the
//! commander checks (the checks themselves need an object database, and
//! live with the commander).

use std::collections::BTreeMap;

/// Ref name → hex object id (e.g. "refs/heads/main" → "4b82…"). BTreeMap for
/// a stable order.
pub type Refs = BTreeMap<String, String>;

/// The first line of a v2 bundle.
pub const BUNDLE_V2_SIGNATURE: &str = "# v2 git bundle\n";
