//! Upstream metrics, registered by this subsystem: failed connection attempts by reason, open
//! connections, by cluster.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
}

impl UpstreamFamilies {
    pub fn register(registry: &mut Registry) -> Self {
        let f = Self {
            connect_failures: Family::default(),
            connections: Family::default(),
        };
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
        f
    }

    pub fn cluster(&self, cluster: &str) -> ClusterMetrics {
        ClusterMetrics {
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
}

impl ClusterMetrics {
    pub fn connect_failed(&self, why: ConnectFailure) {
        self.failures[why as usize].inc();
    }
}
