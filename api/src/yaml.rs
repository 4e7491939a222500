//! YAML parsing with positions, shared by the proxy's bootstrap file and the cell specs:
//! serde_path_to_error tracks the field path, serde-saphyr the position.

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// A value with the position it had in its text, so that errors found after parsing (an
/// unknown reference, a bad regex) can still name line and column. Serializes as the bare
/// value.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Located<T>(pub Spanned<T>);

impl<T> Located<T> {
    /// A value made by a program, not read from a text: it has no position (line 0).
    pub fn unplaced(value: T) -> Self {
        Located(Spanned::new(
            value,
            serde_saphyr::Location::UNKNOWN,
            serde_saphyr::Location::UNKNOWN,
        ))
    }
    pub fn value(&self) -> &T {
        &self.0.value
    }
    pub fn line(&self) -> u64 {
        self.0.referenced.line()
    }
    pub fn column(&self) -> u64 {
        self.0.referenced.column()
    }
}

impl<T> From<T> for Located<T> {
    fn from(value: T) -> Self {
        Located::unplaced(value)
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.value.serialize(s)
    }
}

/// A parse failure: line and column in the parsed text (0 when unknown), the dotted field
/// path (`listeners[0].address`; empty at the top), and the message without a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: u64,
    pub column: u64,
    pub field: String,
    pub message: String,
}

pub fn from_str<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, YamlError> {
    let mut field = String::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            field = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let location = e.location();
        YamlError {
            line: location.map_or(0, |l| l.line()),
            column: location.map_or(0, |l| l.column()),
            field: clean_field(&field),
            message: strip_position(&e.without_snippet().to_string()),
        }
    })
}

/// The field path without the inner `value` of position-carrying wrappers.
fn clean_field(field: &str) -> String {
    if field == "." {
        return String::new();
    }
    let f = field.replace(".value.", ".").replace(".value[", "[");
    f.strip_suffix(".value").unwrap_or(&f).to_owned()
}

/// serde-saphyr's messages carry the position (`line N column M: ` in front, or `at line N,
/// column M` behind); the position is reported on its own, so both are cut.
fn strip_position(message: &str) -> String {
    let m = message.strip_prefix("error: ").unwrap_or(message);
    let m = match m
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((_, tail)) => tail,
        None => m,
    };
    let m = m.lines().next().unwrap_or(m);
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_owned(),
        None => m.to_owned(),
    }
}
