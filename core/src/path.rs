//! Names Ark builds from what origins and operators say: one safe path
//! segment, a file name from a URL. Whatever a URL, feed or target name
//! holds, nothing built here leaves its directory.

/// Longest name component every filesystem an archive lives on takes
/// (ext4, btrfs, ZFS, exFAT, NTFS, SMB): 255 bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// The longest suffix Ark adds to a name it built: `.manifest.json` beside
/// every landed file (temporary names are shorter: `.tmp`).
pub const SUFFIX_RESERVE: usize = ".manifest.json".len();

/// Longest name Ark builds, so that with any suffix it fits
/// [`MAX_NAME_BYTES`].
pub const MAX_BUILT_BYTES: usize = MAX_NAME_BYTES - SUFFIX_RESERVE;

/// Hex digits of the hash that keeps two shortened names apart.
const SHORT_HASH: usize = 10;

/// Names Windows reserves for devices (with any extension, in any case).
const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM0", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7",
    "COM8", "COM9", "LPT0", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
    "CONIN$", "CONOUT$",
];

/// A name that is safe as one path segment whatever an origin or an
/// operator said, on every filesystem an archive may be copied to: Unicode
/// normalised to NFC; letters, digits and `-_.+@=,` only (so none of
/// `<>:"/\|?*`, no control character, no separator); no `..`; not hidden;
/// no trailing dot or space; not a reserved device name (`CON`, `NUL.txt`,
/// `COM1`: prefixed with `_`); and at most [`MAX_BUILT_BYTES`] bytes — a
/// longer name keeps its readable start and its extension, with a short
/// hash of the original between them, so two long names never collide.
pub fn safe_segment(raw: &str, fallback: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let cleaned: String = raw
        .nfc()
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
    let trimmed = cleaned
        .trim_start_matches(['.', '-'])
        .trim_end_matches(['.', ' ']);
    if trimmed.is_empty() || trimmed.chars().all(|c| c == '.' || c == '_') {
        return fallback.to_string();
    }
    let name = if is_reserved(trimmed) {
        format!("_{trimmed}")
    } else {
        trimmed.to_string()
    };
    fit(name, raw)
}

/// Is `name` a device name Windows reserves (`CON`, `nul.txt`, `COM1.log`)?
pub fn is_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end();
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem))
}

/// `name` within [`MAX_BUILT_BYTES`]: unchanged when it fits; else its
/// readable start, `~`, a short hash of `original`, and its extension.
pub fn fit(name: String, original: &str) -> String {
    if name.len() <= MAX_BUILT_BYTES {
        return name;
    }
    let ext = name
        .rsplit_once('.')
        .map(|(_, ext)| ext)
        .filter(|ext| {
            !ext.is_empty() && ext.len() <= 16 && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .map(|ext| format!(".{ext}"))
        .unwrap_or_default();
    let hash = blake3::hash(original.as_bytes()).to_hex();
    let budget = MAX_BUILT_BYTES - 1 - SHORT_HASH - ext.len();
    let mut start = String::new();
    for c in name.chars() {
        if start.len() + c.len_utf8() > budget {
            break;
        }
        start.push(c);
    }
    let start = start.trim_end_matches(['.', ' ']);
    format!("{start}~{}{ext}", &hash[..SHORT_HASH])
}

/// What would stop `name` (one component) from being copied to exFAT,
/// NTFS or an SMB share as it is; None when nothing would.
pub fn portability_problem(name: &str) -> Option<String> {
    use unicode_normalization::UnicodeNormalization;
    if name.len() > MAX_NAME_BYTES {
        return Some(format!(
            "{} bytes, over the {MAX_NAME_BYTES} every filesystem takes",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| {
        c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '/' | '\\' | '|' | '?' | '*')
    }) {
        return Some(format!("holds {c:?}, which exFAT, NTFS and SMB refuse"));
    }
    if name.ends_with(['.', ' ']) {
        return Some("ends with a dot or a space, which Windows drops".into());
    }
    if is_reserved(name) {
        return Some("is a device name Windows reserves".into());
    }
    if name.nfc().collect::<String>() != name {
        return Some("is not in Unicode NFC (macOS and Windows may see another name)".into());
    }
    None
}

/// The key under which two names clash on a case-insensitive filesystem.
pub fn fold(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    name.nfc().flat_map(char::to_lowercase).collect()
}

/// The file name a URL's last path segment gives (see [`safe_segment`]).
pub fn file_name_from_url(url: &str) -> String {
    safe_segment(&original_name(url), "download")
}

/// A URL's last path segment as the origin named it (percent-decoded): what
/// the manifest keeps when the landed name had to differ.
pub fn original_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let after_host = path.split("://").nth(1).unwrap_or(path);
    let last = after_host
        .split_once('/')
        .map(|(_, p)| p.rsplit('/').next().unwrap_or(""))
        .unwrap_or("");
    percent_decode(last)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The hostile names of issue 17, and what each must become.
    fn hostile() -> Vec<String> {
        let mut names = vec![
            "a".repeat(255),
            "a".repeat(256),
            "a".repeat(1000),
            format!("{}.zim", "é".repeat(150)),
            format!("{}.mp3", "€".repeat(100)),
            "😀".repeat(75),
            "Report.PDF".into(),
            "report.pdf".into(),
            "caf\u{e9}.txt".into(),
            "cafe\u{301}.txt".into(),
            "...".into(),
            "name with trailing space ".into(),
            "trailing dot.".into(),
            "a<b>c:d\"e/f\\g|h?i*j".into(),
            "tab\there\u{7}bell".into(),
        ];
        for r in ["CON", "nul", "Com1", "LPT9.txt", "aux.tar.gz", "PRN"] {
            names.push(r.to_string());
        }
        names
    }

    #[test]
    fn every_hostile_name_becomes_portable_and_fits_with_every_suffix() {
        for raw in hostile() {
            let name = safe_segment(&raw, "download");
            assert!(
                name.len() + SUFFIX_RESERVE <= MAX_NAME_BYTES,
                "{raw:?} -> {} bytes",
                name.len()
            );
            assert_eq!(portability_problem(&name), None, "{raw:?} -> {name:?}");
            assert_eq!(portability_problem(&format!("{name}.manifest.json")), None);
        }
    }

    #[test]
    fn long_names_keep_their_start_and_extension_and_never_collide() {
        let a = safe_segment(&format!("{}-one.zim", "x".repeat(300)), "f");
        let b = safe_segment(&format!("{}-two.zim", "x".repeat(300)), "f");
        assert_ne!(a, b);
        assert!(a.starts_with("xxxxxxxx") && a.ends_with(".zim"), "{a}");
        let utf8 = safe_segment(&"€".repeat(100), "f");
        assert!(utf8.is_char_boundary(utf8.len()) && utf8.len() <= MAX_BUILT_BYTES);
        // A name that fits is unchanged.
        assert_eq!(safe_segment("episode-12.mp3", "f"), "episode-12.mp3");
        assert_eq!(safe_segment(&"a".repeat(241), "f"), "a".repeat(241));
    }

    #[test]
    fn normalisation_reserved_names_and_case_are_handled() {
        assert_eq!(safe_segment("cafe\u{301}.txt", "f"), "caf\u{e9}.txt");
        assert_eq!(safe_segment("CON", "f"), "_CON");
        assert_eq!(safe_segment("nul.txt", "f"), "_nul.txt");
        assert_eq!(safe_segment("...", "f"), "f");
        assert_eq!(safe_segment("trailing dot.", "f"), "trailing_dot");
        assert_eq!(fold("Report.PDF"), fold("report.pdf"));
        assert!(portability_problem("CON").is_some());
        assert!(portability_problem("a:b").is_some());
        assert!(portability_problem("x.").is_some());
        assert!(portability_problem("cafe\u{301}").is_some());
        assert!(portability_problem(&"a".repeat(256)).is_some());
    }
}
