//! Upstream metrics, registered by this subsystem, by cluster: failed connection attempts by
//! reason, open connections, retries and their budget, circuit-breaker overflows, ejections,
//! health checks, fail-open picks, the bytes read and written, and each attempt's time.

use crate::histogram::LatencyHistogram;
use crate::stream::ByteCounters;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// Why a connection attempt failed.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ConnectFailure {
    Refused,
    Timeout,
    Other,
    /// The TCP connection opened but the TLS handshake failed.
    Tls,
}

impl ConnectFailure {
    pub const ALL: [ConnectFailure; 4] = [
        ConnectFailure::Refused,
        ConnectFailure::Timeout,
        ConnectFailure::Other,
        ConnectFailure::Tls,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Other => "other",
            ConnectFailure::Tls => "tls",
        }
    }
}
crate::label_value!(ConnectFailure);

/// Which circuit breaker refused a request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Breaker {
    Connections,
    Requests,
    Pending,
    Retries,
}

impl Breaker {
    pub const ALL: [Breaker; 4] = [
        Breaker::Connections,
        Breaker::Requests,
        Breaker::Pending,
        Breaker::Retries,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Breaker::Connections => "connections",
            Breaker::Requests => "requests",
            Breaker::Pending => "pending",
            Breaker::Retries => "retries",
        }
    }
}
crate::label_value!(Breaker);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    cluster: String,
    breaker: Breaker,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    cluster: String,
    reason: ConnectFailure,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Debug, Clone)]
pub struct UpstreamFamilies {
    connect_failures: Family<FailureLabels, Counter>,
    connections: Family<ClusterLabels, Gauge>,
    retries: Family<ClusterLabels, Counter>,
    budget_exhausted: Family<ClusterLabels, Counter>,
    overflow: Family<BreakerLabels, Counter>,
    ejections: Family<ClusterLabels, Counter>,
    panic: Family<ClusterLabels, Counter>,
    check_failures: Family<ClusterLabels, Counter>,
    down: Family<ClusterLabels, Gauge>,
    received: Family<ClusterLabels, Counter>,
    sent: Family<ClusterLabels, Counter>,
    attempts: Family<ClusterLabels, LatencyHistogram>,
}

impl UpstreamFamilies {
    pub fn register(registry: &mut Registry) -> Self {
        let f = Self {
            connect_failures: Family::default(),
            connections: Family::default(),
            retries: Family::default(),
            budget_exhausted: Family::default(),
            overflow: Family::default(),
            ejections: Family::default(),
            panic: Family::default(),
            check_failures: Family::default(),
            down: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            attempts: Family::new_with_constructor(
                LatencyHistogram::default as fn() -> LatencyHistogram,
            ),
        };
        registry.register(
            "upstream_request_duration_seconds",
            "Time of each upstream attempt, from the request handed over (or the retry begun) to its response headers or its failure, by cluster",
            f.attempts.clone(),
        );
        registry.register(
            "upstream_connect_failures",
            "Upstream connection attempts that failed, by cluster and reason",
            f.connect_failures.clone(),
        );
        registry.register(
            "upstream_connections_active",
            "Open upstream connections, by cluster",
            f.connections.clone(),
        );
        registry.register(
            "upstream_retries",
            "Retries of failed upstream attempts, by cluster",
            f.retries.clone(),
        );
        registry.register(
            "upstream_retry_budget_exhausted",
            "Retries not made because the cluster's retry budget was spent, by cluster",
            f.budget_exhausted.clone(),
        );
        registry.register(
            "upstream_overflow",
            "Requests refused by a circuit breaker (503 upstream_overflow), by cluster and breaker",
            f.overflow.clone(),
        );
        registry.register(
            "upstream_ejections",
            "Endpoints ejected by outlier detection, by cluster",
            f.ejections.clone(),
        );
        registry.register(
            "upstream_panic",
            "Endpoint picks made while no endpoint of the cluster was healthy (fail open), by cluster",
            f.panic.clone(),
        );
        registry.register(
            "upstream_health_check_failures",
            "Active health checks that failed, by cluster",
            f.check_failures.clone(),
        );
        registry.register_with_unit(
            "upstream_received",
            "Bytes read from upstream connections (TLS: the payload), by cluster",
            Unit::Bytes,
            f.received.clone(),
        );
        registry.register_with_unit(
            "upstream_sent",
            "Bytes written to upstream connections (TLS: the payload), by cluster",
            Unit::Bytes,
            f.sent.clone(),
        );
        registry.register(
            "upstream_endpoints_down",
            "Endpoints the active health checks hold down, by cluster",
            f.down.clone(),
        );
        f
    }

    /// The cluster's attempt latency (the route's metrics hold it too, for requests sent
    /// once).
    pub fn attempt_duration(&self, cluster: &str) -> LatencyHistogram {
        self.attempts
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_owned(),
            })
            .clone()
    }

    pub fn cluster(&self, cluster: &str) -> ClusterMetrics {
        let by = |f: &Family<ClusterLabels, Counter>| {
            f.get_or_create(&ClusterLabels {
                cluster: cluster.to_owned(),
            })
            .clone()
        };
        ClusterMetrics {
            retries: by(&self.retries),
            budget_exhausted: by(&self.budget_exhausted),
            ejections: by(&self.ejections),
            panic: by(&self.panic),
            check_failures: by(&self.check_failures),
            bytes: ByteCounters {
                received: by(&self.received),
                sent: by(&self.sent),
            },
            attempt_duration: self.attempt_duration(cluster),
            down: self
                .down
                .get_or_create(&ClusterLabels {
                    cluster: cluster.to_owned(),
                })
                .clone(),
            overflow: Breaker::ALL.map(|breaker| {
                self.overflow
                    .get_or_create(&BreakerLabels {
                        cluster: cluster.to_owned(),
                        breaker,
                    })
                    .clone()
            }),
            failures: ConnectFailure::ALL.map(|reason| {
                self.connect_failures
                    .get_or_create(&FailureLabels {
                        cluster: cluster.to_owned(),
                        reason,
                    })
                    .clone()
            }),
            connections: self
                .connections
                .get_or_create(&ClusterLabels {
                    cluster: cluster.to_owned(),
                })
                .clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// By `ConnectFailure as usize`.
    failures: [Counter; ConnectFailure::ALL.len()],
    pub connections: Gauge,
    pub retries: Counter,
    pub budget_exhausted: Counter,
    /// By `Breaker as usize`.
    overflow: [Counter; Breaker::ALL.len()],
    pub ejections: Counter,
    pub panic: Counter,
    pub check_failures: Counter,
    pub down: Gauge,
    /// What the cluster's connections read and wrote.
    pub bytes: ByteCounters,
    /// Each attempt's time (observed here for clusters that may retry; the request path
    /// observes the one exchange of the others).
    pub attempt_duration: LatencyHistogram,
}

impl ClusterMetrics {
    pub fn overflowed(&self, which: Breaker) {
        self.overflow[which as usize].inc();
    }

    pub fn connect_failed(&self, why: ConnectFailure) {
        self.failures[why as usize].inc();
    }
}
