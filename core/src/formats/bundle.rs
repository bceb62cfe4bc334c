//! The git bundle v2 as Ark exchanges it: what the agent writes and the
//! commander checks (the checks themselves need an object database, and
//! live with the commander).

use std::collections::BTreeMap;

/// Ref name → hex object id (e.g. "refs/heads/main" → "4b82…"). BTreeMap for
/// a stable order.
pub type Refs = BTreeMap<String, String>;

/// The digest of a ref set, as a lease names the commander's mirror: BLAKE3
/// over `<id> <name>\n` lines in name order (hex). Agent and commander
/// compute it alike, so equal digests mean equal ref sets.
pub fn refs_digest(refs: &Refs) -> String {
    let mut hasher = blake3::Hasher::new();
    for (name, id) in refs {
        for part in [id.as_bytes(), b" ", name.as_bytes(), b"\n"] {
            hasher.update(part);
        }
    }
    hasher.finalize().to_hex().to_string()
}

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

/// Longest bundle header [`header_refs`] reads.
const MAX_HEADER: u64 = 16 << 20;

/// The ref → object map in a v2 bundle's header: what an agent claims for
/// the bundle it made (a quorum compares it; the commander's own check
/// parses the header strictly, and refuses the bundle when they differ).
pub fn header_refs(reader: impl std::io::BufRead) -> Result<Refs, String> {
    use std::io::BufRead;
    let mut lines = std::io::Read::take(reader, MAX_HEADER).lines();
    match lines.next() {
        Some(Ok(first)) if first == BUNDLE_V2_SIGNATURE.trim_end() => {}
        _ => return Err("not a v2 git bundle".into()),
    }
    let mut refs = Refs::new();
    for line in lines {
        let line = line.map_err(|e| format!("reading the bundle header: {e}"))?;
        if line.is_empty() {
            return Ok(refs);
        }
        if line.starts_with('-') {
            continue; // a prerequisite
        }
        let (id, name) = line
            .split_once(' ')
            .ok_or_else(|| format!("bundle header line {line:?} is not \"<id> <ref>\""))?;
        refs.insert(name.to_string(), id.to_string());
    }
    Err("the bundle header does not end".into())
}

#[cfg(test)]
mod tests {
    use super::head_branch;

    #[test]
    fn header_refs_reads_the_refs_and_skips_prerequisites() {
        let header = b"# v2 git bundle\n-1111111111111111111111111111111111111111 old\n2222222222222222222222222222222222222222 refs/heads/main\n\nPACK";
        let refs = super::header_refs(&header[..]).expect("refs");
        assert_eq!(refs.len(), 1);
        assert_eq!(refs["refs/heads/main"], "2".repeat(40));
        assert!(super::header_refs(&b"PACK"[..]).is_err());
        assert!(super::header_refs(&b"# v2 git bundle\nabc refs/x\n"[..]).is_err());
    }

    #[test]
    fn the_refs_digest_changes_with_any_name_or_id() {
        use super::{refs_digest, Refs};
        let refs = Refs::from([
            ("refs/heads/a".to_string(), "1".repeat(40)),
            ("refs/heads/b".to_string(), "2".repeat(40)),
        ]);
        let digest = refs_digest(&refs);
        assert_eq!(digest.len(), 64);
        assert_eq!(digest, refs_digest(&refs.clone()));
        assert_ne!(digest, refs_digest(&Refs::new()));
        let mut moved = refs.clone();
        moved.insert("refs/heads/b".into(), "3".repeat(40));
        assert_ne!(digest, refs_digest(&moved));
        let mut renamed = refs.clone();
        let id = renamed.remove("refs/heads/b").expect("b");
        renamed.insert("refs/heads/c".into(), id);
        assert_ne!(digest, refs_digest(&renamed));
    }

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
