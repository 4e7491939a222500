use super::breaker::{BreakerCounts, Breakers};
use super::health::{ConsecutiveLimits, EndpointHealth};
use super::metrics::ClusterMetrics;
use super::retry::{RetryBudget, RetryPolicy};
use crate::config::{LbPolicy, UpstreamProtocol};
use membrane_telemetry::Attributes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// A cluster as the request path sees it: compiled once per config generation.
#[derive(Debug)]
pub struct Cluster {
    pub name: Arc<str>,
    pub endpoints: Box<[Endpoint]>,
    pub lb: LbPolicy,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub pool_idle_timeout: Duration,
    /// The most a response body may stay silent between two frames.
    pub body_idle_timeout: Duration,
    pub max_connections: usize,
    /// TLS origination; `None` for plain TCP.
    pub tls: Option<Arc<crate::tls::client::ClientTls>>,
    /// Identifies the TLS settings (names, trust, client certificate) in the pool key, so
    /// that connections made with one identity are never used for another.
    pub tls_fingerprint: u64,
    /// Survives reloads for a cluster of the same name, so that pooled connections and the
    /// connection count carry over to the new generation.
    pub shared: Arc<ClusterShared>,
    pub metrics: ClusterMetrics,
    /// Retries, outlier detection, circuit breakers: `None` when none is configured, and
    /// the request path is then the plain one.
    pub resilience: Option<Box<Resilience>>,
    /// Endpoints may be out of the rotation (health checks or outlier detection): picking
    /// skips them.
    pub filtered: bool,
    /// The active health check, for `explain` (its probers run on their own thread).
    pub health_check: Option<Arc<super::health_check::CheckSpec>>,
    /// Endpoints by nearness to this gateway (its zone, its region, the rest), as ranges
    /// of `endpoints` (sorted so); empty when the cluster or the gateway has no locality.
    pub tiers: Box<[std::ops::Range<usize>]>,
    /// The healthy share (percent) at which a tier takes all the traffic; below it, a
    /// tier takes `share / failover_percent` of it and the rest spills to the next.
    pub failover_percent: u32,
}

/// A cluster's resilience settings, compiled.
#[derive(Debug)]
pub struct Resilience {
    pub retry: Option<RetryPolicy>,
    pub outlier: Option<Outlier>,
    pub breakers: Breakers,
}

/// Passive outlier detection, compiled.
#[derive(Debug, Clone)]
pub struct Outlier {
    pub limits: ConsecutiveLimits,
    pub max_ejection: Duration,
    pub max_ejected_percent: u32,
    pub success_rate: Option<SuccessRate>,
}

/// The success-rate rule, compiled.
#[derive(Debug, Clone)]
pub struct SuccessRate {
    pub minimum_hosts: usize,
    pub request_volume: u32,
    pub stdev_factor: f64,
    pub interval_ms: u64,
}

#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Requests in flight to this endpoint, for least-request balancing.
    pub active: AtomicUsize,
    /// Shared with the generations before and after while they keep the endpoint.
    pub health: Arc<EndpointHealth>,
    /// A client span's attributes naming the cluster and this endpoint (`membrane.cluster`,
    /// `server.address`, `server.port`), encoded once.
    pub span_attributes: Attributes,
}

impl Endpoint {
    pub fn new(cluster: &str, addr: SocketAddr, health: Arc<EndpointHealth>) -> Self {
        Self {
            addr,
            active: AtomicUsize::new(0),
            health,
            span_attributes: Attributes::builder()
                .str("membrane.cluster", cluster)
                .str("server.address", &addr.ip().to_string())
                .int("server.port", i64::from(addr.port()))
                .build(),
        }
    }
}

/// Which connections are interchangeable: of one cluster (its reload-stable id), to one
/// endpoint, in one protocol, made with one TLS identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub cluster: u64,
    pub addr: SocketAddr,
    pub protocol: UpstreamProtocol,
    /// The cluster's TLS fingerprint (0 for plain TCP): connections made with one client
    /// identity or one set of server checks never serve another.
    pub tls: u64,
}

/// Counts an open upstream connection against its cluster's limit until dropped.
#[derive(Debug)]
pub struct OpenConnection {
    pub(super) shared: Arc<ClusterShared>,
    pub(super) gauge: prometheus_client::metrics::gauge::Gauge,
    /// The cluster's byte counters, which the connection's reads and writes add to.
    pub(super) bytes: crate::stream::ByteCounters,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

#[cfg(test)]
impl OpenConnection {
    /// An open-connection record for tests that build connections by hand.
    pub(crate) fn for_test() -> Self {
        OpenConnection {
            shared: ClusterShared::new(),
            gauge: Default::default(),
            bytes: Default::default(),
        }
    }
}

/// Per-cluster state that outlives a config generation.
#[derive(Debug)]
pub struct ClusterShared {
    /// Identifies the cluster in the per-worker connection pools.
    pub id: u64,
    pub open_connections: AtomicUsize,
    round_robin: AtomicUsize,
    pub breakers: BreakerCounts,
    pub budget: RetryBudget,
    /// When the success-rate rule's interval ends (`now_ms`; 0 before the first).
    pub rate_interval_end: AtomicU64,
}

impl ClusterShared {
    pub fn new() -> Arc<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            open_connections: AtomicUsize::new(0),
            round_robin: AtomicUsize::new(0),
            breakers: BreakerCounts::default(),
            budget: RetryBudget::default(),
            rate_interval_end: AtomicU64::new(0),
        })
    }
}

impl Cluster {
    /// Chooses an endpoint; `None` when the cluster has none.
    #[inline]
    pub fn pick(&self) -> Option<usize> {
        if self.filtered {
            return self.pick_available(0);
        }
        self.pick_any()
    }

    #[inline]
    fn pick_any(&self) -> Option<usize> {
        let n = self.endpoints.len();
        match n {
            0 => None,
            1 => Some(0),
            _ => Some(match self.lb {
                LbPolicy::RoundRobin => self.shared.round_robin.fetch_add(1, Ordering::Relaxed) % n,
                LbPolicy::LeastRequest => {
                    // Two distinct random choices; ties go to the first.
                    let a = fastrand::usize(..n);
                    let mut b = fastrand::usize(..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let load = |i: usize| self.endpoints[i].active.load(Ordering::Relaxed);
                    if load(b) < load(a) { b } else { a }
                }
            }),
        }
    }
}

impl Cluster {
    /// Chooses an endpoint that is in the rotation (not down by its health checks, not
    /// ejected) and not in `tried` (a bit per endpoint index below 64: a retry goes to
    /// another endpoint when there is one). When none is, every endpoint is a candidate
    /// again: a cluster with no healthy endpoint fails open (Envoy's panic mode), which a
    /// metric counts.
    pub fn pick_available(&self, tried: u64) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let usable =
            |i: usize| (i >= 64 || tried & (1 << i) == 0) && self.endpoints[i].health.available();
        if !self.tiers.is_empty() {
            if let Some(i) = self.pick_tiered(&usable) {
                return Some(i);
            }
            return self.pick_unusable();
        }
        let first = self.pick_any()?;
        if usable(first) {
            return Some(first);
        }
        // The balancer's choice is out: the next usable one after it.
        if let Some(i) = (1..n).map(|k| (first + k) % n).find(|&i| usable(i)) {
            return Some(i);
        }
        // Only tried endpoints are healthy: a healthy one again before a sick one.
        if let Some(i) = (0..n)
            .map(|k| (first + k) % n)
            .find(|&i| self.endpoints[i].health.available())
        {
            return Some(i);
        }
        self.metrics.panic.inc();
        Some(first)
    }

    /// The nearest tier with enough healthy endpoints, by Envoy's overprovisioning rule: a
    /// tier whose healthy share is at least `failover_percent` takes every request; one
    /// below takes `share / failover_percent` of them, and the rest go on to the next.
    /// When no tier is chosen that way, the nearest with a usable endpoint is.
    fn pick_tiered(&self, usable: &impl Fn(usize) -> bool) -> Option<usize> {
        let threshold = self.failover_percent.max(1) as usize;
        for r in self.tiers.iter() {
            let healthy = r
                .clone()
                .filter(|&i| self.endpoints[i].health.available())
                .count();
            let total = r.len();
            let takes = healthy * 100 >= threshold * total
                || (healthy > 0 && fastrand::usize(..threshold * total) < healthy * 100);
            if takes && let Some(i) = self.pick_in(r.clone(), usable) {
                return Some(i);
            }
        }
        self.tiers
            .iter()
            .find_map(|r| self.pick_in(r.clone(), usable))
    }

    /// A usable endpoint of `r`, round robin from a shared cursor.
    fn pick_in(&self, r: std::ops::Range<usize>, usable: &impl Fn(usize) -> bool) -> Option<usize> {
        let n = r.len();
        if n == 0 {
            return None;
        }
        let start = self.shared.round_robin.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|k| r.start + (start + k) % n)
            .find(|&i| usable(i))
    }

    /// No endpoint is both untried and in the rotation: a healthy tried one, else any
    /// (fail open, counted).
    fn pick_unusable(&self) -> Option<usize> {
        if let Some(r) = self.tiers.iter().find(|r| {
            let mut all = (*r).clone();
            all.any(|i| self.endpoints[i].health.available())
        }) {
            return self.pick_in(r.clone(), &|i| self.endpoints[i].health.available());
        }
        self.metrics.panic.inc();
        self.pick_any()
    }

    /// A circuit breaker's refusal, counted.
    pub fn overflow(&self, which: super::breaker::Limit, limit: usize) -> super::UpstreamError {
        self.metrics.overflowed(which.breaker());
        super::UpstreamError::Breaker {
            cluster: self.name.clone(),
            which: which.breaker(),
            limit,
        }
    }

    /// Endpoints in the rotation now.
    pub fn available_count(&self) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.health.available())
            .count()
    }
}

#[cfg(test)]
pub(crate) fn test_cluster(lb: LbPolicy, n: u16) -> Cluster {
    let m = crate::metrics::Metrics::new();
    Cluster {
        name: "c".into(),
        endpoints: (0..n)
            .map(|i| {
                Endpoint::new(
                    "c",
                    SocketAddr::from(([127, 0, 0, 1], 1000 + i)),
                    Arc::default(),
                )
            })
            .collect(),
        lb,
        protocol: UpstreamProtocol::Http1,
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        pool_idle_timeout: Duration::from_secs(1),
        body_idle_timeout: Duration::from_secs(1),
        max_connections: 10,
        tls: None,
        tls_fingerprint: 0,
        shared: ClusterShared::new(),
        metrics: m.cluster("c"),
        resilience: None,
        filtered: false,
        health_check: None,
        tiers: Box::default(),
        failover_percent: 70,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles_through_every_endpoint() {
        let c = test_cluster(LbPolicy::RoundRobin, 3);
        let picks: Vec<usize> = (0..6).map(|_| c.pick().unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(test_cluster(LbPolicy::RoundRobin, 0).pick(), None);
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let c = test_cluster(LbPolicy::LeastRequest, 2);
        c.endpoints[0].active.store(5, Ordering::Relaxed);
        for _ in 0..50 {
            assert_eq!(c.pick(), Some(1));
        }
        let c = test_cluster(LbPolicy::LeastRequest, 4);
        c.endpoints[2].active.store(100, Ordering::Relaxed);
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[c.pick().unwrap()] += 1;
        }
        // Endpoint 2 loses every comparison, so it is only picked never.
        assert_eq!(seen[2], 0, "{seen:?}");
        assert!(
            seen.iter().enumerate().all(|(i, &s)| i == 2 || s > 50),
            "{seen:?}"
        );
    }

    #[test]
    fn a_tier_below_its_healthy_share_spills_the_rest_to_the_next() {
        let mut c = test_cluster(LbPolicy::RoundRobin, 4);
        c.tiers = vec![0..3, 3..4].into();
        c.filtered = true;
        let count = |c: &Cluster| {
            let mut remote = 0;
            for _ in 0..3000 {
                if c.pick().unwrap() == 3 {
                    remote += 1;
                }
            }
            remote
        };
        assert_eq!(count(&c), 0, "all healthy: all local");
        // Two of three: 66.7% < 70%, so the local tier takes 66.7/70 = 95%.
        c.endpoints[0]
            .health
            .eject(Duration::from_secs(60), Duration::from_secs(60));
        let remote = count(&c);
        assert!((40..=350).contains(&remote), "{remote} of 3000 went remote");
        // One of three: 33% / 70% = 48% local.
        c.endpoints[1]
            .health
            .eject(Duration::from_secs(60), Duration::from_secs(60));
        let remote = count(&c);
        assert!(
            (1300..=1800).contains(&remote),
            "{remote} of 3000 went remote"
        );
        // The local endpoints are never picked while out.
        for _ in 0..100 {
            let i = c.pick().unwrap();
            assert!(i == 2 || i == 3, "{i}");
        }
    }
}
