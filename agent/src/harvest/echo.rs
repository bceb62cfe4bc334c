//! The `echo` test kind (feature `test-kind`): a file whose body must start
//! with `ECHO`, checked as it streams. It exists to prove the shape: a kind
//! is this module plus one line in [`super::plan`].

use ark_core::BodyCheck;

use super::Plan;

/// What every echo body starts with.
pub const MAGIC: &[u8] = b"ECHO";

#[derive(Debug, Default)]
pub struct Echo {
    check: EchoCheck,
}

/// The streaming check: the first bytes must be [`MAGIC`].
#[derive(Debug, Default)]
struct EchoCheck {
    seen: Vec<u8>,
}

impl BodyCheck for EchoCheck {
    fn reset(&mut self) {
        self.seen.clear();
    }

    fn update(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.seen.len() < MAGIC.len() {
            let take = bytes.len().min(MAGIC.len() - self.seen.len());
            self.seen.extend_from_slice(&bytes[..take]);
            if !MAGIC.starts_with(&self.seen) {
                return Err(format!("an echo body starts with {MAGIC:?}"));
            }
        }
        Ok(())
    }
}

impl Plan for Echo {
    fn check(&mut self) -> Option<&mut dyn BodyCheck> {
        Some(&mut self.check)
    }

    fn finish(&mut self, _size: u64) -> Result<(), String> {
        if self.check.seen.len() == MAGIC.len() {
            Ok(())
        } else {
            Err("too short for an echo body".into())
        }
    }

    fn digests(&self) -> bool {
        false
    }
}
