//! Compiling a route's rate limit. Buckets are carried over from the previous generation
//! while the limit is unchanged, so a reload does not reset every client's budget.

use super::Compiler;
use crate::config::{ConfigError, RateLimitConfig};
use crate::enforce::ratelimit::RouteRateLimit;
use crate::snapshot::{KeptBuckets, RateLimitState};
use membrane_policy::ratelimit::{Buckets, Limit};
use std::sync::Arc;

impl Compiler<'_> {
    pub(super) fn route_rate_limit(
        &self,
        at: &str,
        listener: &Arc<str>,
        route: &Arc<str>,
        r: &RateLimitConfig,
        state: &mut RateLimitState,
    ) -> Result<Arc<RouteRateLimit>, ConfigError> {
        let requests = *r.requests.value();
        let period = r.per.0.as_secs();
        if requests == 0 || period == 0 || period > u64::from(u32::MAX) {
            return Err(self.err(
                &r.requests,
                at.to_owned(),
                "needs at least 1 request per at least 1s".into(),
            ));
        }
        let limit = Limit {
            requests,
            period_secs: period as u32,
            burst: r.burst.unwrap_or(requests).max(1),
        };
        let key = (listener.clone(), route.clone());
        let buckets = self
            .prev
            .and_then(|p| p.rate_limits.get(&key))
            .filter(|kept| kept.limit == limit)
            .map(|kept| kept.buckets.clone())
            .unwrap_or_else(|| Arc::new(Buckets::new(limit, r.max_keys.max(1))));
        state.insert(
            key,
            KeptBuckets {
                limit,
                buckets: buckets.clone(),
            },
        );
        let (allowed, limited) = self.metrics.rate_limit(listener, route);
        Ok(Arc::new(RouteRateLimit {
            buckets,
            key: r.key.clone(),
            epoch: *EPOCH,
            allowed,
            limited,
        }))
    }
}

/// One clock origin for every bucket of the process, so carried-over buckets stay valid.
static EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);
