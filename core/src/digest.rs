//! Digests origins publish beside a file, parsed, and computed over a file:
//! the agent compares what it fetched with them before uploading, the
//! commander recomputes them on its own copy before landing.

use std::path::Path;

use md5::Digest;

/// The first hex token of the right length in a `sha256sum`/`md5sum` style
/// file ("HEX  name" or "HEX").
pub fn parse_sum(text: &str, hex_len: usize) -> Option<String> {
    let token = text.split_whitespace().next()?.trim_start_matches('\\');
    (token.len() == hex_len && token.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| token.to_ascii_lowercase())
}

/// SHA-256 and size from a Metalink 4 document (RFC 5854).
pub fn parse_meta4(text: &str) -> Option<(String, Option<u64>)> {
    let hash_at = text
        .find("type=\"sha-256\"")
        .or_else(|| text.find("type='sha-256'"))?;
    let rest = &text[hash_at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')? + start;
    let hex = parse_sum(&rest[start..end], 64)?;
    let size = text.find("<size>").and_then(|at| {
        let rest = &text[at + 6..];
        rest[..rest.find('<')?].trim().parse().ok()
    });
    Some((hex, size))
}

/// Computes `algorithm` ("sha256" or "md5") over a file, in 1 MiB reads.
pub fn digest_file(path: &Path, algorithm: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut md5 = md5::Md5::new();
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        match algorithm {
            "md5" => md5.update(&buf[..n]),
            _ => sha.update(&buf[..n]),
        }
    }
    Ok(match algorithm {
        "md5" => hex::encode(md5.finalize()),
        _ => hex::encode(sha.finish()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_files_and_metalinks_parse_and_garbage_does_not() {
        let sha = "a".repeat(64);
        assert_eq!(
            parse_sum(&format!("{sha}  wiki.zim\n"), 64),
            Some(sha.clone())
        );
        assert_eq!(
            parse_sum(&format!("{}\n", sha.to_uppercase()), 64),
            Some(sha.clone())
        );
        assert_eq!(parse_sum("<html>404</html>", 64), None);
        assert_eq!(parse_sum(&"a".repeat(63), 64), None);
        let meta4 = format!(
            "<?xml version=\"1.0\"?><metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\
             <file name=\"wiki.zim\"><size>41155</size><hash type=\"md5\">{}</hash>\
             <hash type=\"sha-256\">{sha}</hash></file></metalink>",
            "b".repeat(32)
        );
        assert_eq!(parse_meta4(&meta4), Some((sha, Some(41_155))));
        assert_eq!(parse_meta4("<metalink/>"), None);
    }

    #[test]
    fn file_digests_match_the_standard_tools_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").expect("write");
        assert_eq!(
            digest_file(&path, "sha256").expect("sha256"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest_file(&path, "md5").expect("md5"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }
}
