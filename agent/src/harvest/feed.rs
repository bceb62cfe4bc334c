//! The `rss` kind on the agent: the feed document is fetched like a file
//! with the feed sniff riding along ([`FeedSniff`]: it must start like a
//! feed). The full parse is the commander's.

use ark_core::formats::feed::FeedSniff;
use ark_core::BodyCheck;

use super::Plan;

#[derive(Debug, Default)]
pub struct Feed {
    sniff: FeedSniff,
}

impl Plan for Feed {
    fn check(&mut self) -> Option<&mut dyn BodyCheck> {
        Some(&mut self.sniff)
    }

    fn finish(&mut self, _size: u64) -> Result<(), String> {
        if self.sniff.decided() {
            Ok(())
        } else {
            Err("an empty document, not a feed".into())
        }
    }

    fn digests(&self) -> bool {
        false
    }
}
