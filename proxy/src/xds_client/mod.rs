//! The proxy as an xDS client: the delta ADS session (`client`) and the conversion of
//! Membrane's resources into a bootstrap document (`convert`).

pub mod client;
pub mod convert;

pub use client::{XdsOptions, start};
