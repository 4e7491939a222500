//! Reading a spec directory: every `*.yaml`/`*.yml` file, each holding one or more
//! documents separated by `---` lines. Every document is parsed even when an earlier one
//! failed, and a document goes on being read past its first mistake (`deserialize_all`),
//! so one run reports every mistake. A file with no document at all is a mistake too.

use super::types::{Cell, Document, JwtProvider, Kind, Overlay, Policy, RateLimit, Specs};
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

pub const KINDS: &str = "Cell, Policy, JwtProvider, RateLimit, Overlay";

/// Reads every spec file of `dir` (not recursing), in name order.
pub fn load_dir(dir: &Path) -> Result<Specs, Vec<SpecError>> {
    let mut specs = Specs::default();
    let mut errors = Vec::new();
    for (file, text) in read_dir(dir)? {
        parse_file(&file, &text, &mut specs, &mut errors);
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}

/// The spec files of `dir` (`*.yaml`, `*.yml`; not recursing), in name order.
pub fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, Vec<SpecError>> {
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
    Ok(files)
}

/// Reads one spec file.
pub fn read_file(file: &Path) -> Result<String, SpecError> {
    std::fs::read_to_string(file).map_err(|e| whole(file, format!("cannot read the file: {e}")))
}

/// The text of every spec file of `dir` (`*.yaml`, `*.yml`; not recursing), in name order.
pub fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, Vec<SpecError>> {
    let files = list_dir(dir)?;
    let mut texts = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for file in files {
        match read_file(&file) {
            Ok(text) => texts.push((file, text)),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(texts)
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
    let mut documents = 0;
    for (offset, doc) in split_documents(text) {
        if is_blank(doc) {
            continue;
        }
        documents += 1;
        match parse_document(file, doc, offset) {
            Ok(kind) => specs.documents.push(std::sync::Arc::new(Document {
                file: file.to_owned(),
                offset,
                kind,
                digest: digest(doc),
            })),
            Err(e) => errors.extend(e),
        }
    }
    if documents == 0 {
        // An empty file is most likely one written half-way, or by mistake: saying nothing
        // would let a spec that was meant to be there go missing in silence.
        errors.push(whole(
            file,
            format!("the file holds no document; give it one of kind {KINDS}, or remove it"),
        ));
    }
}

/// The documents of one text with the text of each, in order: what the control API reads
/// to address documents by kind and name. Parse errors name `file`.
pub fn documents_of(file: &Path, text: &str) -> Result<Vec<(Kind, String)>, Vec<SpecError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (offset, doc) in split_documents(text) {
        if is_blank(doc) {
            continue;
        }
        match parse_document(file, doc, offset) {
            Ok(kind) => out.push((kind, doc.to_owned())),
            Err(e) => errors.extend(e),
        }
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(whole(
            file,
            format!("holds no document; give it one of kind {KINDS}"),
        ));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A document text's hash: what tells the compiler's cache that a document changed. The
/// first 128 bits of its SHA-256, so that no text written to collide with another
/// document's (an operator's, through the API) can leave a gateway's resources stale.
pub fn digest(text: &str) -> u128 {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&d.as_ref()[..16]);
    u128::from_be_bytes(first)
}

/// Only blank and comment lines.
fn is_blank(doc: &str) -> bool {
    doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
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

fn parse_document(file: &Path, doc: &str, offset: u64) -> Result<Kind, Vec<SpecError>> {
    // The kind first (other fields ignored), then the document as that kind.
    let head: Head = deserialize(file, doc, offset).map_err(|e| vec![e])?;
    match head.kind.as_deref() {
        Some("Cell") => Ok(Kind::Cell(Box::new(deserialize_all::<Cell>(
            file, doc, offset,
        )?))),
        Some("Policy") => Ok(Kind::Policy(deserialize_all::<Policy>(file, doc, offset)?)),
        Some("JwtProvider") => Ok(Kind::JwtProvider(deserialize_all::<JwtProvider>(
            file, doc, offset,
        )?)),
        Some("RateLimit") => Ok(Kind::RateLimit(deserialize_all::<RateLimit>(
            file, doc, offset,
        )?)),
        Some("Overlay") => Ok(Kind::Overlay(Box::new(deserialize_all::<Overlay>(
            file, doc, offset,
        )?))),
        Some(other) => Err(vec![SpecError {
            file: file.to_owned(),
            line: offset + 1,
            column: 1,
            field: "kind".into(),
            message: format!("unknown kind `{other}`; valid kinds: {KINDS}"),
        }]),
        None => Err(vec![SpecError {
            file: file.to_owned(),
            line: offset + 1,
            column: 1,
            field: "kind".into(),
            message: format!("every document needs a `kind`: one of {KINDS}"),
        }]),
    }
}

/// Most mistakes reported for one document.
const MAX_ERRORS: usize = 20;

/// Deserializes a document and, past a mistake, goes on reading it: the entry the mistake is
/// in is blanked out (its lines, so that later positions stay true) and the document is read
/// again, until it reads or nothing more can be learnt. serde stops at the first error;
/// without this, a document with three mistakes took three rounds of `membrane check` to
/// fix. A field that is missing because this blanked it is not reported (it was reported
/// as the mistake it had).
fn deserialize_all<T: for<'de> Deserialize<'de>>(
    file: &Path,
    doc: &str,
    offset: u64,
) -> Result<T, Vec<SpecError>> {
    let mut text = doc.to_owned();
    let mut errors: Vec<SpecError> = Vec::new();
    let mut blanked: Vec<String> = Vec::new();
    while errors.len() < MAX_ERRORS {
        let e = match deserialize::<T>(file, &text, offset) {
            Ok(v) if errors.is_empty() => return Ok(v),
            Ok(_) => break,
            Err(e) => e,
        };
        let missing = e.message.strip_prefix("missing field `").map(|rest| {
            let name = rest.split('`').next().unwrap_or("");
            // Blanked because of its own mistake: reported already as that.
            blanked
                .iter()
                .any(|b| b.starts_with(e.field.as_str()) && last_name(b) == name)
        });
        let repeated = errors
            .iter()
            .any(|p| p.line == e.line && p.message == e.message);
        if missing == Some(true) || repeated {
            break;
        }
        if missing == Some(false) {
            // A field really missing: reported; the mapping it is missing from cannot be
            // blanked without hiding (or inventing) what is around it, so reading stops.
            errors.push(e);
            break;
        }
        let line = e.line.saturating_sub(offset) as usize;
        let field = e.field.clone();
        errors.push(e);
        if line == 0 || !blank_entry(&mut text, line) {
            break;
        }
        blanked.push(field);
    }
    Err(errors)
}

/// The last field name of a path: `a.b[0].c[1]` → `c`.
fn last_name(path: &str) -> &str {
    let mut p = path;
    while let Some(stripped) = p.strip_suffix(']') {
        p = stripped.rsplit_once('[').map_or("", |(head, _)| head);
    }
    p.rsplit('.').next().unwrap_or(p)
}

/// Blanks the mapping entry that starts on `line` (1-based) of `text`, with the lines nested
/// under it; a list item's dash stays, so the list keeps its shape. False when there is no
/// such line.
fn blank_entry(text: &mut String, line: usize) -> bool {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let Some(first) = lines.get(line - 1).cloned() else {
        return false;
    };
    let indent = first.len() - first.trim_start().len();
    let after_dash = first.trim_start().strip_prefix("- ");
    // Where the entry's key starts: its nested lines are indented deeper than that.
    let key_col = match after_dash {
        Some(rest) => indent + 2 + (rest.len() - rest.trim_start().len()),
        None => indent,
    };
    lines[line - 1] = match after_dash {
        Some(_) => format!("{}-", " ".repeat(indent)),
        None => String::new(),
    };
    for l in lines.iter_mut().skip(line) {
        if l.trim().is_empty() {
            continue;
        }
        if l.len() - l.trim_start().len() > key_col {
            l.clear();
        } else {
            break;
        }
    }
    *text = lines.join("\n");
    true
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
