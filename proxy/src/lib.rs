//! membrane-proxy: Membrane's data plane.
//!
//! A request goes through a fixed order of phases (see `ARCHITECTURE.md`): accept, HTTP
//! (hyper), one load of the config snapshot, route, upstream (load balancer, pool), forward,
//! response, metrics.

pub mod access_log;
pub mod body;
pub mod compiler;
pub mod config;
pub mod context;
pub mod deadline;
pub mod downstream;
pub mod enforce;
pub mod explain;
pub mod h1;
pub mod histogram;
pub mod http;
pub mod metrics;
pub mod normalize;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod stream;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod xds_client;

pub use server::{ProxyHandle, StartError, StartOptions, start};

#[cfg(feature = "test-util")]
pub mod testing;
