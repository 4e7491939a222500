//! The user-facing cell model: YAML documents in a directory, each with a `kind`.
//!
//! - `Cell`: one project in one environment of one organization, its gateway's listeners
//!   (north: public ingress, west: ingress from other cells, east: egress to other cells,
//!   south: egress to third parties) and its components' endpoints with their visibility.
//! - `Policy`: authorization rules for one listener of one cell.
//! - `JwtProvider`: an issuer whose tokens public endpoints require.
//! - `RateLimit`: a token bucket on one endpoint.
//! - `Overlay`: what changes when a cell is promoted into an environment.
//!
//! `load` reads and parses (errors carry file, line, column and field), `check` validates
//! across documents, `check_files` the files they name. [`validate`] runs all three, as
//! both `membrane check` and the control server do. Nothing here talks to the network.

mod cache;
pub mod check;
mod errors;
mod files;
pub mod load;
mod names;
mod types;

pub use cache::ParseCache;
pub use check::check;
pub use files::check_files;
pub use load::{SpecError, load_dir};
pub use types::*;

/// Every mistake found in a spec directory, one per line.
#[derive(Debug)]
pub struct SpecErrors(pub Vec<SpecError>);

impl std::fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Everything `membrane check` and the control server check, in one place so that the two
/// can never disagree: parse, cross-document rules, named files, and at least one cell.
pub fn validate(dir: &std::path::Path) -> Result<Specs, Vec<SpecError>> {
    let specs = load_dir(dir)?;
    finish(specs, dir, dir)
}

/// The same for documents held elsewhere (a spec store): `(name, text)` pairs, the name
/// standing for the file in errors. Files the specs name are read from `files`.
pub fn validate_documents(
    docs: &[(String, String)],
    files: &std::path::Path,
    origin: &std::path::Path,
) -> Result<Specs, Vec<SpecError>> {
    let mut specs = Specs::default();
    let mut errors = Vec::new();
    for (name, text) in docs {
        load::parse_file(std::path::Path::new(name), text, &mut specs, &mut errors);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    finish(specs, files, origin)
}

/// The checks across documents and of the files they name; `origin` is what an empty
/// set of specs is reported against.
fn finish(
    specs: Specs,
    files: &std::path::Path,
    origin: &std::path::Path,
) -> Result<Specs, Vec<SpecError>> {
    let mut errors = check(&specs);
    errors.extend(check_files(&specs, files));
    if errors.is_empty() && specs.cells().next().is_none() {
        errors.push(SpecError {
            file: origin.to_owned(),
            line: 0,
            column: 0,
            field: String::new(),
            message: "holds no Cell document: a control server would serve nothing".into(),
        });
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}
