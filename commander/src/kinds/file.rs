//! The `file` kind: one file over HTTP(S). Every default of
//! [`super::KindSpec`] is this kind's behaviour; it adds the HTML sniff.

use ark_core::Kind;

use super::{CheckCtx, KindSpec};
use crate::Result;

#[derive(Debug)]
pub struct File;

impl KindSpec for File {
    fn kind(&self) -> Kind {
        Kind::File
    }

    fn check(&self, ctx: &CheckCtx<'_>) -> Result<Option<String>> {
        super::html_instead_of_file(ctx.version, ctx.data)
    }
}
