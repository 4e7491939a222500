//! The proxy as an xDS client: the delta ADS session (`client`), the conversion of
//! Membrane's resources into the typed bootstrap (`convert`), applying them as one
//! generation (`apply`), the resources held (`held`) and the state directory (`state_dir`).

mod apply;
pub mod client;
pub mod convert;
mod held;
mod state_dir;

pub use client::{XdsOptions, start};
