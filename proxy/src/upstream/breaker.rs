//! Circuit breakers: limits on what a cluster holds at once, counted across all workers and
//! across config generations (the counts live in `ClusterShared`). A request past a limit is
//! refused at once (503 `upstream_overflow`), never queued.

use super::metrics::Breaker;
use crate::config::CircuitBreakerConfig;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A cluster's limits (`usize::MAX`: none).
#[derive(Debug, Clone)]
pub struct Breakers {
    pub max_requests: usize,
    pub max_pending: usize,
    pub max_retries: usize,
}

impl Breakers {
    pub fn new(c: Option<&CircuitBreakerConfig>) -> Self {
        let c = c.cloned().unwrap_or_default();
        Self {
            max_requests: c.max_requests.unwrap_or(usize::MAX),
            max_pending: c.max_pending.unwrap_or(usize::MAX),
            max_retries: c.max_retries.unwrap_or(usize::MAX),
        }
    }
}

/// What a cluster holds now.
#[derive(Debug, Default)]
pub struct BreakerCounts {
    requests: AtomicUsize,
    pending: AtomicUsize,
    retries: AtomicUsize,
}

/// The limits counted here (open connections are counted by the connections themselves,
/// `OpenConnection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Requests,
    Pending,
    Retries,
}

impl Limit {
    pub fn breaker(self) -> Breaker {
        match self {
            Limit::Requests => Breaker::Requests,
            Limit::Pending => Breaker::Pending,
            Limit::Retries => Breaker::Retries,
        }
    }
}

impl BreakerCounts {
    fn counter(&self, which: Limit) -> &AtomicUsize {
        match which {
            Limit::Requests => &self.requests,
            Limit::Pending => &self.pending,
            Limit::Retries => &self.retries,
        }
    }

    /// How many the cluster holds of `which`.
    pub fn held(&self, which: Limit) -> usize {
        self.counter(which).load(Ordering::Relaxed)
    }
}

/// One unit held against a limit until dropped. It borrows the cluster's counter: every
/// holder lives inside one request's sending, which holds the cluster (no reference count
/// to take and give back per request).
#[derive(Debug)]
pub struct Held<'a> {
    counter: &'a AtomicUsize,
}

impl<'a> Held<'a> {
    /// Takes one of `which` when fewer than `limit` are held; `None` past the limit. An
    /// unlimited breaker still counts (so `/config` and a limit set later see the truth).
    pub fn take(shared: &'a super::ClusterShared, which: Limit, limit: usize) -> Option<Self> {
        let c = shared.breakers.counter(which);
        if c.fetch_add(1, Ordering::Relaxed) >= limit {
            c.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Held { counter: c })
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}
