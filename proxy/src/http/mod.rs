//! The HTTP pipeline: one request from its canonical form to its response. `service`
//! serves it (the phase order is in its doc), `decide` runs the phases up to the action,
//! `outbound` readies a forwarded request and its response, `rewrite` makes the targets
//! the gateway writes, `phases` holds the policy steps, `dry_run` runs them for
//! `membrane explain`.

pub mod body;
mod decide;
pub mod dry_run;
pub mod error;
pub mod headers;
mod outbound;
pub mod phases;
mod rewrite;
pub mod service;
mod upgrade;

pub use upgrade::UpgradeSlot;
