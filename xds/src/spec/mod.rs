//! The user-facing cell model: YAML documents in a directory, each with a `kind`.
//!
//! - `Cell`: one project in one environment of one organization, its gateway's listeners
//!   (north: public ingress, west: ingress from other cells, east: egress to other cells,
//!   south: egress to third parties) and its components' endpoints with their visibility.
//! - `Policy`: authorization rules for one listener of one cell.
//! - `JwtProvider`: an issuer whose tokens public endpoints require.
//! - `RateLimit`: a token bucket on one endpoint.
//!
//! `load` reads and parses (errors carry file, line, column and field), `check` validates
//! across documents, `check_files` the files they name. [`validate`] runs all three, as
//! both `membrane check` and the control server do. Nothing here talks to the network.

pub mod check;
mod files;
pub mod load;
mod types;

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
    let mut errors = check(&specs);
    errors.extend(check_files(&specs, dir));
    if errors.is_empty() && specs.cells().next().is_none() {
        errors.push(SpecError {
            file: dir.to_owned(),
            line: 0,
            column: 0,
            field: String::new(),
            message: "the directory holds no Cell document: a control server would serve nothing"
                .into(),
        });
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}
