//! membrane-policy: pure policy decisions for Membrane.
//!
//! Built so far: SPIFFE identities ([`identity`]). JWT verification, compiled authorization
//! rules, rate-limit buckets and `explain` come with the policy issue. This crate stays free
//! of I/O, tokio and hyper, and depends on no other crate of this workspace.

pub mod authz;
pub mod identity;
pub mod jwt;
