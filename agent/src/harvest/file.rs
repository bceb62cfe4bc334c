//! The `file` and `media` kinds: one URL, nothing beyond the generic fetch
//! (the HTML sniff every fetch runs included). A file's origin is asked for
//! a published digest; a feed's enclosure is not (feeds publish none, and
//! three extra requests per episode would be waste).

use super::Plan;

#[derive(Debug)]
pub struct File;

impl Plan for File {}

#[derive(Debug)]
pub struct Media;

impl Plan for Media {
    fn digests(&self) -> bool {
        false
    }
}
