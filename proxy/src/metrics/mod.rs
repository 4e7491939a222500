//! Prometheus metrics. Every label set is bounded by the config (listener, route and cluster
//! names) or by an enum of fixed values (`label`), never by request data.
//!
//! Each subsystem defines and registers its own families (`tls::metrics`,
//! `upstream::metrics`, `enforce::metrics`); this module holds the registry, the request
//! and server families, and hands the subsystems' out. The request path never touches a
//! lock: counters for each route are looked up once, when a config generation is compiled,
//! and kept on the route.

mod exemplars;
pub mod exposition;
pub mod label;
pub mod xds;

pub use crate::histogram::LatencyHistogram;
pub use label::{Outcome, StatusClass};

use crate::enforce::metrics::{AuthzCounters, PolicyFamilies, ProviderMetrics};
use crate::stream::ByteCounters;
use crate::tls::metrics::{CertExpiry, TlsFamilies, TlsListenerMetrics};
use crate::upstream::metrics::{ClusterMetrics, UpstreamFamilies};
use membrane_telemetry::Attributes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    route: String,
    cluster: String,
    status_class: StatusClass,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    listener: String,
    route: String,
    cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: Outcome,
}

/// All of the proxy's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, LatencyHistogram>,
    downstream_active: Family<ListenerLabels, Gauge>,
    downstream_total: Family<ListenerLabels, Counter>,
    downstream_received: Family<ListenerLabels, Counter>,
    downstream_sent: Family<ListenerLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    generation: Gauge,
    tls: TlsFamilies,
    upstream: UpstreamFamilies,
    policy: PolicyFamilies,
    /// Handed to the access log writers.
    pub access_log_dropped: Counter,
    /// Handed to trace exporters.
    pub trace: membrane_telemetry::Counters,
    xds: xds::XdsFamilies,
    exemplars: exemplars::Table,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
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
        let request_duration = Family::<RouteLabels, LatencyHistogram>::new_with_constructor(
            LatencyHistogram::default as fn() -> LatencyHistogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request headers received to response headers sent, by listener, route and cluster (empty when none)",
            request_duration.clone(),
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
        let downstream_received = Family::<ListenerLabels, Counter>::default();
        registry.register_with_unit(
            "downstream_received",
            "Bytes read from clients (request heads and bodies with their framing, after TLS decryption), by listener",
            Unit::Bytes,
            downstream_received.clone(),
        );
        let downstream_sent = Family::<ListenerLabels, Counter>::default();
        registry.register_with_unit(
            "downstream_sent",
            "Bytes written to clients (response heads and bodies with their framing, before TLS encryption), by listener",
            Unit::Bytes,
            downstream_sent.clone(),
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
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let spans_exported = Counter::default();
        registry.register(
            "trace_spans_exported",
            "Spans the OTLP collector accepted",
            spans_exported.clone(),
        );
        let spans_dropped = Family::<DropLabels, Counter>::default();
        registry.register(
            "trace_spans_dropped",
            "Spans dropped, by reason: queue_full (the exporter fell behind; requests are never slowed), export_failed (the collector did not take the batch)",
            spans_dropped.clone(),
        );
        // One statement each: `get_or_create` holds the family's lock until its guard
        // is dropped at the end of the statement.
        let queue_full = spans_dropped
            .get_or_create(&DropLabels {
                reason: "queue_full",
            })
            .clone();
        let export_failed = spans_dropped
            .get_or_create(&DropLabels {
                reason: "export_failed",
            })
            .clone();
        let trace = membrane_telemetry::Counters {
            exported: spans_exported,
            dropped_queue_full: queue_full,
            dropped_export_failed: export_failed,
        };
        let xds = xds::XdsFamilies::register(&mut registry);
        let tls = TlsFamilies::register(&mut registry);
        let upstream = UpstreamFamilies::register(&mut registry);
        let policy = PolicyFamilies::register(&mut registry);
        Self {
            registry,
            requests,
            request_duration,
            downstream_active,
            downstream_total,
            downstream_received,
            downstream_sent,
            reloads,
            generation,
            tls,
            upstream,
            policy,
            access_log_dropped,
            trace,
            xds,
            exemplars: exemplars::Table::default(),
        }
    }

    /// The xDS client's state (gateways configured by a control server).
    pub fn xds(&self) -> &xds::XdsFamilies {
        &self.xds
    }

    /// The OpenMetrics text exposition of every metric, with the process's own.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        membrane_telemetry::process::write(&mut out, false);
        out.push_str("# EOF\n");
        self.exemplars
            .annotate("membrane_request_duration_seconds", &out)
    }

    /// Counters for one route (or for a listener's unrouted requests), one per status class.
    pub fn route(&self, listener: &str, route: &str, cluster: &str) -> RouteMetrics {
        let mut names = Attributes::builder().str("membrane.listener", listener);
        if !route.is_empty() {
            names = names.str("http.route", route).str("membrane.route", route);
        }
        if !cluster.is_empty() {
            names = names.str("membrane.cluster", cluster);
        }
        RouteMetrics {
            route: route.into(),
            cluster: cluster.into(),
            span_attributes: names.build(),
            by_class: StatusClass::ALL.map(|status_class| {
                self.requests
                    .get_or_create(&RequestLabels {
                        listener: listener.to_owned(),
                        route: route.to_owned(),
                        cluster: cluster.to_owned(),
                        status_class,
                    })
                    .clone()
            }),
            duration: self
                .request_duration
                .get_or_create(&RouteLabels {
                    listener: listener.to_owned(),
                    route: route.to_owned(),
                    cluster: cluster.to_owned(),
                })
                .clone(),
            upstream: self.upstream.attempt_duration(cluster),
            exemplars: self.exemplars.slots(listener, route, cluster),
        }
    }

    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        let l = ListenerLabels {
            listener: listener.to_owned(),
        };
        ListenerMetrics {
            active: self.downstream_active.get_or_create(&l).clone(),
            accepted: self.downstream_total.get_or_create(&l).clone(),
            bytes: ByteCounters {
                received: self.downstream_received.get_or_create(&l).clone(),
                sent: self.downstream_sent.get_or_create(&l).clone(),
            },
            access_log_dropped: self.access_log_dropped.clone(),
        }
    }

    pub fn cluster(&self, cluster: &str) -> ClusterMetrics {
        self.upstream.cluster(cluster)
    }

    pub fn listener_tls(&self, listener: &str) -> TlsListenerMetrics {
        self.tls.listener(listener)
    }

    /// The TLS families (for the gateway's issued certificate: renewals, expiry).
    pub fn tls(&self) -> &TlsFamilies {
        &self.tls
    }

    pub fn provider(&self, provider: &str) -> ProviderMetrics {
        self.policy.provider(provider)
    }

    pub fn authz(&self, policy: &membrane_policy::authz::Policy) -> AuthzCounters {
        self.policy.authz(policy)
    }

    pub fn rate_limit(&self, listener: &str, route: &str) -> (Counter, Counter) {
        self.policy.rate_limit(listener, route)
    }

    /// Sets the certificate expiry gauges to the generation now serving.
    pub fn set_cert_expiry(&self, certs: &[CertExpiry], now: i64) {
        self.tls.set_cert_expiry(certs, now);
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { Outcome::Ok } else { Outcome::Failed };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn set_generation(&self, g: u64) {
        self.generation.set(g as i64);
    }
}

#[derive(Debug, Clone)]
pub struct RouteMetrics {
    /// The route's and cluster's names (empty when none), for the access log.
    pub route: Arc<str>,
    pub cluster: Arc<str>,
    /// A server span's attributes naming the listener, route and cluster, encoded once.
    pub span_attributes: Attributes,
    by_class: [Counter; 5],
    duration: LatencyHistogram,
    upstream: LatencyHistogram,
    exemplars: Arc<exemplars::Slots>,
}

impl RouteMetrics {
    #[inline]
    pub fn record(&self, status: http::StatusCode, elapsed: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
        self.duration.observe(elapsed);
    }

    /// An exported request's trace, as the exemplar of its latency bucket.
    pub fn exemplar(&self, elapsed: Duration, trace_id: [u8; 16]) {
        self.exemplars.record(elapsed, trace_id);
    }

    /// The upstream exchange's time, on the route's cluster.
    #[inline]
    pub fn record_upstream(&self, elapsed: Duration) {
        self.upstream.observe(elapsed);
    }
}

#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    pub active: Gauge,
    pub accepted: Counter,
    pub access_log_dropped: Counter,
    pub bytes: ByteCounters,
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
            text.contains(
                r#"membrane_request_duration_seconds_count{listener="main",route="api",cluster="backend"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"membrane_request_duration_seconds_bucket{le="0.005",listener="main",route="api",cluster="backend"} 1"#
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
