//! The streaming check a kind adds to a fetch.

/// A format's streaming check (e.g. [`crate::formats::zim::StreamCheck`]),
/// fed every byte of the body in order in the same pass as the hasher.
/// Bytes a resume keeps from disk are fed first; a restart from zero resets
/// it.
pub trait BodyCheck: Send + Sync {
    /// The body starts again from byte 0.
    fn reset(&mut self);
    /// The next bytes; Err refuses the body (the reason says why).
    fn update(&mut self, bytes: &[u8]) -> Result<(), String>;
}
