//! membrane-policy: pure policy decisions for Membrane (SPIFFE identity, JWT verification,
//! compiled authorization rules, rate-limit buckets, `explain`).
//!
//! Nothing is built here yet: the policy issue fills this crate. It must stay free of I/O,
//! tokio and hyper, and depend on no other crate of this workspace.
