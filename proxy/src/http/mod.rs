//! The HTTP pipeline: one request from routing to response.

pub mod body;
pub mod error;
pub mod headers;
pub mod phases;
pub mod service;
mod upgrade;

pub use upgrade::UpgradeSlot;
