//! The feed kind's streaming check, run by the agent as the bytes arrive:
//! the document must start like a feed. The full parse (feed-rs) is the
//! commander's, on its own copy, before the snapshot lands.

/// The agent's streaming check of a feed: the document must start like one
/// (`<` for RSS/Atom, `{` for JSON Feed, after a BOM and whitespace), so a
/// binary is refused as it arrives (an HTML page is refused by the fetch's
/// sniff, as for every kind). The full parse is
/// the commander's: it reads every snapshot itself before landing it, and
/// the agent stays small.
#[derive(Debug, Default)]
pub struct FeedSniff {
    seen: u64,
    decided: bool,
}

impl FeedSniff {
    /// Whether the document's first byte has arrived (an empty body never
    /// decides: it is not a feed).
    pub fn decided(&self) -> bool {
        self.decided
    }
}

/// Bytes of leading whitespace (and BOM) a feed may have.
const FEED_SNIFF_WINDOW: u64 = 4096;

impl crate::BodyCheck for FeedSniff {
    fn reset(&mut self) {
        *self = Self::default();
    }

    fn update(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.decided {
            return Ok(());
        }
        let mut rest = bytes;
        if self.seen == 0 {
            rest = rest.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(rest);
        }
        match rest.iter().find(|b| !b.is_ascii_whitespace()) {
            // An HTML page also starts with '<': the fetch's own sniff
            // (crate::sniff), which every kind runs, refuses it.
            Some(b'<' | b'{') => self.decided = true,
            Some(&b) => {
                return Err(format!(
                    "the document starts with byte 0x{b:02x}: not a feed (RSS and Atom start with '<', JSON Feed with '{{')"
                ))
            }
            None => {}
        }
        self.seen += bytes.len() as u64;
        if !self.decided && self.seen > FEED_SNIFF_WINDOW {
            return Err(format!(
                "{FEED_SNIFF_WINDOW} bytes of whitespace: not a feed"
            ));
        }
        Ok(())
    }
}
