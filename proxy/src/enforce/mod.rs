//! Applying membrane-policy's decisions on the request path: JWT authentication (`authn`),
//! authorization (`authz`) and rate limits (`ratelimit`), in that order, after routing.

pub mod authn;
pub mod authz;
pub mod jwks;
pub mod metrics;
pub mod ratelimit;

/// Seconds since the Unix epoch, for token times.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
