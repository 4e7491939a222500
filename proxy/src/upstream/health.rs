//! What is known of one endpoint's health, shared by every worker and kept across config
//! generations while the cluster keeps the endpoint: the active checks' verdict, and the
//! passive outlier detector's counters and ejection.
//!
//! An ejection ends by itself: an ejected endpoint is skipped until its time is up, and the
//! first pick after that returns it (no timer runs for it). Only ejected endpoints cost a
//! clock read at pick time.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Milliseconds on the process's monotonic clock (ejection times are kept as these).
pub fn now_ms() -> u64 {
    u64::try_from(since_epoch(Instant::now()).as_millis()).unwrap_or(u64::MAX)
}

/// `at` in whole seconds on the clock of `now_ms` (for a caller that has read the time;
/// no 128-bit division on the way).
pub fn secs_at(at: Instant) -> u64 {
    since_epoch(at).as_secs()
}

fn since_epoch(at: Instant) -> Duration {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    at.saturating_duration_since(epoch)
}

#[derive(Debug, Default)]
pub struct EndpointHealth {
    /// The active checks found it down (stays `false` without checks).
    checked_down: AtomicBool,
    ejected: AtomicBool,
    /// When the current ejection ends (`now_ms`).
    ejected_until: AtomicU64,
    /// Ejections since the endpoint last stayed healthy for a base ejection time; the next
    /// one lasts this many times the base plus one.
    ejections: AtomicU32,
    /// When the last ejection ended (`now_ms`), for forgetting `ejections`.
    returned_at: AtomicU64,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Attempts and successes in the success-rate rule's current interval (counted only
    /// when a cluster has the rule).
    rate_total: AtomicU32,
    rate_ok: AtomicU32,
    /// Which prober owns the endpoint's active checks: a prober whose number is no longer
    /// this one's stops (the check's settings changed, or the cluster went away).
    pub(super) prober: AtomicU64,
}

/// One attempt's result, as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// A response below 500.
    Success,
    /// 500, 501, 505 and above: the upstream's own failure.
    ServerError,
    /// 502, 503, 504, or no response at all (connect failure, reset, timeout).
    GatewayError { status: bool },
}

impl AttemptResult {
    pub fn of_status(status: u16) -> Self {
        match status {
            502..=504 => AttemptResult::GatewayError { status: true },
            500..=599 => AttemptResult::ServerError,
            _ => AttemptResult::Success,
        }
    }
}

impl EndpointHealth {
    /// Counts an attempt for the success-rate rule.
    pub fn count_rate(&self, success: bool) {
        self.rate_total.fetch_add(1, Ordering::Relaxed);
        if success {
            self.rate_ok.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The interval's (successes, attempts), and a new interval begun.
    pub fn take_rate(&self) -> (u32, u32) {
        let total = self.rate_total.swap(0, Ordering::Relaxed);
        let ok = self.rate_ok.swap(0, Ordering::Relaxed);
        (ok.min(total), total)
    }

    /// Whether requests may go to the endpoint now.
    #[inline]
    pub fn available(&self) -> bool {
        if self.checked_down.load(Ordering::Relaxed) {
            return false;
        }
        !self.ejected.load(Ordering::Relaxed) || self.end_ejection_if_due()
    }

    pub fn is_checked_down(&self) -> bool {
        self.checked_down.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
            && now_ms() < self.ejected_until.load(Ordering::Relaxed)
    }

    pub(super) fn set_checked_down(&self, down: bool) -> bool {
        self.checked_down.swap(down, Ordering::Relaxed) != down
    }

    #[cold]
    fn end_ejection_if_due(&self) -> bool {
        let now = now_ms();
        if now < self.ejected_until.load(Ordering::Relaxed) {
            return false;
        }
        if self.ejected.swap(false, Ordering::Relaxed) {
            self.returned_at.store(now, Ordering::Relaxed);
        }
        true
    }

    /// Counts one attempt's result. Returns the counter that reached its threshold, if one
    /// did: the caller decides whether the cluster may lose the endpoint.
    #[inline]
    pub fn record(&self, r: AttemptResult, limits: &ConsecutiveLimits) -> bool {
        match r {
            AttemptResult::Success => {
                // Loads first: a healthy endpoint's counters are zero, and a store to a
                // line every worker reads would bounce it between cores.
                if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                    self.consecutive_5xx.store(0, Ordering::Relaxed);
                }
                if self.consecutive_gateway.load(Ordering::Relaxed) != 0 {
                    self.consecutive_gateway.store(0, Ordering::Relaxed);
                }
                if self.ejections.load(Ordering::Relaxed) != 0 {
                    self.forget_ejections(limits.base_ejection);
                }
                false
            }
            AttemptResult::ServerError => {
                self.consecutive_gateway.store(0, Ordering::Relaxed);
                reached(&self.consecutive_5xx, limits.consecutive_5xx)
            }
            AttemptResult::GatewayError { status } => {
                let gw = reached(&self.consecutive_gateway, limits.consecutive_gateway);
                // A 502-504 is a 5xx too; a failure without a response is not.
                let fxx = status && reached(&self.consecutive_5xx, limits.consecutive_5xx);
                gw || fxx
            }
        }
    }

    #[cold]
    fn forget_ejections(&self, base: Duration) {
        let returned = self.returned_at.load(Ordering::Relaxed);
        let base = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
        if !self.ejected.load(Ordering::Relaxed) && now_ms().saturating_sub(returned) >= base {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Takes the endpoint out for `base × (ejections so far + 1)`, at most `max`. Returns
    /// false when it is out already.
    pub fn eject(&self, base: Duration, max: Duration) -> bool {
        if self.ejected.swap(true, Ordering::Relaxed) {
            return false;
        }
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let time = base.saturating_mul(n).min(max);
        let until = now_ms().saturating_add(u64::try_from(time.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until.store(until, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        true
    }
}

/// Thresholds of the consecutive-failure rules (0: the rule is off).
#[derive(Debug, Clone)]
pub struct ConsecutiveLimits {
    pub consecutive_5xx: u32,
    pub consecutive_gateway: u32,
    pub base_ejection: Duration,
}

fn reached(counter: &AtomicU32, limit: u32) -> bool {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    limit != 0 && n >= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConsecutiveLimits {
        ConsecutiveLimits {
            consecutive_5xx: 3,
            consecutive_gateway: 2,
            base_ejection: Duration::from_millis(50),
        }
    }

    #[test]
    fn counters_reach_their_limits_and_a_success_resets_them() {
        let h = EndpointHealth::default();
        let l = limits();
        assert!(!h.record(AttemptResult::ServerError, &l));
        assert!(!h.record(AttemptResult::ServerError, &l));
        h.record(AttemptResult::Success, &l);
        assert!(!h.record(AttemptResult::ServerError, &l));
        assert!(!h.record(AttemptResult::ServerError, &l));
        assert!(h.record(AttemptResult::ServerError, &l));
        let g = EndpointHealth::default();
        assert!(!g.record(AttemptResult::GatewayError { status: false }, &l));
        assert!(g.record(AttemptResult::GatewayError { status: false }, &l));
    }

    #[test]
    fn an_ejection_ends_by_itself_and_grows_each_time() {
        let h = EndpointHealth::default();
        let base = Duration::from_millis(30);
        assert!(h.available());
        assert!(h.eject(base, Duration::from_secs(1)));
        assert!(!h.eject(base, Duration::from_secs(1)), "ejected twice");
        assert!(!h.available());
        let first = h.ejected_until.load(Ordering::Relaxed);
        while !h.available() {
            std::thread::yield_now();
        }
        assert!(now_ms() >= first);
        let at = now_ms();
        assert!(h.eject(base, Duration::from_secs(1)));
        let second = h.ejected_until.load(Ordering::Relaxed);
        assert!(
            second >= at + 60,
            "the second ejection lasts twice the base"
        );
        h.set_checked_down(true);
        assert!(!h.available());
    }
}
