//! Traces of requests: a server span per request and a client span for its upstream
//! exchange, exported over OTLP (`membrane_telemetry`).
//!
//! - **Context in**: a listener that continues (`trace_context: continue`, the default where
//!   client certificates are required) makes its server span the child of the incoming
//!   `traceparent` and keeps the caller's sampling decision and `tracestate`. One that
//!   restarts (the default elsewhere: the public side must not choose trace ids or force
//!   sampling) starts a new trace whose server span links to the incoming context.
//! - **Context out**: the upstream gets `traceparent` with the client span's id, whether the
//!   request is sampled or not (so the next cell sees one trace), and `tracestate` only when
//!   the trace was continued. Without `tracing`, both headers pass through untouched.
//! - **Sampling**: the head decision is the parent's or the ratio's; with
//!   `always_sample_errors`, a failed or refused request is exported anyway (its caller
//!   may not have it: the upstream saw `sampled=0`).
//! - **Cost**: what every request pays with tracing configured is two header lookups (by
//!   prebuilt names), one random number and the outbound header; clocks are read and spans
//!   built only for requests that are exported (times are derived from the request's own
//!   `Instant`s then).

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use membrane_telemetry::context::{MAX_TRACESTATE, SAMPLED};
use membrane_telemetry::{
    Exporter, Kind, Sampler, SpanHead, SpanId, SpanWriter, TraceId, TraceParent, WallClock,
};
use std::sync::Arc;
use std::time::Instant;

/// Prebuilt names: a lookup by `&str` parses and lower-cases the name on every request.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A generation's tracing, shared by its listeners.
#[derive(Debug)]
pub struct Tracing {
    pub sampler: Sampler,
    pub exporter: Arc<Exporter>,
    pub jwt_subject: bool,
    pub cell: Option<Arc<str>>,
}

/// A listener's: the generation's tracing, and whether incoming contexts are continued.
#[derive(Debug, Clone)]
pub struct ListenerTracing {
    pub tracing: Arc<Tracing>,
    pub continue_incoming: bool,
}

/// One request's trace, from its head to its answer.
pub struct RequestTrace {
    trace_id: TraceId,
    server: SpanId,
    client: SpanId,
    parent: Option<SpanId>,
    link: Option<TraceParent>,
    state: Option<HeaderValue>,
    /// The request came with a `tracestate` (removed upstream unless continued).
    had_state: bool,
    sampled: bool,
}

/// What a finished request tells its spans.
pub struct Finished<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub scheme: &'static str,
    pub protocol: &'static str,
    pub status: StatusCode,
    pub error: Option<&'static str>,
    pub listener: &'a Arc<str>,
    pub route: &'a Arc<str>,
    pub cluster: &'a Arc<str>,
    pub peer: Option<&'a str>,
    pub client_ip: &'a str,
    pub request_id: &'a str,
    /// The verified JWT's `sub`.
    pub subject: Option<&'a str>,
    /// The authorization verdict and its rule.
    pub authz: Option<(&'static str, &'a str)>,
    /// The route's rate limit let the request through.
    pub rate_allowed: bool,
    /// The upstream exchange, when there was one.
    pub upstream: Option<Upstream>,
}

/// The upstream exchange: when it began (it ends where the request does), the endpoint,
/// and the status it answered with.
pub struct Upstream {
    pub start: Instant,
    pub endpoint: Option<std::net::SocketAddr>,
    pub status: Option<StatusCode>,
}

/// What the request path keeps of a traced request until its answer (boxed there).
pub struct Traced {
    pub trace: RequestTrace,
    pub method: Method,
    /// The canonical target; the query is never put on a span.
    pub target: Option<http::uri::PathAndQuery>,
    pub version: http::Version,
    pub upstream: Option<Upstream>,
}

impl Traced {
    pub fn begin<B>(lt: &ListenerTracing, req: &http::Request<B>, sent_context: bool) -> Self {
        Self {
            trace: RequestTrace::begin(lt, req.headers(), sent_context),
            method: req.method().clone(),
            target: req.uri().path_and_query().cloned(),
            version: req.version(),
            upstream: None,
        }
    }
}

impl RequestTrace {
    /// Reads the incoming context as the listener trusts it and makes the request's ids.
    /// `sent_context`: normalization saw a `traceparent` or `tracestate` (else neither is
    /// looked up).
    pub fn begin(lt: &ListenerTracing, headers: &HeaderMap, sent_context: bool) -> Self {
        let (incoming, state) = if sent_context {
            (
                headers
                    .get(&TRACEPARENT)
                    .and_then(|v| TraceParent::parse(v.as_bytes())),
                headers.get(&TRACESTATE),
            )
        } else {
            (None, None)
        };
        let had_state = state.is_some();
        let (server, client) = SpanId::pair();
        match incoming {
            Some(p) if lt.continue_incoming => Self {
                trace_id: p.trace_id,
                server,
                client,
                parent: Some(p.parent_id),
                link: None,
                state: state.filter(|v| v.len() <= MAX_TRACESTATE).cloned(),
                had_state,
                sampled: lt.tracing.sampler.sampled(Some(&p), &p.trace_id),
            },
            _ => {
                let trace_id = TraceId::random();
                Self {
                    trace_id,
                    server,
                    client,
                    parent: None,
                    link: incoming,
                    state: None,
                    had_state,
                    sampled: lt.tracing.sampler.sampled(None, &trace_id),
                }
            }
        }
    }

    /// Whether the request's spans are to be exported: sampled, or failed with errors kept.
    pub fn wanted(&self, lt: &ListenerTracing, failed: bool) -> bool {
        self.sampled || (failed && lt.tracing.sampler.errors)
    }

    /// The upstream request's `traceparent`: this trace, the client span as its parent.
    pub fn header(&self) -> [u8; 55] {
        TraceParent {
            trace_id: self.trace_id,
            parent_id: self.client,
            flags: if self.sampled { SAMPLED } else { 0 },
        }
        .encode()
    }

    /// Whether the request's `tracestate` is to be left out upstream: it came with one and
    /// this trace is not the one it belongs to. A continued trace's goes on as it came.
    pub fn drops_state(&self) -> bool {
        self.had_state && self.state.is_none()
    }

    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// Exports the request's spans (call when `wanted`): it began at `start` and ended at
    /// `end`. They are written as OTLP straight into the exporter's buffer, from the
    /// request's own fields (nothing copied into owned records first).
    pub fn finish(self, lt: &ListenerTracing, start: Instant, end: Instant, f: Finished<'_>) {
        let t = &lt.tracing;
        let spans = 1 + usize::from(f.upstream.is_some());
        t.exporter
            .write(spans, |out| self.write(t, start, end, &f, out));
    }

    fn write(
        &self,
        t: &Tracing,
        start: Instant,
        end: Instant,
        f: &Finished<'_>,
        out: &mut Vec<u8>,
    ) {
        let clock = WallClock::at(end);
        let end = clock.unix(end);
        let method = f.method.as_str();
        let route: &str = f.route;
        let name: &[&str] = if route.is_empty() {
            &[method]
        } else {
            &[method, " ", route]
        };
        let mut w = SpanWriter::begin(
            out,
            &SpanHead {
                trace_id: self.trace_id,
                span_id: self.server,
                parent: self.parent,
                name,
                kind: Kind::Server,
                start_unix_nanos: clock.unix(start),
                end_unix_nanos: end,
            },
        );
        if let Some(ts) = self.state.as_ref().and_then(|s| s.to_str().ok()) {
            w.trace_state(ts);
        }
        w.str("http.request.method", method);
        w.str("url.path", f.path);
        w.str("url.scheme", f.scheme);
        w.str("network.protocol.version", f.protocol);
        w.int("http.response.status_code", i64::from(f.status.as_u16()));
        w.str("client.address", f.client_ip);
        w.str("membrane.listener", f.listener);
        w.str("membrane.request_id", f.request_id);
        if !route.is_empty() {
            w.str("http.route", route);
            w.str("membrane.route", route);
        }
        if !f.cluster.is_empty() {
            w.str("membrane.cluster", f.cluster);
        }
        if let Some(c) = &t.cell {
            w.str("membrane.cell", c);
        }
        if let Some(p) = f.peer {
            w.str("membrane.peer.spiffe_id", p);
        }
        if t.jwt_subject
            && let Some(s) = f.subject
        {
            w.str("enduser.id", s);
        }
        if let Some((verdict, rule)) = f.authz {
            w.str("membrane.authz.decision", verdict);
            w.str("membrane.authz.rule", rule);
        }
        let limited = f.error == Some("rate_limited");
        if limited || f.rate_allowed {
            let outcome = if limited { "limited" } else { "allowed" };
            w.str("membrane.ratelimit.outcome", outcome);
        }
        if let Some(code) = f.error {
            w.str("error.type", code);
            w.str("membrane.error.code", code);
        }
        if let Some(link) = &self.link {
            w.link(link);
        }
        // Server spans are errors for 5xx; a refusal (4xx) carries its reason as
        // `error.type` but is not the gateway's failure (OpenTelemetry's HTTP conventions).
        if f.status.is_server_error() {
            w.error(f.error.unwrap_or("upstream_5xx"));
        }
        w.end();
        let Some(u) = &f.upstream else {
            return;
        };
        let mut w = SpanWriter::begin(
            out,
            &SpanHead {
                trace_id: self.trace_id,
                span_id: self.client,
                parent: Some(self.server),
                name: &[method],
                kind: Kind::Client,
                start_unix_nanos: clock.unix(u.start),
                end_unix_nanos: end,
            },
        );
        w.str("http.request.method", method);
        w.str("membrane.cluster", f.cluster);
        // The endpoint is `server.address` and `server.port`.
        if let Some(ep) = u.endpoint {
            let mut text = IpText::default();
            w.str("server.address", text.of(ep.ip()));
            w.int("server.port", i64::from(ep.port()));
        }
        if let Some(s) = u.status {
            w.int("http.response.status_code", i64::from(s.as_u16()));
        }
        if u.status.is_none() {
            let code = f.error.unwrap_or("upstream_failed");
            w.str("error.type", code);
            w.error(code);
        }
        w.end();
    }
}

/// An address as text without allocating; IPv4 by hand (the formatting machinery costs
/// several hundred instructions per call).
#[derive(Default)]
struct IpText {
    v4: [u8; 15],
    v6: String,
}

impl IpText {
    fn of(&mut self, ip: std::net::IpAddr) -> &str {
        match ip {
            std::net::IpAddr::V4(v4) => {
                let mut n = 0;
                for (i, o) in v4.octets().iter().enumerate() {
                    if i > 0 {
                        self.v4[n] = b'.';
                        n += 1;
                    }
                    if *o >= 100 {
                        self.v4[n] = b'0' + o / 100;
                        n += 1;
                    }
                    if *o >= 10 {
                        self.v4[n] = b'0' + (o / 10) % 10;
                        n += 1;
                    }
                    self.v4[n] = b'0' + o % 10;
                    n += 1;
                }
                std::str::from_utf8(&self.v4[..n]).unwrap_or("")
            }
            std::net::IpAddr::V6(v6) => {
                self.v6 = v6.to_string();
                &self.v6
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv4_text_matches_display() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.30.255", "192.168.100.9"] {
            let a: std::net::IpAddr = ip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
            assert_eq!(super::IpText::default().of(a), ip);
        }
        let v6: std::net::IpAddr = "::1"
            .parse()
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        assert_eq!(super::IpText::default().of(v6), "::1");
    }
}
