//! The git bundle v2 as Ark exchanges it: what the agent writes and the
//! commander checks (the checks themselves need an object database, and
//! live with the commander).

use std::collections::BTreeMap;

/// Ref name → hex object id (e.g. "refs/heads/main" → "4b82…"). BTreeMap for
/// a stable order.
pub type Refs = BTreeMap<String, String>;

/// The first line of a v2 bundle.
pub const BUNDLE_V2_SIGNATURE: &str = "# v2 git bundle\n";

/// The branch a bare mirror's `HEAD` must be pointed at so a clone of it
/// checks something out, given what `HEAD` holds now (`ref: refs/heads/…`)
/// and the mirror's ref names: None when `HEAD` already names one of them,
/// or when there is no branch; else `main`, `master`, or the first branch.
pub fn head_branch<'a>(head: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let names: Vec<&'a str> = names.into_iter().collect();
    let current = head.trim().strip_prefix("ref: ").unwrap_or_default();
    if names.contains(&current) {
        return None;
    }
    ["refs/heads/main", "refs/heads/master"]
        .into_iter()
        .find_map(|wanted| names.iter().copied().find(|n| *n == wanted))
        .or_else(|| names.iter().copied().find(|n| n.starts_with("refs/heads/")))
}

#[cfg(test)]
mod tests {
    use super::head_branch;

    #[test]
    fn head_moves_only_when_it_names_no_ref() {
        let refs = ["refs/heads/dev", "refs/heads/master", "refs/tags/v1"];
        assert_eq!(head_branch("ref: refs/heads/dev\n", refs), None);
        assert_eq!(
            head_branch("ref: refs/heads/gone\n", refs),
            Some("refs/heads/master")
        );
        assert_eq!(
            head_branch("", ["refs/heads/x", "refs/tags/v1"]),
            Some("refs/heads/x")
        );
        assert_eq!(head_branch("", ["refs/tags/v1"]), None);
    }
}
