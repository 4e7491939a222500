//! membrane-policy: pure policy decisions for Membrane.
//!
//! - [`identity`]: SPIFFE IDs and what a TLS peer proved.
//! - [`jwt`]: JWK sets, JWS verification with RFC 8725's refusals, claims, a token cache.
//! - [`authz`]: allow/deny rules compiled into an index; decisions name their rule.
//! - [`ratelimit`]: token buckets in a bounded table.
//!
//! This crate stays free of I/O, tokio and hyper, and depends on no other crate of this
//! workspace: keys arrive as text, time as a number.

pub mod authz;
pub mod identity;
pub mod jwt;
pub mod ratelimit;
