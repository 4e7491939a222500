//! Gathering validation errors, each at the position of the value it is about.

use super::load::SpecError;
use super::types::{Located, Src};

#[derive(Default)]
pub(super) struct Errors(pub(super) Vec<SpecError>);

impl Errors {
    pub(super) fn at<T>(&mut self, src: Src<'_>, loc: &Located<T>, field: String, message: String) {
        self.0.push(SpecError {
            file: src.file.clone(),
            line: loc.line() + src.offset,
            column: loc.column(),
            field,
            message,
        });
    }
}
