//! `membrane explain`: what the proxy would do with one request, without sending anything.
//! It compiles the config as the proxy does and runs the same request path
//! (`http::dry_run`: normalization, routing, authentication, authorization, rate
//! limit, rewrite), then describes the action instead of taking it. What the TLS handshake
//! would refuse (no client certificate where one is required, a peer from another trust
//! domain) is said as such, before any HTTP.

use crate::compiler::{self, Loaded};
use crate::config::{ConfigError, ConfigErrors};
use crate::context::ConnContext;
use crate::http::dry_run::{self, Planned};
use crate::http::error::ProxyError;
use crate::http::phases::PolicyNote;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::tls::peer::PeerTls;
use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use membrane_policy::identity::{PeerIdentity, SpiffeId};
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct Question {
    /// `GET https://host/path`
    pub request: String,
    pub peer: Option<String>,
    pub jwt: Option<String>,
    pub headers: Vec<String>,
    pub listener: Option<String>,
    pub source: IpAddr,
}

/// The report, and whether the request would be let through to its action.
pub struct Answer {
    pub text: String,
    pub allowed: bool,
}

/// Why a question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The configuration does not compile.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The question itself is malformed (request line, header, token, peer, listener).
    #[error("{0}")]
    Question(String),
}

impl From<String> for ExplainError {
    fn from(s: String) -> Self {
        ExplainError::Question(s)
    }
}

impl From<&str> for ExplainError {
    fn from(s: &str) -> Self {
        ExplainError::Question(s.to_owned())
    }
}

impl From<ConfigError> for ExplainError {
    fn from(e: ConfigError) -> Self {
        ExplainError::Config(e.into())
    }
}

pub fn explain(config_path: &Path, q: &Question) -> Result<Answer, ExplainError> {
    let loaded = Loaded::read(config_path)?;
    let metrics = Metrics::new();
    let mut snap = compiler::compile(&loaded, None, &metrics).map_err(ConfigErrors)?;
    compiler::activate(&mut snap, config_path)?;
    let state = Arc::new(ArcSwap::from_pointee(snap));
    let snap = state.load_full();
    // A remote key set is fetched in the background: give it a moment.
    for p in snap.providers.values() {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while p.keys.age(crate::enforce::unix_now()).is_none()
            && p.keys.current().keys.is_empty()
            && std::time::Instant::now() < deadline
            && p.keys.source.starts_with("url:")
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (method, target) = q
        .request
        .trim()
        .split_once(' ')
        .ok_or("--request is `METHOD URL`, e.g. 'GET https://api.example.com/orders'")?;
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| format!("`{method}` is not a method"))?;
    let uri: Uri = target.parse().map_err(|e| format!("`{target}`: {e}"))?;
    if uri.host().is_none() {
        return Err(ExplainError::Question(
            "the URL needs a host: https://host/path".into(),
        ));
    }
    let https = uri.scheme_str() == Some("https");
    let mut headers = HeaderMap::new();
    for h in &q.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header `{h}` is not `name: value`"))?;
        let name = HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| format!("`{k}` is not a header name"))?;
        let value =
            HeaderValue::from_str(v.trim()).map_err(|_| format!("`{v}` is not a header value"))?;
        headers.append(name, value);
    }
    if let Some(t) = &q.jwt {
        let v =
            HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| "--jwt is not a token")?;
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let listener = pick_listener(&snap, q.listener.as_deref(), https, uri.port_u16())?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "listener  {} ({}{})",
        listener.name,
        listener.address,
        if listener.tls.is_some() { ", TLS" } else { "" }
    );
    let refuse = |mut out: String, why: String| {
        let _ = writeln!(out, "result    refused in the TLS handshake: {why}");
        Ok(Answer {
            text: out,
            allowed: false,
        })
    };
    if https && listener.tls.is_none() {
        return Err(format!(
            "listener `{}` is plain TCP; ask with http://",
            listener.name
        )
        .into());
    }
    if !https && listener.tls.is_some() {
        return Err(format!("listener `{}` is TLS; ask with https://", listener.name).into());
    }

    let mut ctx = ConnContext::new(listener.name.clone(), state, SocketAddr::new(q.source, 0));
    // What the handshake would decide comes first: a listener that requires a client
    // certificate, or one from its trust domains, refuses the connection before any HTTP.
    let client_auth = listener
        .tls
        .as_ref()
        .map_or(crate::config::ClientAuth::None, |t| t.client_auth);
    match (&q.peer, client_auth) {
        (None, crate::config::ClientAuth::Require) => {
            return refuse(out, "this listener requires a client certificate".into());
        }
        (Some(p), crate::config::ClientAuth::None) => {
            let _ = writeln!(
                out,
                "peer      {p} ignored: this listener does not ask for client certificates"
            );
        }
        (Some(p), _) => {
            let id = SpiffeId::parse(p).map_err(|e| format!("--peer {p}: {e}"))?;
            if let Some(t) = &listener.tls
                && !t.trust_domains.is_empty()
                && !t.trust_domains.iter().any(|d| d == id.trust_domain())
            {
                return refuse(
                    out,
                    format!(
                        "trust domain `{}` is not one of this listener's [{}]",
                        id.trust_domain(),
                        t.trust_domains.join(", ")
                    ),
                );
            }
            ctx.set_tls(PeerTls {
                identity: PeerIdentity {
                    spiffe: Some(id),
                    cert_sha256: None,
                },
                xfcc: None,
                sni: None,
            });
            let _ = writeln!(out, "peer      {p}");
        }
        (None, _) => {}
    }
    if https && ctx.tls.is_none() {
        // A TLS connection without a client certificate still is https.
        ctx.scheme = HeaderValue::from_static("https");
        ctx.tls = Some(PeerTls {
            identity: PeerIdentity {
                spiffe: None,
                cert_sha256: None,
            },
            xfcc: None,
            sni: None,
        });
    }

    let mut req = http::Request::new(crate::http::body::RequestBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let request_id = crate::http::headers::request_id(req.headers(), true);
    let mut note = PolicyNote::default();
    let run = dry_run::dry_run(&ctx, listener, req, &request_id, &mut note);
    if let Some((target, host)) = &run.normalized {
        let _ = writeln!(
            out,
            "request   host `{host}`, target `{target}` (normalized)"
        );
    }
    let entry = listener
        .routes
        .vhosts()
        .iter()
        .flat_map(|v| v.routes())
        .map(|r| &r.action)
        .find(|e| !run.route.is_empty() && &*e.name == run.route);
    match entry {
        None => {
            let _ = writeln!(out, "route     none");
        }
        Some(entry) => {
            let _ = writeln!(out, "route     {}", entry.name);
            match &entry.jwt {
                None => {
                    let _ = writeln!(out, "authn     none required");
                }
                Some(j) => {
                    let _ = writeln!(
                        out,
                        "authn     JWT from provider `{}`{}",
                        j.provider.name,
                        if j.required { "" } else { " (optional)" }
                    );
                }
            }
            if let Some(sub) = &note.subject {
                let _ = writeln!(out, "          valid token, sub `{sub}`");
            }
            let authn_failed = matches!(
                run.result,
                Err(ProxyError::Unauthorized(_) | ProxyError::BadRequest(_))
            );
            match (&listener.authz, &note.decision) {
                (_, Some(d)) => {
                    let policy = listener
                        .authz
                        .as_ref()
                        .map_or("", |a| a.policy.name.as_str());
                    let _ = writeln!(
                        out,
                        "authz     {} by rule `{}` of policy `{policy}`",
                        d.verdict.as_str(),
                        d.rule
                    );
                }
                (None, None) if !authn_failed => {
                    let _ = writeln!(out, "authz     no policy on this listener: allowed");
                }
                (_, None) => {
                    let _ = writeln!(out, "authz     not reached");
                }
            }
            if let Some(rl) = &entry.rate_limit {
                let l = rl.buckets.limit();
                let key = match &rl.key {
                    crate::config::RateKeyConfig::ClientIp => "client address".to_owned(),
                    crate::config::RateKeyConfig::Peer => "peer SPIFFE ID".to_owned(),
                    crate::config::RateKeyConfig::Claim(c) => format!("claim `{c}`"),
                };
                let _ = writeln!(
                    out,
                    "rate      {} per {}s, burst {}, by {key}",
                    l.requests, l.period_secs, l.burst
                );
            }
        }
    }
    let mut upstream_lines = Vec::new();
    let action = match run.result {
        Err(e) => {
            let (status, code) = e.status_and_code();
            let _ = writeln!(out, "result    {} {code}: {e}", status.as_u16());
            let allowed = matches!(e, ProxyError::RateLimited(_));
            return Ok(Answer { text: out, allowed });
        }
        Ok(Planned::Answer(status)) => format!("answered by the gateway ({})", status.as_u16()),
        Ok(Planned::Forward {
            cluster,
            target,
            timeout,
        }) => {
            upstream_lines = resilience(cluster);
            let eps: Vec<String> = cluster
                .endpoints
                .iter()
                .map(|e| e.addr.to_string())
                .collect();
            format!(
                "forward to cluster `{}` [{}]{} as `{target}`, timeout {timeout:?}",
                cluster.name,
                eps.join(", "),
                if cluster.tls.is_some() {
                    " over TLS"
                } else {
                    ""
                }
            )
        }
    };
    let _ = writeln!(out, "action    {action}");
    for line in upstream_lines {
        let _ = writeln!(out, "{line}");
    }
    Ok(Answer {
        text: out,
        allowed: true,
    })
}

/// The listener a request for `port` reaches: by name, else the one on that port (the
/// scheme's default when the URL has none). A URL that reaches no listener is an error,
/// not a guess at another one.
fn pick_listener<'a>(
    snap: &'a Snapshot,
    name: Option<&str>,
    https: bool,
    port: Option<u16>,
) -> Result<&'a crate::snapshot::Listener, ExplainError> {
    if let Some(n) = name {
        return snap
            .listeners
            .get(n)
            .map(|l| &**l)
            .ok_or_else(|| format!("no listener is named `{n}`").into());
    }
    let mut all: Vec<_> = snap.listeners.values().collect();
    all.sort_by_key(|l| l.name.clone());
    let listing = || {
        all.iter()
            .map(|l| format!("{} ({})", l.name, l.address))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let want = port.unwrap_or(if https { 443 } else { 80 });
    if let Some(l) = all.iter().find(|l| l.address.port() == want) {
        return Ok(l);
    }
    // No port in the URL and none on the default: the one listener of that kind, if there
    // is exactly one.
    if port.is_none() {
        let kind: Vec<_> = all.iter().filter(|l| l.tls.is_some() == https).collect();
        if let [one] = kind.as_slice() {
            return Ok(one);
        }
    }
    Err(format!(
        "no listener is on port {want}; listeners: [{}]; give the port in the URL or --listener",
        listing()
    )
    .into())
}

/// What a cluster does about failures, one line per mechanism configured.
fn resilience(c: &crate::upstream::Cluster) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(r) = &c.resilience {
        if let Some(p) = &r.retry {
            let mut on: Vec<String> = Vec::new();
            if p.connect_failure {
                on.push("connect failure (any method)".into());
            }
            if p.reset {
                on.push("reset".into());
            }
            if p.per_try_timeout_retried {
                on.push("per-try timeout".into());
            }
            on.extend(p.statuses().map(|s| s.to_string()));
            let methods = if p.non_idempotent {
                "any method"
            } else {
                "idempotent methods"
            };
            let per_try = p
                .per_try_timeout
                .map_or(String::new(), |t| format!(", per-try timeout {t:?}"));
            lines.push(format!(
                "retries   up to {} on {} ({methods}), backoff {:?}..{:?}{per_try}, bodies up to {} bytes replayed, budget {}% of requests + {}/s",
                p.max_retries,
                on.join(", "),
                p.backoff_base,
                p.backoff_max,
                p.body_limit,
                p.budget_ratio * 100.0,
                p.budget_min_per_second
            ));
        }
        if let Some(o) = &r.outlier {
            lines.push(format!(
                "outliers  ejected after {} 5xx or {} gateway errors in a row, for {:?} (times the ejections, up to {:?}), at most {}% out",
                o.limits.consecutive_5xx,
                o.limits.consecutive_gateway,
                o.limits.base_ejection,
                o.max_ejection,
                o.max_ejected_percent
            ));
            if let Some(sr) = &o.success_rate {
                lines.push(format!(
                    "          and every {} ms, a success rate below the mean by {} standard deviations (of {}+ endpoints with {}+ attempts)",
                    sr.interval_ms, sr.stdev_factor, sr.minimum_hosts, sr.request_volume
                ));
            }
        }
        let b = &r.breakers;
        let limits: Vec<String> = [
            ("requests", b.max_requests),
            ("pending", b.max_pending),
            ("retries", b.max_retries),
        ]
        .iter()
        .filter(|(_, v)| *v != usize::MAX)
        .map(|(n, v)| format!("{n} ≤ {v}"))
        .collect();
        if !limits.is_empty() {
            lines.push(format!("breakers  {}", limits.join(", ")));
        }
    }
    if let Some(h) = &c.health_check {
        let what = match &h.request {
            Some(_) => "HTTP",
            None => "TCP connect",
        };
        lines.push(format!(
            "checks    {what} every {:?} (+{}% jitter), down after {} failures, up after {} passes",
            h.interval, h.jitter_percent, h.unhealthy_threshold, h.healthy_threshold
        ));
    }
    let out: Vec<String> = c
        .endpoints
        .iter()
        .filter(|e| !e.health.available())
        .map(|e| e.addr.to_string())
        .collect();
    if !out.is_empty() {
        lines.push(format!("out now   {}", out.join(", ")));
    }
    lines
}
