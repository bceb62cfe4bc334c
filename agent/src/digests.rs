//! Digests an origin publishes beside a file — a Metalink (`<url>.meta4`,
//! MirrorBrain-style, with SHA-256 and size), or a `<url>.sha256` /
//! `<url>.md5` sum file — found after a body arrives and compared with the
//! staged bytes. Their absence is recorded, not an error; a mismatch is a
//! damaged download and fails the job before anything is uploaded.
//!
//! Sidecars are looked for only when a body was fetched (an unchanged origin
//! still costs one request), and are small: anything over [`SIDECAR_LIMIT`]
//! is ignored.

use crate::destination::Guard;
use std::path::Path;
use std::time::Duration;

use md5::Digest;

/// Largest sidecar read.
pub const SIDECAR_LIMIT: usize = 64 * 1024;
const SIDECAR_TIMEOUT: Duration = Duration::from_secs(15);

/// A digest the origin published for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// "sha256" or "md5".
    pub algorithm: &'static str,
    pub hex: String,
    /// Where it was published.
    pub source: String,
    /// The size the metalink declares, if any.
    pub size: Option<u64>,
}

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

async fn sidecar(http: &reqwest::Client, guard: &Guard, url: &str) -> Option<String> {
    let sent = crate::fetch::send(http, url, guard, |r| r);
    let mut response = tokio::time::timeout(SIDECAR_TIMEOUT, sent)
        .await
        .ok()?
        .ok()?;
    if !response.status().is_success()
        || response
            .content_length()
            .is_some_and(|n| n > SIDECAR_LIMIT as u64)
    {
        return None;
    }
    // Read in pieces up to the limit: an endless sidecar costs no memory.
    let mut bytes = Vec::new();
    while let Some(chunk) = tokio::time::timeout(SIDECAR_TIMEOUT, response.chunk())
        .await
        .ok()?
        .ok()?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > SIDECAR_LIMIT {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Looks for a published digest of `url`: `.meta4`, then `.sha256`, then
/// `.md5`. None when the origin publishes none.
pub async fn discover(http: &reqwest::Client, guard: &Guard, url: &str) -> Option<Published> {
    let base = url.split(['?', '#']).next().unwrap_or(url);
    let meta4 = format!("{base}.meta4");
    if let Some((hex, size)) = sidecar(http, guard, &meta4)
        .await
        .and_then(|t| parse_meta4(&t))
    {
        return Some(Published {
            algorithm: "sha256",
            hex,
            source: meta4,
            size,
        });
    }
    for (algorithm, ext, len) in [("sha256", "sha256", 64), ("md5", "md5", 32)] {
        let at = format!("{base}.{ext}");
        if let Some(hex) = sidecar(http, guard, &at)
            .await
            .and_then(|t| parse_sum(&t, len))
        {
            return Some(Published {
                algorithm,
                hex,
                source: at,
                size: None,
            });
        }
    }
    None
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

/// Compares the staged file with what was published; Ok carries the digest.
pub async fn check(staged: &Path, size: u64, published: &Published) -> Result<String, String> {
    if let Some(declared) = published.size.filter(|&d| d != size) {
        return Err(format!(
            "{} declares {declared} bytes; {size} arrived",
            published.source
        ));
    }
    let (path, algorithm) = (staged.to_path_buf(), published.algorithm);
    let computed = tokio::task::spawn_blocking(move || digest_file(&path, algorithm))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading the staged file: {e}"))?;
    if computed != published.hex {
        return Err(format!(
            "{} of the download is {computed}; {} publishes {}: the bytes are damaged",
            algorithm.to_uppercase(),
            published.source,
            published.hex
        ));
    }
    Ok(computed)
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
