//! Traces of requests: a server span per request and a client span per upstream attempt,
//! exported over OTLP (`membrane_telemetry`).
//!
//! - **Context in**: a listener that continues (`trace_context: continue`, the default where
//!   client certificates are required) makes its server span the child of the incoming
//!   `traceparent` and keeps the caller's sampling decision and `tracestate`. One that
//!   restarts (the default elsewhere: the public side must not choose trace ids or force
//!   sampling) starts a new trace whose server span links to the incoming context.
//! - **Context out**: each upstream attempt gets `traceparent` with its client span's id, whether the
//!   request is sampled or not (so the next cell sees one trace), and `tracestate` only when
//!   the trace was continued. Without `tracing`, both headers pass through untouched.
//! - **Sampling**: the head decision is the parent's or the ratio's; with
//!   `always_sample_errors`, a failed or refused request is exported anyway (its caller
//!   may not have it: the upstream saw `sampled=0`).
//! - **Cost**: what every request pays with tracing configured is two header lookups (by
//!   prebuilt names), one random number and the outbound header; clocks are read and spans
//!   built only for requests that are exported (times are derived from the request's own
//!   `Instant`s then).

use crate::upstream::Endpoint;
use crate::upstream::trail::Trail;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use membrane_telemetry::context::{MAX_TRACESTATE, SAMPLED};
use membrane_telemetry::{
    Attributes, Exporter, Kind, Sampler, SpanHead, SpanId, SpanWriter, TraceId, TraceParent,
    WallClock,
};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// Prebuilt names: a lookup by `&str` parses and lower-cases the name on every request.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A generation's tracing, shared by its listeners.
#[derive(Debug)]
pub struct Tracing {
    pub sampler: Sampler,
    pub exporter: Arc<Exporter>,
    pub jwt_subject: bool,
    /// `membrane.cell` on every server span, encoded once (empty without a cell).
    pub cell: Attributes,
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
    /// The first upstream attempt's span; later attempts' are derived from it.
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
    /// The route, for the span's name.
    pub route: &'a str,
    /// The listener's, route's and cluster's names as attributes.
    pub names: &'a Attributes,
    pub peer: Option<&'a str>,
    pub client_ip: &'a str,
    pub request_id: &'a str,
    /// The verified JWT's `sub`.
    pub subject: Option<&'a str>,
    /// The authorization verdict and its rule.
    pub authz: Option<(&'static str, &'a str)>,
    /// The route's rate limit let the request through.
    pub rate_allowed: bool,
    /// How long the request took (the server span), to its end.
    pub elapsed: Duration,
    /// The upstream exchange, when there was one.
    pub upstream: Option<Exchange<'a>>,
}

/// The request's upstream attempts: the last one's time (it ends where the request does),
/// endpoint and status, and the attempts retried before it.
pub struct Exchange<'a> {
    pub took: Duration,
    pub endpoint: Option<usize>,
    pub status: Option<StatusCode>,
    pub endpoints: &'a [Endpoint],
    pub trail: &'a Trail,
}

/// The upstream exchange as the request path notes it until the request ends.
pub struct Upstream {
    /// When the last attempt began.
    pub start: Instant,
    pub endpoint: Option<usize>,
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
    /// Upstream attempts that were retried.
    pub trail: Trail,
}

impl Traced {
    pub fn begin<B>(lt: &ListenerTracing, req: &http::Request<B>, sent_context: bool) -> Self {
        Self {
            trace: RequestTrace::begin(lt, req.headers(), sent_context),
            method: req.method().clone(),
            target: req.uri().path_and_query().cloned(),
            version: req.version(),
            upstream: None,
            trail: Trail::default(),
        }
    }
}

/// Attributes whose values come from a short list, encoded once: the common methods,
/// schemes, protocol versions and rate-limit outcomes.
struct Fixed {
    methods: [(Method, Attributes); 7],
    http: Attributes,
    https: Attributes,
    versions: [(&'static str, Attributes); 3],
    allowed: Attributes,
    limited: Attributes,
}

static FIXED: LazyLock<Fixed> = LazyLock::new(|| {
    let one = |k: &str, v: &str| Attributes::builder().str(k, v).build();
    let method = |m: Method| {
        let a = one("http.request.method", m.as_str());
        (m, a)
    };
    let version = |v: &'static str| (v, one("network.protocol.version", v));
    Fixed {
        methods: [
            method(Method::GET),
            method(Method::POST),
            method(Method::HEAD),
            method(Method::PUT),
            method(Method::DELETE),
            method(Method::PATCH),
            method(Method::OPTIONS),
        ],
        http: one("url.scheme", "http"),
        https: one("url.scheme", "https"),
        versions: [version("HTTP/1.1"), version("HTTP/2"), version("HTTP/1.0")],
        allowed: one("membrane.ratelimit.outcome", "allowed"),
        limited: one("membrane.ratelimit.outcome", "limited"),
    }
});

impl Fixed {
    fn method(&self, w: &mut SpanWriter<'_>, m: &Method) {
        let i = match *m {
            Method::GET => 0,
            Method::POST => 1,
            Method::HEAD => 2,
            Method::PUT => 3,
            Method::DELETE => 4,
            Method::PATCH => 5,
            Method::OPTIONS => 6,
            _ => return w.str("http.request.method", m.as_str()),
        };
        w.attributes(&self.methods[i].1);
    }

    fn version(&self, w: &mut SpanWriter<'_>, v: &str) {
        match self.versions.iter().find(|(k, _)| *k == v) {
            Some((_, a)) => w.attributes(a),
            None => w.str("network.protocol.version", v),
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

    /// Exports the request's spans (call when `wanted`): a server span and a client span
    /// per upstream attempt, ended at `end`. They are written as OTLP straight into the
    /// exporter's buffer, from the request's own fields (nothing copied into owned records
    /// first); times are derived from durations the request path measured anyway.
    pub fn finish(self, lt: &ListenerTracing, end: Instant, f: Finished<'_>) {
        let t = &lt.tracing;
        let attempts = f.upstream.as_ref().map_or(0, |u| u.trail.attempts());
        t.exporter
            .write(1 + attempts, |out| self.write(t, end, &f, out));
    }

    fn write(&self, t: &Tracing, end: Instant, f: &Finished<'_>, out: &mut Vec<u8>) {
        let clock = WallClock::at(end);
        let end_unix = clock.unix(end);
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let fixed = &*FIXED;
        let method = f.method.as_str();
        let route = f.route;
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
                start_unix_nanos: end_unix.saturating_sub(nanos(f.elapsed)),
                end_unix_nanos: end_unix,
            },
        );
        if let Some(ts) = self.state.as_ref().and_then(|s| s.to_str().ok()) {
            w.trace_state(ts);
        }
        fixed.method(&mut w, f.method);
        w.str("url.path", f.path);
        w.attributes(if f.scheme == "https" {
            &fixed.https
        } else {
            &fixed.http
        });
        fixed.version(&mut w, f.protocol);
        w.int("http.response.status_code", i64::from(f.status.as_u16()));
        w.str("client.address", f.client_ip);
        w.str("membrane.request_id", f.request_id);
        w.attributes(f.names);
        w.attributes(&t.cell);
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
        if limited {
            w.attributes(&fixed.limited);
        } else if f.rate_allowed {
            w.attributes(&fixed.allowed);
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
        // Attempts retried: each a client span, in order.
        for (n, e) in u.trail.earlier.iter().enumerate() {
            let attempt = Attempt {
                span: self.client.nth(n as u32),
                start: clock.unix(e.start),
                end: clock.unix(e.end),
                endpoint: u.endpoints.get(e.endpoint).map(|ep| &ep.span_attributes),
                outcome: e.outcome,
            };
            self.attempt(out, fixed, f.method, &attempt);
        }
        let last = Attempt {
            span: self.client.nth(u.trail.earlier.len() as u32),
            start: end_unix.saturating_sub(nanos(u.took)),
            end: end_unix,
            endpoint: u
                .endpoint
                .and_then(|i| u.endpoints.get(i))
                .map(|ep| &ep.span_attributes),
            outcome: match u.status {
                Some(s) => Ok(s.as_u16()),
                None => Err(f.error.unwrap_or("upstream_failed")),
            },
        };
        self.attempt(out, fixed, f.method, &last);
    }

    /// One upstream attempt's client span. A status of 400 or more is an error on a
    /// client span (OpenTelemetry's HTTP conventions), its `error.type` the status.
    fn attempt(&self, out: &mut Vec<u8>, fixed: &Fixed, method: &Method, a: &Attempt<'_>) {
        let mut w = SpanWriter::begin(
            out,
            &SpanHead {
                trace_id: self.trace_id,
                span_id: a.span,
                parent: Some(self.server),
                name: &[method.as_str()],
                kind: Kind::Client,
                start_unix_nanos: a.start,
                end_unix_nanos: a.end,
            },
        );
        fixed.method(&mut w, method);
        if let Some(ep) = a.endpoint {
            w.attributes(ep);
        }
        match a.outcome {
            Ok(status) => {
                w.int("http.response.status_code", i64::from(status));
                if status >= 400 {
                    // Statuses are three digits (100-999).
                    let digits = [
                        b'0' + (status / 100 % 10) as u8,
                        b'0' + (status / 10 % 10) as u8,
                        b'0' + (status % 10) as u8,
                    ];
                    let code = std::str::from_utf8(&digits).unwrap_or("error");
                    w.str("error.type", code);
                    w.error(code);
                }
            }
            Err(code) => {
                w.str("error.type", code);
                w.error(code);
            }
        }
        w.end();
    }
}

/// A client span's own fields.
struct Attempt<'a> {
    span: SpanId,
    start: u64,
    end: u64,
    endpoint: Option<&'a Attributes>,
    outcome: Result<u16, &'static str>,
}
