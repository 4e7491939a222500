//! Which failed attempts are tried again, after how long, and how many a cluster may have
//! (its budget).

use super::UpstreamError;
use super::health::secs_at;
use crate::config::{RetryConfig, RetryKind, RetryOn};
use http::{HeaderMap, Method};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::time::Instant;

/// A cluster's retry policy, compiled.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub connect_failure: bool,
    pub reset: bool,
    pub per_try_timeout_retried: bool,
    /// Statuses retried, as a bit set over 500..=599 (anything else is never retried: a
    /// 4xx is the request's fault and will not change).
    statuses: u128,
    pub non_idempotent: bool,
    pub per_try_timeout: Option<Duration>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub body_limit: usize,
    pub budget_ratio: f64,
    pub budget_min_per_second: u32,
}

/// Why an attempt failed, as the policy reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    ConnectFailure,
    Reset,
    PerTryTimeout,
    Status(u16),
    /// Not the upstream's doing (the client's body failed, a breaker): never retried.
    Other,
}

impl AttemptFailure {
    pub fn of(e: &UpstreamError) -> Self {
        match e {
            UpstreamError::ConnectRefused { .. }
            | UpstreamError::ConnectTimeout { .. }
            | UpstreamError::Connect { .. }
            | UpstreamError::Tls { .. }
            | UpstreamError::Handshake { .. } => AttemptFailure::ConnectFailure,
            UpstreamError::Exchange { .. }
            | UpstreamError::Reset { .. }
            | UpstreamError::Protocol { .. } => AttemptFailure::Reset,
            UpstreamError::Timeout { .. } => AttemptFailure::PerTryTimeout,
            UpstreamError::NoEndpoint(_)
            | UpstreamError::Overflow { .. }
            | UpstreamError::Breaker { .. }
            | UpstreamError::RequestBody(_) => AttemptFailure::Other,
        }
    }

    /// Whether the upstream was reached and failed (what outlier detection counts).
    pub fn is_upstream_failure(self) -> bool {
        self != AttemptFailure::Other
    }
}

impl RetryPolicy {
    pub fn new(c: &RetryConfig) -> Self {
        let mut p = RetryPolicy {
            max_retries: c.max_retries,
            connect_failure: false,
            reset: false,
            per_try_timeout_retried: false,
            statuses: 0,
            non_idempotent: c.non_idempotent,
            per_try_timeout: c.per_try_timeout.map(|d| d.0),
            backoff_base: c.backoff_base.0,
            backoff_max: c.backoff_max.0,
            body_limit: c.body_limit,
            budget_ratio: c.budget.ratio,
            budget_min_per_second: c.budget.min_per_second,
        };
        for on in &c.retry_on {
            match *on {
                RetryOn::Kind(RetryKind::ConnectFailure) => p.connect_failure = true,
                RetryOn::Kind(RetryKind::Reset) => p.reset = true,
                RetryOn::Kind(RetryKind::PerTryTimeout) => p.per_try_timeout_retried = true,
                RetryOn::Status(s @ 500..=599) => p.statuses |= 1 << (s - 500),
                // The compiler refuses other statuses.
                RetryOn::Status(_) => {}
            }
        }
        p
    }

    /// The statuses retried, in order.
    pub fn statuses(&self) -> impl Iterator<Item = u16> + '_ {
        (500..=599).filter(|s| self.retries_status(*s))
    }

    pub fn retries_status(&self, status: u16) -> bool {
        (500..=599).contains(&status) && self.statuses & (1 << (status - 500)) != 0
    }

    /// Whether this failure may be tried again for a request of `method`. A connection
    /// that was never made carried nothing, so any method may go again; after a reset, a
    /// timeout or a status the upstream may have acted on it, so only idempotent methods
    /// (RFC 9110 §9.2.2) do unless `non_idempotent`.
    pub fn allows(&self, f: AttemptFailure, method: &Method) -> bool {
        let idempotent = self.non_idempotent || is_idempotent(method);
        match f {
            AttemptFailure::ConnectFailure => self.connect_failure,
            AttemptFailure::Reset => self.reset && idempotent,
            AttemptFailure::PerTryTimeout => self.per_try_timeout_retried && idempotent,
            AttemptFailure::Status(s) => self.retries_status(s) && idempotent,
            AttemptFailure::Other => false,
        }
    }

    /// The wait before retry `n` (1-based): full jitter over `base × 2^(n-1)`, at most `max`.
    pub fn backoff(&self, n: u32) -> Duration {
        let cap = self
            .backoff_base
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(20))
            .min(self.backoff_max);
        let ms = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(fastrand::u64(0..=ms))
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// How long a response's `Retry-After` asks to wait (RFC 9110 §10.2.3): seconds, or an
/// HTTP date (a date passed is no wait). A value that is neither is ignored.
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let text = h.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The number of ten one-second slots the budget counts over (linkerd's 10 s window).
const SLOTS: usize = 10;

/// A cluster's retry budget: retries allowed in a ten-second window are `ratio` of the
/// requests in it plus `min_per_second × 10`. Shared by all workers; each slot packs its
/// second (high 32 bits) and its count (low 32 bits) in one word, so a new second resets a
/// slot in one compare-and-swap.
#[derive(Debug, Default)]
pub struct RetryBudget {
    requests: [AtomicU64; SLOTS],
    retries: [AtomicU64; SLOTS],
}

impl RetryBudget {
    /// Counts a request (its first attempt), made at `at`.
    pub fn deposit(&self, at: Instant) {
        bump(&self.requests, second(at));
    }

    /// Takes one retry from the budget at `at`, or says there is none left.
    pub fn withdraw(&self, at: Instant, ratio: f64, min_per_second: u32) -> bool {
        let now = second(at);
        let requests = sum(&self.requests, now);
        let retries = sum(&self.retries, now);
        let allowed = (requests as f64 * ratio) as u64 + u64::from(min_per_second) * SLOTS as u64;
        if retries >= allowed {
            return false;
        }
        bump(&self.retries, now);
        true
    }
}

fn second(at: Instant) -> u32 {
    u32::try_from(secs_at(at)).unwrap_or(u32::MAX)
}

fn bump(slots: &[AtomicU64; SLOTS], now: u32) {
    let slot = &slots[now as usize % SLOTS];
    let mut cur = slot.load(Ordering::Relaxed);
    loop {
        let next = if (cur >> 32) as u32 == now {
            cur + 1
        } else {
            (u64::from(now) << 32) | 1
        };
        match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

/// The counts of the slots written in the last `SLOTS` seconds.
fn sum(slots: &[AtomicU64; SLOTS], now: u32) -> u64 {
    slots
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .filter(|v| now.wrapping_sub((v >> 32) as u32) < SLOTS as u32)
        .map(|v| v & 0xffff_ffff)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryBudgetConfig;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(&crate::config::RetryConfig {
            max_retries: 2,
            retry_on: vec![
                RetryOn::Kind(RetryKind::ConnectFailure),
                RetryOn::Kind(RetryKind::Reset),
                RetryOn::Status(503),
            ],
            non_idempotent: false,
            per_try_timeout: None,
            backoff_base: crate::config::Dur(Duration::from_millis(10)),
            backoff_max: crate::config::Dur(Duration::from_millis(40)),
            body_limit: 10,
            budget: RetryBudgetConfig::default(),
        })
    }

    #[test]
    fn idempotency_decides_all_but_connect_failures() {
        let p = policy();
        assert!(p.allows(AttemptFailure::ConnectFailure, &Method::POST));
        assert!(p.allows(AttemptFailure::Reset, &Method::GET));
        assert!(!p.allows(AttemptFailure::Reset, &Method::POST));
        assert!(p.allows(AttemptFailure::Status(503), &Method::PUT));
        assert!(!p.allows(AttemptFailure::Status(502), &Method::GET));
        assert!(!p.allows(AttemptFailure::Status(503), &Method::PATCH));
        assert!(!p.allows(AttemptFailure::PerTryTimeout, &Method::GET));
        assert!(!p.allows(AttemptFailure::Other, &Method::GET));
    }

    #[test]
    fn backoff_is_jittered_under_a_doubling_cap() {
        let p = policy();
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(10));
            assert!(p.backoff(2) <= Duration::from_millis(20));
            assert!(p.backoff(9) <= Duration::from_millis(40));
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(3)).collect();
        assert!(spread.len() > 10, "no jitter: {spread:?}");
    }

    #[test]
    fn the_budget_is_a_share_of_requests_plus_a_floor() {
        let b = RetryBudget::default();
        // The floor alone: 1 per second over ten seconds.
        let now = Instant::now();
        let floor = (0..100).filter(|_| b.withdraw(now, 0.2, 1)).count();
        assert_eq!(floor, 10);
        for _ in 0..100 {
            b.deposit(now);
        }
        // 20% of 100 requests on top of the floor already spent.
        let more = (0..100).filter(|_| b.withdraw(now, 0.2, 1)).count();
        assert_eq!(more, 20);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date passed");
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            http::header::RETRY_AFTER,
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
