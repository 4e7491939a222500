//! The static bootstrap file: listeners, routes, clusters and the admin listener.
//!
//! These types mirror the YAML one to one. They are parsed once at the edge
//! ([`load::parse`]) and turned into runtime types by [`crate::snapshot::compile`]; nothing
//! past that point re-checks them.

mod constructors;
mod load;
mod policy;
mod tls;
mod tracing;

pub use load::{ConfigError, ConfigErrors, Owner, parse, read_file};
pub use membrane_api::duration::{Dur, DurError};
pub use membrane_api::resilience::{
    CircuitBreakerConfig, HealthCheckConfig, OutlierConfig, RetryBudgetConfig, RetryConfig,
    RetryKind, RetryOn,
};
pub use policy::*;
pub use tls::{
    CertKeyConfig, ClientAuth, ClusterTlsConfig, ListenerTlsConfig, TlsVersion, UpstreamVerify,
};
pub use tracing::{TraceContextTrust, TracingConfig};

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A value with its position in the file (shared with the cell specs).
pub use membrane_api::yaml::Located;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    #[serde(default)]
    pub admin: AdminConfig,
    /// Worker threads, each with its own runtime and its own accept socket per listener.
    /// Defaults to the number of cores.
    #[serde(default)]
    pub workers: Option<usize>,
    /// How long SIGTERM waits for in-flight requests before closing what is left.
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: Dur,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// JWT issuers that routes may require tokens from.
    #[serde(default)]
    pub jwt_providers: Vec<JwtProviderConfig>,
    /// Traces, exported over OTLP; off when absent.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// Where this gateway runs: clusters with `localities` prefer endpoints of its zone,
    /// then of its region.
    #[serde(default)]
    pub locality: Option<LocalityConfig>,
}

impl Default for Bootstrap {
    /// What an empty file means: the admin listener on its default address, and nothing else.
    fn default() -> Self {
        Self {
            admin: AdminConfig::default(),
            workers: None,
            drain_timeout: defaults::drain_timeout(),
            listeners: Vec::new(),
            clusters: Vec::new(),
            jwt_providers: Vec::new(),
            tracing: None,
            locality: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Loopback by default: the admin API exposes configuration and is unauthenticated.
    #[serde(default = "defaults::admin_address")]
    pub address: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: defaults::admin_address(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c), no upgrade dance.
    Http2,
    /// Detects HTTP/2 by its connection preface, HTTP/1.1 otherwise.
    Auto,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: Located<String>,
    pub address: SocketAddr,
    #[serde(default = "defaults::listener_protocol")]
    pub protocol: ListenerProtocol,
    /// TLS termination; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// One JSON line per request: `off` (the default), `stdout`, `stderr` or a file path
    /// (with a `/`; appended to).
    #[serde(default)]
    pub access_log: crate::access_log::AccessLogTarget,
    /// The access log's fields, from `ts, listener, route, cluster, method, path, protocol,
    /// status, error, duration_ms, request_id, client, peer, peer_cell, subject, authz,
    /// authz_rule, trace_id`; all when empty.
    #[serde(default)]
    pub access_log_fields: Vec<Located<String>>,
    /// Share of allowed requests the access log writes, 0 to 1; refused and failed
    /// requests are always written.
    #[serde(default = "defaults::one")]
    pub access_log_sample: f64,
    /// With `tracing` on: `continue` a request's incoming trace context or `restart` (a new
    /// trace linked to it). Default: continue where client certificates are required (the
    /// peer is a gateway of the org), restart elsewhere.
    #[serde(default)]
    pub trace_context: Option<TraceContextTrust>,
    /// Authorization rules for every request on this listener, after routing.
    #[serde(default)]
    pub authorization: Option<AuthorizationConfig>,
    #[serde(default)]
    pub limits: ListenerLimits,
    /// How a request is made canonical before routing and policy (`normalize/`): every
    /// default is the safe choice.
    #[serde(default)]
    pub normalization: NormalizationConfig,
    /// Proxies in front of this listener whose forwarding headers (`X-Forwarded-*`,
    /// `Forwarded`, `X-Real-IP`) are believed. 0 (the default): none; a client's are removed.
    #[serde(default)]
    pub trusted_hops: u8,
    /// Protocols an HTTP/1.1 `Upgrade` request may switch to; any other `Upgrade` is
    /// removed and the request goes on as a plain one. `h2c` is refused: after the switch,
    /// the connection would carry HTTP/2 requests that no route or policy sees.
    #[serde(default = "defaults::upgrades")]
    pub upgrades: Vec<Located<String>>,
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHostConfig>,
}

/// See `normalize/` for what each setting does and why the default is what it is.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizationConfig {
    /// Remove `.` and `..` path segments (RFC 3986 §5.2.4).
    #[serde(default = "defaults::yes")]
    pub dot_segments: bool,
    /// Merge runs of `/` into one.
    #[serde(default = "defaults::yes")]
    pub merge_slashes: bool,
    /// `%2F`, `%5C` and `\` in a path: `reject` (400), `keep` or `unescape`.
    #[serde(default)]
    pub escaped_slashes: crate::normalize::EscapedSlashes,
    /// `;` path parameters: `reject` (400) or `keep`.
    #[serde(default)]
    pub path_parameters: crate::normalize::PathParameters,
    /// Header names with `_`: `drop`, `reject` (400) or `allow`.
    #[serde(default)]
    pub headers_with_underscores: crate::normalize::Underscores,
}

impl Default for NormalizationConfig {
    fn default() -> Self {
        Self {
            dot_segments: true,
            merge_slashes: true,
            escaped_slashes: Default::default(),
            path_parameters: Default::default(),
            headers_with_underscores: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimits {
    /// Request line plus all header names and values, in bytes. Over it: 431.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_request_header_bytes: usize,
    /// Number of request headers. Over it: 431.
    #[serde(default = "defaults::max_headers")]
    pub max_request_headers: usize,
    /// A client that has not sent complete request headers by then is disconnected. On
    /// HTTP/1.1 the clock starts when the proxy begins waiting for a request, so this also
    /// closes keep-alive connections idle for that long.
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout: Dur,
    /// HTTP/2: a connection with no open stream for this long is closed (GOAWAY, then the
    /// close). Envoy's default is an hour, nginx's `keepalive_timeout` 75 s; five minutes
    /// keeps gRPC clients' connections across pauses without holding dead ones for long.
    /// (HTTP/1.1 idle keep-alive is bounded by `header_read_timeout`.)
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: Dur,
    /// A client that takes no response bytes for this long is disconnected, and the
    /// upstream connection its response held is let go (nginx's `send_timeout`, 60 s). On
    /// HTTP/1.1 it bounds each write; on HTTP/2, a connection whose streams all wait on the
    /// client (flow control) for this long is closed.
    #[serde(default = "defaults::send_timeout")]
    pub send_timeout: Dur,
    /// HTTP/2 streams a client may have open at once (nginx: 128; hyper: 200).
    #[serde(default = "defaults::http2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2: response bytes buffered per stream while the client does not read; with the
    /// stream limit, it bounds a connection's buffers (100 x 32 KiB = 3.2 MiB by default).
    #[serde(default = "defaults::http2_stream_send_buffer")]
    pub http2_stream_send_buffer: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_request_header_bytes: defaults::max_header_bytes(),
            max_request_headers: defaults::max_headers(),
            header_read_timeout: defaults::header_read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            send_timeout: defaults::send_timeout(),
            http2_max_concurrent_streams: defaults::http2_max_concurrent_streams(),
            http2_stream_send_buffer: defaults::http2_stream_send_buffer(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHostConfig {
    pub name: String,
    /// Host names: exact (`api.example.com`), suffix wildcard (`*.example.com`) or `*`.
    pub domains: Vec<Located<String>>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: Located<String>,
    #[serde(rename = "match", default)]
    pub matcher: RouteMatchConfig,
    // Exactly one of the three actions; checked when compiled, with the route's position.
    #[serde(default)]
    pub forward: Option<ForwardConfig>,
    #[serde(default)]
    pub redirect: Option<RedirectConfig>,
    #[serde(default)]
    pub direct_response: Option<DirectResponseConfig>,
    /// A JWT from this provider, checked before the action.
    #[serde(default)]
    pub jwt: Option<RouteJwtConfig>,
    /// A token bucket per key, checked after authorization.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatchConfig {
    #[serde(default)]
    pub path: Option<PathMatchConfig>,
    #[serde(default)]
    pub methods: Vec<Located<String>>,
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatchConfig {
    Exact(Located<String>),
    Prefix(Located<String>),
    Regex(Located<String>),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    pub name: Located<String>,
    // Exactly one of exact, prefix, regex or present; checked when compiled.
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<Located<String>>,
    /// `true`: the header must be there; `false`: it must not.
    #[serde(default)]
    pub present: Option<bool>,
    /// Matches when the rule does not.
    #[serde(default)]
    pub invert: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    pub cluster: Located<String>,
    /// Replaces the matched path prefix (or the whole path of an exact match).
    #[serde(default)]
    pub prefix_rewrite: Option<Located<String>>,
    /// Overrides the cluster's request timeout for this route.
    #[serde(default)]
    pub timeout: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    /// Replaces the whole path; the query is kept.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "defaults::redirect_status")]
    pub status: Located<u16>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponseConfig {
    pub status: Located<u16>,
    #[serde(default)]
    pub body: String,
    #[serde(default = "defaults::content_type")]
    pub content_type: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    RoundRobin,
    /// Power of two random choices, the one with fewer requests in flight wins.
    LeastRequest,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: Located<String>,
    /// `ip:port`, or `host:port` resolved when the configuration is compiled (every
    /// reload); a name that does not resolve leaves the cluster without that endpoint (503
    /// `no_endpoint` until it resolves), as Envoy's strict DNS clusters do.
    pub endpoints: Vec<Located<String>>,
    #[serde(default = "defaults::lb")]
    pub lb: LbPolicy,
    #[serde(default = "defaults::upstream_protocol")]
    pub protocol: UpstreamProtocol,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Dur,
    /// From the request being sent until the response headers arrive.
    #[serde(default = "defaults::request_timeout")]
    pub request_timeout: Dur,
    /// Open upstream connections across all workers; past it, requests get 503.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Idle pooled connections are not reused after this long.
    #[serde(default = "defaults::pool_idle_timeout")]
    pub pool_idle_timeout: Dur,
    /// A response body the upstream sends nothing of for this long is cut off (the client's
    /// connection closed mid-body) and the upstream connection let go (nginx's
    /// `proxy_read_timeout`, 60 s). Raise it for long-polling and server-sent events.
    #[serde(default = "defaults::body_idle_timeout")]
    pub body_idle_timeout: Dur,
    /// TLS origination; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<ClusterTlsConfig>,
    /// Retries of failed attempts (off when absent).
    #[serde(default)]
    pub retries: Option<RetryConfig>,
    /// Passive outlier detection (off when absent).
    #[serde(default)]
    pub outlier_detection: Option<OutlierConfig>,
    #[serde(default)]
    pub circuit_breakers: Option<CircuitBreakerConfig>,
    /// Active health checks (off when absent).
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Endpoints by region and zone, besides `endpoints` (which have no locality).
    #[serde(default)]
    pub localities: Vec<LocalityEndpoints>,
    /// The share of a locality's endpoints, in percent, that must be healthy for it to take
    /// all the traffic; below it, the next nearer locality that has that share does.
    #[serde(default = "defaults::failover_percent")]
    pub failover_healthy_percent: u32,
}

/// A region and a zone (either may be left out).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocalityConfig {
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
}

/// Endpoints of one region and zone.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalityEndpoints {
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    pub endpoints: Vec<Located<String>>,
}

mod defaults {
    use super::*;
    use std::time::Duration;

    pub fn yes() -> bool {
        true
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn upgrades() -> Vec<Located<String>> {
        vec![Located::unplaced("websocket".to_owned())]
    }

    pub fn admin_address() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 15000))
    }
    pub fn drain_timeout() -> Dur {
        Dur(Duration::from_secs(20))
    }
    pub fn listener_protocol() -> ListenerProtocol {
        ListenerProtocol::Auto
    }
    // Envoy defaults to 60 KiB and 100 headers; nginx to 4 x 8 KiB buffers.
    pub fn max_header_bytes() -> usize {
        32 * 1024
    }
    pub fn max_headers() -> usize {
        100
    }
    pub fn header_read_timeout() -> Dur {
        Dur(Duration::from_secs(10))
    }
    pub fn idle_timeout() -> Dur {
        Dur(Duration::from_secs(300))
    }
    pub fn redirect_status() -> Located<u16> {
        Located::unplaced(301)
    }
    pub fn content_type() -> String {
        "text/plain".to_owned()
    }
    pub fn lb() -> LbPolicy {
        LbPolicy::RoundRobin
    }
    pub fn upstream_protocol() -> UpstreamProtocol {
        UpstreamProtocol::Http1
    }
    pub fn connect_timeout() -> Dur {
        Dur(Duration::from_secs(2))
    }
    pub fn request_timeout() -> Dur {
        Dur(Duration::from_secs(15))
    }
    pub fn max_connections() -> usize {
        4096
    }
    pub fn http2_max_concurrent_streams() -> u32 {
        100
    }
    pub fn http2_stream_send_buffer() -> usize {
        32 * 1024
    }
    pub fn send_timeout() -> Dur {
        Dur(Duration::from_secs(60))
    }
    pub fn body_idle_timeout() -> Dur {
        Dur(Duration::from_secs(60))
    }
    pub fn failover_percent() -> u32 {
        70
    }
    pub fn pool_idle_timeout() -> Dur {
        Dur(Duration::from_secs(30))
    }
}
