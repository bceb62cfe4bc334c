//! ZIM (Kiwix archive) checks that run while the bytes stream past: the
//! 80-byte header parsed and sanity-checked as soon as it has arrived, and
//! the MD5 of `[0, checksumPos)` computed in the same pass as BLAKE3 and
//! compared with the 16-byte trailer at the end. A file that fails is
//! refused with a precise reason before anything is uploaded (the agent) and
//! again before it lands (the commander). The deep structural check
//! (dirents, title index, clusters) is the commander's alone.
//!
//! Format facts (openzim.org/wiki/ZIM_file_format): little-endian; magic
//! 72173914; major version 5 or 6; pointer-list positions in the header;
//! `checksumPos + 16 == file length`.

use md5::{Digest, Md5};

/// Size of the ZIM header.
pub const HEADER_LEN: usize = 80;
/// `ZIM\x04` read as a little-endian u32.
pub const MAGIC: u32 = 72_173_914;

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub major: u16,
    pub minor: u16,
    pub entry_count: u32,
    pub cluster_count: u32,
    pub path_ptr_pos: u64,
    pub title_ptr_pos: u64,
    pub cluster_ptr_pos: u64,
    pub mime_list_pos: u64,
    pub main_page: u32,
    pub layout_page: u32,
    pub checksum_pos: u64,
}

/// Why a file is not a sound ZIM archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid ZIM file: {0}")]
pub struct ZimError(pub String);

fn bad(message: impl Into<String>) -> ZimError {
    ZimError(message.into())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

impl Header {
    /// Parses the first 80 bytes; checks what needs no file length.
    pub fn parse(bytes: &[u8]) -> Result<Self, ZimError> {
        if bytes.len() < HEADER_LEN {
            return Err(bad(format!(
                "{} bytes is too small to contain the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        let magic = u32_at(bytes, 0);
        if magic != MAGIC {
            return Err(bad(format!(
                "magic number {magic:#010x}, expected {MAGIC:#010x} (\"ZIM\\x04\"): this is some other kind of file"
            )));
        }
        let header = Self {
            major: u16_at(bytes, 4),
            minor: u16_at(bytes, 6),
            entry_count: u32_at(bytes, 24),
            cluster_count: u32_at(bytes, 28),
            path_ptr_pos: u64_at(bytes, 32),
            title_ptr_pos: u64_at(bytes, 40),
            cluster_ptr_pos: u64_at(bytes, 48),
            mime_list_pos: u64_at(bytes, 56),
            main_page: u32_at(bytes, 64),
            layout_page: u32_at(bytes, 68),
            checksum_pos: u64_at(bytes, 72),
        };
        if !matches!(header.major, 5 | 6) {
            return Err(bad(format!(
                "format version {}.{} (Ark reads 5.x and 6.x)",
                header.major, header.minor
            )));
        }
        if header.mime_list_pos != HEADER_LEN as u64 {
            return Err(bad(format!(
                "mimeListPos is {}; it must be {HEADER_LEN}, right after the header",
                header.mime_list_pos
            )));
        }
        Ok(header)
    }

    /// Whether the header has a v0 title index (6.3 and later may not).
    pub fn has_title_index(&self) -> bool {
        self.title_ptr_pos != u64::MAX && self.title_ptr_pos != 0
    }

    /// Checks every position against the file length.
    pub fn check_layout(&self, len: u64) -> Result<(), ZimError> {
        if self.checksum_pos.checked_add(16) != Some(len) {
            return Err(bad(format!(
                "checksumPos is {} but the file is {len} bytes: the checksum must be the last 16 bytes \
                 (a truncated or padded download?)",
                self.checksum_pos
            )));
        }
        let inside = |what: &str, pos: u64, count: u64, width: u64| {
            let end = count
                .checked_mul(width)
                .and_then(|n| pos.checked_add(n))
                .unwrap_or(u64::MAX);
            if pos < HEADER_LEN as u64 || end > self.checksum_pos {
                Err(bad(format!(
                    "the {what} table ({count} × {width} bytes at {pos}) lies outside the file's data (0..{})",
                    self.checksum_pos
                )))
            } else {
                Ok(())
            }
        };
        inside(
            "path pointer",
            self.path_ptr_pos,
            self.entry_count.into(),
            8,
        )?;
        if self.has_title_index() {
            inside(
                "title index",
                self.title_ptr_pos,
                self.entry_count.into(),
                4,
            )?;
        }
        inside(
            "cluster pointer",
            self.cluster_ptr_pos,
            self.cluster_count.into(),
            8,
        )?;
        if self.main_page != u32::MAX && self.main_page >= self.entry_count {
            return Err(bad(format!(
                "the main page is entry {} of {}",
                self.main_page, self.entry_count
            )));
        }
        Ok(())
    }
}

/// The streaming check: fed every byte in order, once.
#[derive(Debug, Clone, Default)]
pub struct StreamCheck {
    head: Vec<u8>,
    header: Option<Header>,
    md5: Md5,
    seen: u64,
    trailer: Vec<u8>,
}

impl StreamCheck {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next bytes. Fails as soon as the header is wrong.
    pub fn update(&mut self, mut bytes: &[u8]) -> Result<(), ZimError> {
        if self.header.is_none() {
            let take = bytes.len().min(HEADER_LEN - self.head.len());
            self.head.extend_from_slice(&bytes[..take]);
            if self.head.len() == HEADER_LEN {
                self.header = Some(Header::parse(&self.head)?);
                self.md5.update(&self.head);
                self.seen = HEADER_LEN as u64;
            }
            bytes = &bytes[take..];
        }
        let Some(header) = self.header else {
            return Ok(());
        };
        while !bytes.is_empty() {
            if self.seen < header.checksum_pos {
                let n = bytes.len().min((header.checksum_pos - self.seen) as usize);
                self.md5.update(&bytes[..n]);
                self.seen += n as u64;
                bytes = &bytes[n..];
            } else {
                let n = bytes.len().min(16usize.saturating_sub(self.trailer.len()));
                if n == 0 {
                    return Err(bad(format!(
                        "bytes continue after the checksum at {}: the file is longer than checksumPos + 16",
                        header.checksum_pos
                    )));
                }
                self.trailer.extend_from_slice(&bytes[..n]);
                self.seen += n as u64;
                bytes = &bytes[n..];
            }
        }
        Ok(())
    }

    /// Ends the stream of `len` bytes: layout and MD5 must agree.
    pub fn finish(self, len: u64) -> Result<Header, ZimError> {
        let Some(header) = self.header else {
            return Err(bad(format!(
                "{len} bytes is too small to contain the {HEADER_LEN}-byte header"
            )));
        };
        header.check_layout(len)?;
        let computed = self.md5.finalize();
        if computed.as_slice() != self.trailer.as_slice() {
            return Err(bad(format!(
                "MD5 of the first {} bytes is {}, the file says {}: the bytes are damaged",
                header.checksum_pos,
                hex::encode(computed),
                hex::encode(&self.trailer)
            )));
        }
        Ok(header)
    }
}

impl crate::BodyCheck for StreamCheck {
    fn reset(&mut self) {
        *self = Self::new();
    }
    fn update(&mut self, bytes: &[u8]) -> Result<(), String> {
        StreamCheck::update(self, bytes).map_err(|e| e.to_string())
    }
}

/// The URL of part `index` (0 = `aa`) of a split archive whose first part
/// is `first` (ending in `.zimaa`); None past `zz` or for an unsplit URL.
pub fn split_part_url(first: &str, index: usize) -> Option<String> {
    let stem = first.strip_suffix("aa")?;
    if !stem.ends_with(".zim") || index >= 26 * 26 {
        return None;
    }
    let suffix = [b'a' + (index / 26) as u8, b'a' + (index % 26) as u8];
    Some(format!("{stem}{}", std::str::from_utf8(&suffix).ok()?))
}
