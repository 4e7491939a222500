//! membrane-proxy: Membrane's data plane.
//!
//! A request goes through a fixed order of phases (see `ARCHITECTURE.md`): accept, HTTP
//! (hyper), one load of the config snapshot, route, upstream (load balancer, pool), forward,
//! response, metrics.

pub mod access_log;
pub mod config;
pub mod downstream;
pub mod enforce;
pub mod explain;
pub mod http;
pub mod metrics;
pub mod normalize;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;
pub mod xds_client;

pub use server::{ProxyHandle, StartError, StartOptions, start};

#[cfg(feature = "test-util")]
pub mod testing;
