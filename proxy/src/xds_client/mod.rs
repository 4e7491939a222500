//! The proxy as an xDS client: the delta ADS session (`client`), the conversion of
//! Membrane's resources into the typed bootstrap (`convert`), applying them as one
//! generation (`apply`), the resources held (`held`) and the state directory (`state_dir`);
//! the control channel (`channel`: TLS or an explicit plaintext) and the gateway's issued
//! identity (`identity`: join token, renewal).

mod apply;
pub mod channel;
pub mod client;
pub mod convert;
mod held;
pub mod identity;
mod state_dir;

pub use client::{XdsOptions, start};
