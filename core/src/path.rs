//! Names Ark builds from what origins and operators say: one safe path
//! segment, a file name from a URL. Whatever a URL, feed or target name
//! holds, nothing built here leaves its directory.

/// A name that is safe as one path segment whatever an origin or an
/// operator said: no separators, no `..`, no NUL or control characters, not
/// hidden, bounded length.
pub fn safe_segment(raw: &str, fallback: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '@' | '=' | ',') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // No "..", even inside a name: nothing that reads like a way up.
    let mut cleaned = cleaned;
    while cleaned.contains("..") {
        cleaned = cleaned.replace("..", ".");
    }
    let trimmed: String = cleaned
        .trim_start_matches(['.', '-'])
        .chars()
        .take(120)
        .collect();
    if trimmed.is_empty() || trimmed.chars().all(|c| c == '.' || c == '_') {
        fallback.to_string()
    } else {
        trimmed
    }
}

/// The file name a URL's last path segment gives.
pub fn file_name_from_url(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let after_host = path.split("://").nth(1).unwrap_or(path);
    let last = after_host
        .split_once('/')
        .map(|(_, p)| p.rsplit('/').next().unwrap_or(""))
        .unwrap_or("");
    safe_segment(&percent_decode(last), "download")
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
