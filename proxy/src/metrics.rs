//! Prometheus metrics. Every label set is bounded by the config (listener, route and cluster
//! names, status class), never by request data.
//!
//! The request path never touches a lock: counters for each route are looked up once, when a
//! config generation is compiled, and kept on the route; the latency histogram is made of
//! atomics (prometheus-client's own histogram takes a mutex on every observation).

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: String,
    pub route: String,
    pub cluster: String,
    pub status_class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectFailureLabels {
    pub cluster: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub listener: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeFailureLabels {
    pub listener: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerCellLabels {
    pub listener: String,
    pub peer_cell: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// `listener/<name>`, `listener/<name>/trust_bundle`, `cluster/<name>/client` or
    /// `cluster/<name>/trust_bundle`.
    pub owner: String,
    /// The certificate's SPIFFE ID, first DNS name or subject.
    pub certificate: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderResultLabels {
    pub provider: String,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub policy: String,
    pub rule: String,
    pub decision: &'static str,
    pub mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    pub listener: String,
    pub route: String,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// All of the proxy's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<ListenerLabels, LatencyHistogram>,
    connect_failures: Family<ConnectFailureLabels, Counter>,
    upstream_connections: Family<ClusterLabels, Gauge>,
    downstream_active: Family<ListenerLabels, Gauge>,
    downstream_total: Family<ListenerLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    generation: Gauge,
    tls_handshakes: Family<HandshakeLabels, Counter>,
    tls_failures: Family<HandshakeFailureLabels, Counter>,
    peer_cells: Family<PeerCellLabels, Counter>,
    cert_expiry: Family<CertLabels, Gauge>,
    jwt: Family<ProviderResultLabels, Counter>,
    jwks_fetches: Family<ProviderResultLabels, Counter>,
    jwks_keys: Family<ProviderLabels, Gauge>,
    jwks_age: Family<ProviderLabels, Gauge>,
    decisions: Family<DecisionLabels, Counter>,
    rate_limits: Family<RateLimitLabels, Counter>,
    /// Handed to the access log writers.
    pub access_log_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("membrane");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by listener, route, cluster and status class",
            requests.clone(),
        );
        let request_duration = Family::<ListenerLabels, LatencyHistogram>::new_with_constructor(
            LatencyHistogram::default as fn() -> LatencyHistogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request headers received to response headers sent",
            request_duration.clone(),
        );
        let connect_failures = Family::<ConnectFailureLabels, Counter>::default();
        registry.register(
            "upstream_connect_failures",
            "Upstream connection attempts that failed, by cluster and reason",
            connect_failures.clone(),
        );
        let upstream_connections = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "upstream_connections_active",
            "Open upstream connections, by cluster",
            upstream_connections.clone(),
        );
        let downstream_active = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "downstream_connections_active",
            "Open downstream connections, by listener",
            downstream_active.clone(),
        );
        let downstream_total = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "downstream_connections",
            "Downstream connections accepted, by listener",
            downstream_total.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration loads, by result (ok, failed)",
            reloads.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "config_generation",
            "Generation number of the configuration now serving",
            generation.clone(),
        );
        let tls_handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on listeners, by listener and outcome (full, resumed, failed)",
            tls_handshakes.clone(),
        );
        let tls_failures = Family::<HandshakeFailureLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes on listeners, by listener and reason",
            tls_failures.clone(),
        );
        let peer_cells = Family::<PeerCellLabels, Counter>::default();
        registry.register(
            "tls_peer_connections",
            "Connections with a verified client certificate, by listener and the peer's cell \
             (from its SPIFFE ID; `none` without a cell; `other` past 64 cells per listener)",
            peer_cells.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let jwt = Family::<ProviderResultLabels, Counter>::default();
        registry.register(
            "jwt_validations",
            "JWT checks by provider and result (verified, cached, or why not)",
            jwt.clone(),
        );
        let jwks_fetches = Family::<ProviderResultLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "Remote JWK set fetches by provider and result",
            jwks_fetches.clone(),
        );
        let jwks_keys = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "jwks_keys",
            "Signing keys loaded, by provider",
            jwks_keys.clone(),
        );
        let jwks_age = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "jwks_age_seconds",
            "Seconds since each provider's key set was loaded",
            jwks_age.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "authz_decisions",
            "Authorization decisions by policy, deciding rule, decision and mode",
            decisions.clone(),
        );
        let rate_limits = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "rate_limit_checks",
            "Rate limit checks by listener, route and result (allowed, limited)",
            rate_limits.clone(),
        );
        let cert_expiry = Family::<CertLabels, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_seconds",
            "Seconds until each loaded certificate expires (negative: expired)",
            cert_expiry.clone(),
        );
        Self {
            jwt,
            jwks_fetches,
            jwks_keys,
            jwks_age,
            decisions,
            rate_limits,
            access_log_dropped,
            tls_handshakes,
            tls_failures,
            peer_cells,
            cert_expiry,
            registry,
            requests,
            request_duration,
            connect_failures,
            upstream_connections,
            downstream_active,
            downstream_total,
            reloads,
            generation,
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counters for one route (or for a listener's unrouted requests), one per status class.
    pub fn route(&self, listener: &str, route: &str, cluster: &str) -> RouteMetrics {
        let counter = |class| {
            self.requests
                .get_or_create(&RequestLabels {
                    listener: listener.to_owned(),
                    route: route.to_owned(),
                    cluster: cluster.to_owned(),
                    status_class: class,
                })
                .clone()
        };
        RouteMetrics {
            route: route.into(),
            cluster: cluster.into(),
            by_class: STATUS_CLASSES.map(counter),
            duration: self
                .request_duration
                .get_or_create(&ListenerLabels {
                    listener: listener.to_owned(),
                })
                .clone(),
        }
    }

    pub fn cluster(&self, cluster: &str) -> ClusterMetrics {
        let fail = |reason| {
            self.connect_failures
                .get_or_create(&ConnectFailureLabels {
                    cluster: cluster.to_owned(),
                    reason,
                })
                .clone()
        };
        ClusterMetrics {
            connect_refused: fail("refused"),
            connect_timeout: fail("timeout"),
            connect_other: fail("other"),
            connect_tls: fail("tls"),
            connections: self
                .upstream_connections
                .get_or_create(&ClusterLabels {
                    cluster: cluster.to_owned(),
                })
                .clone(),
        }
    }

    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        let l = ListenerLabels {
            listener: listener.to_owned(),
        };
        ListenerMetrics {
            active: self.downstream_active.get_or_create(&l).clone(),
            accepted: self.downstream_total.get_or_create(&l).clone(),
            access_log_dropped: self.access_log_dropped.clone(),
        }
    }

    /// Handshake counters for a TLS listener, every reason made up front so that each
    /// series exists from the start (a rate over a series that appears late misses its
    /// first increment).
    pub fn listener_tls(&self, listener: &str) -> TlsListenerMetrics {
        let outcome = |outcome| {
            self.tls_handshakes
                .get_or_create(&HandshakeLabels {
                    listener: listener.to_owned(),
                    outcome,
                })
                .clone()
        };
        TlsListenerMetrics {
            full: outcome("full"),
            resumed: outcome("resumed"),
            failed: outcome("failed"),
            reasons: crate::tls::failure::REASONS
                .iter()
                .map(|&reason| {
                    let c = self
                        .tls_failures
                        .get_or_create(&HandshakeFailureLabels {
                            listener: listener.to_owned(),
                            reason,
                        })
                        .clone();
                    (reason, c)
                })
                .collect(),
            peers: Arc::new(PeerCells {
                listener: listener.to_owned(),
                family: self.peer_cells.clone(),
                seen: std::sync::Mutex::new(rustc_hash::FxHashSet::default()),
            }),
        }
    }

    pub fn provider(&self, provider: &str) -> ProviderMetrics {
        let jwt = |result| {
            self.jwt
                .get_or_create(&ProviderResultLabels {
                    provider: provider.to_owned(),
                    result,
                })
                .clone()
        };
        let fetch = |result| {
            self.jwks_fetches
                .get_or_create(&ProviderResultLabels {
                    provider: provider.to_owned(),
                    result,
                })
                .clone()
        };
        let l = ProviderLabels {
            provider: provider.to_owned(),
        };
        ProviderMetrics {
            verified: jwt("verified"),
            cached: jwt("cached"),
            failures: crate::enforce::authn::REASONS
                .iter()
                .map(|&r| (r, jwt(r)))
                .collect(),
            fetch_ok: fetch("ok"),
            fetch_failed: fetch("failed"),
            keys: self.jwks_keys.get_or_create(&l).clone(),
            age: self.jwks_age.get_or_create(&l).clone(),
        }
    }

    /// One counter per rule of a policy (by its effect) and one per default outcome.
    pub fn authz(&self, policy: &membrane_policy::authz::Policy) -> AuthzCounters {
        use membrane_policy::authz::{Effect, Mode};
        let mode = match policy.mode {
            Mode::Enforce => "enforce",
            Mode::DryRun => "dry_run",
        };
        let name = |e: Effect| match e {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        };
        let counter = |rule: &str, decision| {
            self.decisions
                .get_or_create(&DecisionLabels {
                    policy: policy.name.clone(),
                    rule: rule.to_owned(),
                    decision,
                    mode,
                })
                .clone()
        };
        AuthzCounters {
            rules: policy
                .rules()
                .iter()
                .map(|r| counter(&r.name, name(r.effect)))
                .collect(),
            default: counter("default", name(policy.default)),
        }
    }

    pub fn rate_limit(&self, listener: &str, route: &str) -> (Counter, Counter) {
        let c = |result| {
            self.rate_limits
                .get_or_create(&RateLimitLabels {
                    listener: listener.to_owned(),
                    route: route.to_owned(),
                    result,
                })
                .clone()
        };
        (c("allowed"), c("limited"))
    }

    /// Sets the expiry gauges to the certificates of the generation now serving, forgetting
    /// those of earlier ones. Called before each scrape.
    pub fn set_cert_expiry(&self, certs: &[(String, String, i64)], now: i64) {
        self.cert_expiry.clear();
        for (owner, certificate, not_after) in certs {
            self.cert_expiry
                .get_or_create(&CertLabels {
                    owner: owner.clone(),
                    certificate: certificate.clone(),
                })
                .set(not_after - now);
        }
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn set_generation(&self, g: u64) {
        self.generation.set(g as i64);
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug, Clone)]
pub struct RouteMetrics {
    /// The route's and cluster's names (empty when none), for the access log.
    pub route: Arc<str>,
    pub cluster: Arc<str>,
    by_class: [Counter; 5],
    duration: LatencyHistogram,
}

impl RouteMetrics {
    #[inline]
    pub fn record(&self, status: http::StatusCode, elapsed: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
        self.duration.observe(elapsed);
    }
}

#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    pub connect_refused: Counter,
    pub connect_timeout: Counter,
    pub connect_other: Counter,
    /// The TCP connection opened but the TLS handshake failed.
    pub connect_tls: Counter,
    pub connections: Gauge,
}

#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    pub active: Gauge,
    pub accepted: Counter,
    pub access_log_dropped: Counter,
}

/// Upper bounds of the latency buckets, in seconds.
#[derive(Debug, Clone)]
pub struct TlsListenerMetrics {
    pub full: Counter,
    pub resumed: Counter,
    pub failed: Counter,
    reasons: Box<[(&'static str, Counter)]>,
    pub peers: Arc<PeerCells>,
}

impl TlsListenerMetrics {
    pub fn handshake_failed(&self, reason: &'static str) {
        self.failed.inc();
        if let Some((_, c)) = self.reasons.iter().find(|(r, _)| *r == reason) {
            c.inc();
        }
    }
}

/// Most distinct peer cells labelled per listener; later ones count as `other`. Cells come
/// from certificates a trusted CA signed, so the set is an organisation's cells, but a
/// bound keeps a misissuing CA from growing the label set without end.
const MAX_PEER_CELLS: usize = 64;

#[derive(Debug)]
pub struct PeerCells {
    listener: String,
    family: Family<PeerCellLabels, Counter>,
    seen: std::sync::Mutex<rustc_hash::FxHashSet<String>>,
}

impl PeerCells {
    /// Counts a connection from a verified peer of `cell` (`None`: no cell in its ID).
    pub fn count(&self, cell: Option<&str>) {
        let cell = cell.unwrap_or("none");
        let label = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.contains(cell) {
                cell
            } else if seen.len() < MAX_PEER_CELLS {
                seen.insert(cell.to_owned());
                cell
            } else {
                "other"
            }
        };
        self.family
            .get_or_create(&PeerCellLabels {
                listener: self.listener.clone(),
                peer_cell: label.to_owned(),
            })
            .inc();
    }
}

#[derive(Debug, Clone)]
pub struct ProviderMetrics {
    pub verified: Counter,
    pub cached: Counter,
    failures: Box<[(&'static str, Counter)]>,
    pub fetch_ok: Counter,
    pub fetch_failed: Counter,
    pub keys: Gauge,
    pub age: Gauge,
}

impl ProviderMetrics {
    pub fn failed(&self, reason: &'static str) {
        if let Some((_, c)) = self.failures.iter().find(|(r, _)| *r == reason) {
            c.inc();
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthzCounters {
    rules: Box<[Counter]>,
    default: Counter,
}

impl AuthzCounters {
    pub fn count(&self, d: &membrane_policy::authz::Decision) {
        match d.rule.and_then(|i| self.rules.get(i)) {
            Some(c) => c.inc(),
            None => self.default.inc(),
        };
    }
}

const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket histogram built from atomics, so observing never blocks.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    inner: Arc<HistogramCells>,
}

#[derive(Debug, Default)]
struct HistogramCells {
    /// One more than the bounds: the last bucket is +Inf. The count is their sum, taken
    /// when the histogram is encoded (one atomic update less per observation).
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BOUNDS.len());
        let c = &self.inner;
        c.buckets[i].fetch_add(1, Ordering::Relaxed);
        c.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.inner;
        let mut buckets = [(0.0, 0u64); BOUNDS.len() + 1];
        for (i, slot) in buckets.iter_mut().enumerate() {
            // The last bucket is `+Inf` (prometheus-client writes it so for `INFINITY` only; with
            // `f64::MAX` every `histogram_quantile` over it was NaN).
            let bound = BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
            *slot = (bound, c.buckets[i].load(Ordering::Relaxed));
        }
        let sum = c.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_counters_and_histogram_show_in_the_exposition() {
        let m = Metrics::new();
        let r = m.route("main", "api", "backend");
        r.record(http::StatusCode::OK, Duration::from_millis(3));
        r.record(http::StatusCode::BAD_GATEWAY, Duration::from_millis(30));
        m.reload(true);
        let text = m.encode();
        assert!(text.contains(
            r#"membrane_requests_total{listener="main",route="api",cluster="backend",status_class="2xx"} 1"#
        ), "{text}");
        assert!(
            text.contains(r#"membrane_request_duration_seconds_count{listener="main"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"membrane_request_duration_seconds_bucket{le="0.005",listener="main"} 1"#
            ) || text.contains(
                r#"membrane_request_duration_seconds_bucket{listener="main",le="0.005"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"membrane_config_reloads_total{result="ok"} 1"#),
            "{text}"
        );
        // The top bucket is `+Inf` and holds every observation, as `histogram_quantile`
        // needs.
        let inf = text
            .lines()
            .find(|l| {
                l.starts_with("membrane_request_duration_seconds_bucket")
                    && l.contains("le=\"+Inf\"")
            })
            .unwrap_or_else(|| panic!("no +Inf bucket: {text}"));
        assert!(inf.ends_with(" 2"), "{inf}");
        assert!(!text.contains("1.7976931348623157e308"), "{text}");
    }
}
