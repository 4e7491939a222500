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
//! across documents. Nothing here talks to the network.

pub mod check;
pub mod load;
mod types;

pub use check::check;
pub use load::{SpecError, load_dir};
pub use types::*;
