//! A route's rate limit: the buckets (kept across reloads while the limit is unchanged) and
//! how a request's key is chosen.

use crate::config::RateKeyConfig;
use membrane_policy::ratelimit::{Buckets, Verdict};
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Instant;

pub struct RouteRateLimit {
    pub buckets: Arc<Buckets>,
    pub key: RateKeyConfig,
    /// The clock the buckets count from.
    pub epoch: Instant,
    pub allowed: Counter,
    pub limited: Counter,
}

impl RouteRateLimit {
    pub fn check(&self, key: &str) -> Verdict {
        let now = self.epoch.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        let v = self.buckets.check(key, now);
        if v.allowed {
            self.allowed.inc();
        } else {
            self.limited.inc();
        }
        v
    }
}
