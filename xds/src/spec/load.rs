//! Reading a spec directory: every `*.yaml`/`*.yml` file, each holding one or more
//! documents separated by `---` lines. Every document is parsed even when an earlier one
//! failed, so one run reports every mistake.

use super::types::{Cell, Document, JwtProvider, Kind, Policy, RateLimit, Specs};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// One mistake, with where it is and, where it helps, what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    /// Dotted path of the field, e.g. `components[0].endpoints[1].visibility`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        f.write_str(": ")?;
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

pub const KINDS: &str = "Cell, Policy, JwtProvider, RateLimit";

/// Reads every spec file of `dir` (not recursing), in name order.
pub fn load_dir(dir: &Path) -> Result<Specs, Vec<SpecError>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| vec![whole(dir, format!("cannot read the directory: {e}"))])?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut specs = Specs::default();
    let mut errors = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => parse_file(&file, &text, &mut specs, &mut errors),
            Err(e) => errors.push(whole(&file, format!("cannot read the file: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}

fn whole(file: &Path, message: String) -> SpecError {
    SpecError {
        file: file.to_owned(),
        line: 0,
        column: 0,
        field: String::new(),
        message,
    }
}

/// Parses the documents of one file into `specs`, errors into `errors`.
pub fn parse_file(file: &Path, text: &str, specs: &mut Specs, errors: &mut Vec<SpecError>) {
    for (offset, doc) in split_documents(text) {
        if doc.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        }) {
            continue;
        }
        match parse_document(file, doc, offset) {
            Ok(kind) => specs.documents.push(Document {
                file: file.to_owned(),
                offset,
                kind,
            }),
            Err(e) => errors.push(e),
        }
    }
}

/// Splits on `---` lines; each part comes with the number of lines before it.
fn split_documents(text: &str) -> Vec<(u64, &str)> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0u64;
    let mut pos = 0usize;
    for (line_no, line) in (0u64..).zip(text.split_inclusive('\n')) {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t.starts_with("---#") {
            out.push((start_line, &text[start..pos]));
            start = pos + line.len();
            start_line = line_no + 1;
        }
        pos += line.len();
    }
    out.push((start_line, &text[start..]));
    out
}

#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    kind: Option<String>,
}

fn parse_document(file: &Path, doc: &str, offset: u64) -> Result<Kind, SpecError> {
    // The kind first (other fields ignored), then the document as that kind.
    let head: Head = deserialize(file, doc, offset)?;
    match head.kind.as_deref() {
        Some("Cell") => Ok(Kind::Cell(Box::new(deserialize::<Cell>(
            file, doc, offset,
        )?))),
        Some("Policy") => Ok(Kind::Policy(deserialize::<Policy>(file, doc, offset)?)),
        Some("JwtProvider") => Ok(Kind::JwtProvider(deserialize::<JwtProvider>(
            file, doc, offset,
        )?)),
        Some("RateLimit") => Ok(Kind::RateLimit(deserialize::<RateLimit>(
            file, doc, offset,
        )?)),
        Some(other) => Err(SpecError {
            file: file.to_owned(),
            line: offset + 1,
            column: 1,
            field: "kind".into(),
            message: format!("unknown kind `{other}`; valid kinds: {KINDS}"),
        }),
        None => Err(SpecError {
            file: file.to_owned(),
            line: offset + 1,
            column: 1,
            field: "kind".into(),
            message: format!("every document needs a `kind`: one of {KINDS}"),
        }),
    }
}

fn deserialize<T: for<'de> Deserialize<'de>>(
    file: &Path,
    doc: &str,
    offset: u64,
) -> Result<T, SpecError> {
    crate::yaml::from_str(doc).map_err(|e| SpecError {
        file: file.to_owned(),
        line: if e.line > 0 { e.line + offset } else { 0 },
        column: e.column,
        field: e.field,
        message: e.message,
    })
}
