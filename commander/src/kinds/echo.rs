//! The `echo` test kind (feature `test-kind`): a file whose body must start
//! with `ECHO`, checked again on the commander's copy before it lands under
//! `echo/<target>/<stamp>/`. It exists to prove the shape: a kind is this
//! module plus one line in [`super::spec`]; every other behaviour is the
//! trait's default.

use std::io::Read;

use ark_core::Kind;

use super::{CheckCtx, KindSpec};
use crate::{CommanderError, Result};

#[derive(Debug)]
pub struct Echo;

impl KindSpec for Echo {
    fn kind(&self) -> Kind {
        Kind::Echo
    }

    fn check(&self, ctx: &CheckCtx<'_>) -> Result<Option<String>> {
        let mut head = [0u8; 4];
        let read = std::fs::File::open(ctx.data)
            .and_then(|mut f| f.read(&mut head))
            .map_err(CommanderError::io("reading", ctx.data.to_path_buf()))?;
        Ok((&head[..read] != b"ECHO").then(|| {
            format!(
                "the commander's echo check refused {}: the body does not start with ECHO",
                ctx.version.url
            )
        }))
    }
}
