//! The request path. The phases run in a fixed order, each a plain step:
//!
//! 1. take the config snapshot once (the whole request sees one generation)
//! 2. check header limits (431) and read the host (400 when missing)
//! 3. route: virtual host by host, then first matching route (404)
//! 4. policy: JWT authentication, authorization, rate limit (`phases`)
//! 5. act: direct response, redirect, or forward
//! 6. forward: rewrite, strip hop-by-hop headers, decide forwarding headers, send to the
//!    cluster (load balancer, pool, timeouts), pass an Upgrade through
//! 7. response: strip hop-by-hop headers, record metrics, write the access log
//!
//! Only the exchange with the upstream in step 6 is awaited; everything before and after
//! it is a plain function. A future holds its callees' futures inline and is moved by value
//! on its way down, so every level of `async fn` between the connection loop and the socket
//! adds its size to each request's copies.

use super::body::ProxyBody;
use super::body::RequestBody;
use super::error::ProxyError;
use super::headers::{self, RequestId, VIA_HTTP1, VIA_HTTP2};
use super::phases::{self, PolicyNote};
use crate::access_log::{self, AccessLogTarget};
use crate::config::UpstreamProtocol;
use crate::context::ConnContext;
use crate::deadline::Deadline;
use crate::metrics::RouteMetrics;
use crate::normalize::Normalized;
use crate::route::RequestView;
use crate::snapshot::{Action, Listener, RouteEntry, Snapshot};
use crate::upstream::{self, Cluster, Forwarding, UpstreamBody};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Serves one request. Never fails: every error becomes a response.
pub async fn handle(
    ctx: Arc<ConnContext>,
    req: Request<RequestBody>,
) -> Result<Response<ProxyBody>, Infallible> {
    let snapshot = ctx.state.load_full();
    Ok(serve(&ctx, &snapshot, req, None).await)
}

/// The same, for a caller that keeps the connection's context and a current config
/// snapshot alive for the whole request (Membrane's HTTP/1.x loop, which caches the
/// snapshot and reloads it only when a new generation is in): no reference count to touch
/// per request. `deadline`: the connection's coarse deadline, to bound the upstream
/// exchange with instead of a tokio timer of its own.
pub async fn serve(
    ctx: &ConnContext,
    snapshot: &Snapshot,
    mut req: Request<RequestBody>,
    deadline: Option<&mut Deadline>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let Some(listener) = snapshot.listeners.get(&ctx.listener) else {
        let id = headers::request_id(req.headers(), true);
        return ProxyError::ListenerGone(ctx.listener.to_string()).into_response(&id.value);
    };
    // Normalize once, first: everything after this (routing, policy, the access log, the
    // upstream) sees the one canonical form of the request, never the raw one. (`req` is
    // changed where it lies: a `let mut` copy of it cost a 250-byte memcpy per request.)
    let normalized = canonical(ctx, listener, &mut req);
    // Normalization's pass over the field names says whether the client sent an id.
    let sent_id = normalized.as_ref().map_or(true, |n| n.fields.request_id);
    let request_id = headers::request_id(req.headers(), sent_id);
    let logged = (listener.access_log != AccessLogTarget::Off).then(|| {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        (
            req.method().clone(),
            access_log::redact_query(target),
            req.version(),
        )
    });
    let mut error = None;
    let mut note = PolicyNote::default();
    // The phases before and after the upstream exchange are plain functions: only the
    // exchange is awaited here, so the request's future stays small (see `upstream::send`).
    let decided = match normalized {
        Ok(n) => decide(ctx, listener, req, n, &request_id, &mut note),
        Err(e) => Err((e, &listener.unrouted)),
    };
    let outcome = match decided {
        Ok((Decision::Answer(resp), m)) => Ok((resp, m)),
        Ok((Decision::Forward { cluster, out, back }, m)) => {
            match upstream::send(cluster, out, deadline).await {
                Ok((resp, in_flight)) => {
                    Ok((respond(resp, in_flight, back, cluster.body_idle_timeout), m))
                }
                Err(e) => Err((e.into(), m)),
            }
        }
        Err(refused) => Err(refused),
    };
    let (resp, metrics) = match outcome {
        Ok(ok) => ok,
        Err((e, metrics)) => {
            tracing::debug!(listener = %ctx.listener, request_id = ?request_id.value, error = %e, "request failed");
            error = Some(e.status_and_code().1);
            (e.into_response(&request_id.value), metrics)
        }
    };
    let elapsed = start.elapsed();
    metrics.record(resp.status(), elapsed);
    let mut resp = resp;
    if let Some(v) = &note.rate {
        // Allowed requests on a limited route learn their budget too.
        let h = resp.headers_mut();
        h.insert("ratelimit-limit", HeaderValue::from(v.limit));
        h.insert("ratelimit-remaining", HeaderValue::from(v.remaining));
        h.insert("ratelimit-reset", HeaderValue::from(v.reset_secs));
    }
    if let Some((method, path, version)) = logged {
        let peer = ctx.tls.as_ref().and_then(|t| t.identity.spiffe.as_ref());
        let line = access_log::Line {
            ts: access_log::timestamp(),
            listener: &ctx.listener,
            route: &metrics.route,
            cluster: &metrics.cluster,
            method: method.as_str(),
            path: &path,
            protocol: version_name(version),
            status: resp.status().as_u16(),
            error,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            request_id: request_id.value.to_str().unwrap_or(""),
            client: ctx.client_ip.to_str().unwrap_or(""),
            peer: peer.map(|p| p.as_str()),
            peer_cell: peer.and_then(|p| p.cell()),
            subject: note.subject.as_deref(),
            authz: note.decision.as_ref().map(|d| d.verdict.as_str()),
            authz_rule: note.decision.as_ref().map(|d| d.rule.as_str()),
        };
        access_log::write(
            listener.access_log,
            &line,
            &listener.metrics.access_log_dropped,
        );
    }
    resp
}

/// The request in its one canonical form (`normalize`), less the fields only this
/// listener's gateway sets (`owned_headers`). First thing on every request.
fn canonical(
    ctx: &ConnContext,
    listener: &Listener,
    req: &mut Request<RequestBody>,
) -> Result<Normalized, ProxyError> {
    let n = crate::normalize::request(req, &listener.normalization, ctx.tls.is_some())?;
    for name in listener.owned_headers.iter() {
        req.headers_mut().remove(name);
    }
    for name in listener.inspected_headers.iter() {
        if req.headers().get_all(name).iter().nth(1).is_some() {
            return Err(
                crate::normalize::NormalizeError::Repeated(name.as_str().to_owned()).into(),
            );
        }
    }
    Ok(n)
}

/// What the request path decides for a request, without sending it: `membrane explain`.
pub struct DryRun<'a> {
    /// The matched route's name (empty when none matched).
    pub route: &'a str,
    /// The request as normalized: method, target and host, when it could be.
    pub normalized: Option<(String, String)>,
    pub result: Result<Planned<'a>, ProxyError>,
}

/// The action a request that passed every phase would get.
pub enum Planned<'a> {
    /// Answered by the gateway: a direct response or a redirect.
    Answer(StatusCode),
    /// Sent to `cluster` with this target.
    Forward {
        cluster: &'a Arc<Cluster>,
        target: String,
        timeout: Duration,
    },
}

/// Runs the same normalization, routing, policy and rewrite as a served request
/// (`serve`), and stops before anything is sent.
pub fn dry_run<'a>(
    ctx: &'a ConnContext,
    listener: &'a Listener,
    mut req: Request<RequestBody>,
    request_id: &'a RequestId,
    note: &mut PolicyNote,
) -> DryRun<'a> {
    let n = match canonical(ctx, listener, &mut req) {
        Ok(n) => n,
        Err(e) => {
            return DryRun {
                route: "",
                normalized: None,
                result: Err(e),
            };
        }
    };
    let target = req.uri().to_string();
    let normalized = Some((target, request_host(&req, n.host_len).to_owned()));
    let (result, m) = match decide(ctx, listener, req, n, request_id, note) {
        Ok((Decision::Answer(resp), m)) => (Ok(Planned::Answer(resp.status())), m),
        Ok((Decision::Forward { cluster, out, .. }, m)) => (
            Ok(Planned::Forward {
                cluster,
                target: out.parts.uri.to_string(),
                timeout: out.timeout,
            }),
            m,
        ),
        Err((e, m)) => (Err(e), m),
    };
    DryRun {
        route: &m.route,
        normalized,
        result,
    }
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

/// What the phases up to the action decided.
enum Decision<'a> {
    /// Answered here: a direct response or a redirect.
    Answer(Response<ProxyBody>),
    /// To a cluster, with what the response needs from the request on its way back.
    Forward {
        cluster: &'a Arc<Cluster>,
        out: upstream::Outbound<'a>,
        back: Back,
    },
}

/// What a forwarded request's response needs from the request.
struct Back {
    /// The version the client spoke, which its response is given.
    version: Version,
    /// Where the upstream side of an accepted protocol switch goes (Membrane's HTTP/1.x
    /// loop tunnels it once the 101 is out).
    upgrade: Option<oneshot::Sender<hyper::upgrade::OnUpgrade>>,
}

type Decided<'a> = Result<(Decision<'a>, &'a RouteMetrics), (ProxyError, &'a RouteMetrics)>;

/// Limits, host, route, policy, then the route's action: a response made here, or a
/// request ready for its cluster.
fn decide<'a>(
    ctx: &'a ConnContext,
    listener: &'a Listener,
    mut req: Request<RequestBody>,
    n: Normalized,
    request_id: &'a RequestId,
    note: &mut PolicyNote,
) -> Decided<'a> {
    let unrouted = &listener.unrouted;
    check_limits(listener, &req).map_err(|e| (e, unrouted))?;
    let entry: &RouteEntry = {
        let view = RequestView {
            host: request_host(&req, n.host_len),
            path: req.uri().path(),
            method: req.method(),
            headers: req.headers(),
        };
        let Some(route) = listener.routes.find(&view) else {
            return Err((
                ProxyError::NoRoute {
                    host: view.host.to_owned(),
                    path: view.path.to_owned(),
                },
                unrouted,
            ));
        };
        &route.action
    };
    let m = &entry.metrics;
    // A rewritten path is made now, in normal form, so that policy can look at it too: a
    // request must not reach an upstream path that this listener's rules deny.
    let upstream_path = match &entry.action {
        Action::Forward {
            rewrite: Some(r), ..
        } => Some(
            rewritten_path(req.uri(), Some(r), &listener.normalization.path).map_err(|e| (e, m))?,
        ),
        _ => None,
    };
    // Authentication, then the claim headers set from what it verified, then authorization:
    // a rule about a claim header reads the verified value the upstream will get.
    let claims = match &entry.jwt {
        Some(j) => phases::authenticate(j, req.headers(), note).map_err(|e| (e, m))?,
        None => None,
    };
    if let Some(c) = &claims {
        phases::identity_headers(req.headers_mut(), entry, c);
    }
    if entry.rate_limit.is_some() || listener.authz.is_some() {
        let view = RequestView {
            host: request_host(&req, n.host_len),
            path: req.uri().path(),
            method: req.method(),
            headers: req.headers(),
        };
        let upstream = upstream_path.as_ref().map(PathAndQuery::path);
        phases::authorize(
            ctx,
            listener,
            entry,
            &view,
            upstream,
            claims.as_deref(),
            note,
        )
        .map_err(|e| (e, m))?;
    }
    match &entry.action {
        Action::Direct {
            status,
            body,
            content_type,
        } => {
            let mut resp = Response::new(ProxyBody::full(body.clone()));
            *resp.status_mut() = *status;
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
            Ok((Decision::Answer(resp), m))
        }
        Action::Redirect {
            status,
            scheme,
            host: to_host,
            path,
        } => {
            let location = redirect_location(&req, scheme, to_host, path);
            let mut resp = Response::new(ProxyBody::empty());
            *resp.status_mut() = *status;
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    resp.headers_mut().insert(header::LOCATION, v);
                    Ok((Decision::Answer(resp), m))
                }
                Err(_) => Err((
                    ProxyError::BadRequest("redirect target is not a valid URI"),
                    m,
                )),
            }
        }
        Action::Forward {
            cluster, timeout, ..
        } => outbound(
            ctx,
            listener,
            req,
            n.fields.hop_by_hop,
            cluster,
            upstream_path,
            *timeout,
            request_id,
        )
        .map(|(out, back)| (Decision::Forward { cluster, out, back }, m))
        .map_err(|e| (e, m)),
    }
}

/// Header limits are checked here, below hyper's own (larger) parser limits, so that an
/// oversized request gets a JSON 431 with a reason instead of a bare status.
fn check_limits(listener: &Listener, req: &Request<RequestBody>) -> Result<(), ProxyError> {
    let h = req.headers();
    if h.len() > listener.max_headers {
        return Err(ProxyError::TooManyHeaders {
            count: h.len(),
            limit: listener.max_headers,
        });
    }
    // Request line plus `name: value\r\n` for each header.
    let mut size = req.method().as_str().len()
        + 12
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    for (name, value) in h {
        size += name.as_str().len() + value.len() + 4;
    }
    if size > listener.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            size,
            limit: listener.max_header_bytes,
        });
    }
    Ok(())
}

/// The host the request is for, without port: `normalize` has left exactly one `Host` field
/// holding the canonical authority (or none, for HTTP/1.0 without a host), whose first
/// `host_len` bytes are the host (ASCII: it was checked there).
fn request_host(req: &Request<RequestBody>, host_len: usize) -> &str {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.get(..host_len))
        .unwrap_or("")
}

fn redirect_location(
    req: &Request<RequestBody>,
    scheme: &Option<Box<str>>,
    host: &Option<Box<str>>,
    path: &Option<Box<str>>,
) -> String {
    let scheme = scheme.as_deref().unwrap_or("http");
    let host = host.as_deref().unwrap_or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    });
    let p = path.as_deref().unwrap_or(req.uri().path());
    match req.uri().query() {
        Some(q) => format!("{scheme}://{host}{p}?{q}"),
        None => format!("{scheme}://{host}{p}"),
    }
}

/// Readies a request for its cluster: hop-by-hop headers out, the forwarding headers
/// decided, the head made fit for the upstream's protocol.
#[allow(clippy::too_many_arguments)]
fn outbound<'a>(
    ctx: &'a ConnContext,
    listener: &Listener,
    mut req: Request<RequestBody>,
    hop_by_hop: u8,
    cluster: &Cluster,
    upstream_path: Option<PathAndQuery>,
    timeout: Duration,
    request_id: &'a RequestId,
) -> Result<(upstream::Outbound<'a>, Back), ProxyError> {
    // Only Membrane's HTTP/1.x loop accepts protocol switches (hyper serves HTTP/2 only): it
    // marks such a request with a slot, where the upstream side goes for it to tunnel once
    // the 101 is out.
    let downstream_upgrade = req
        .extensions_mut()
        .remove::<super::UpgradeSlot>()
        .and_then(|slot| slot.take());
    // A switch to a protocol the listener does not allow goes on as a plain request,
    // without its `Upgrade` (and without the tunnel).
    let upgrade_to = downstream_upgrade
        .as_ref()
        .and_then(|_| headers::allowed_upgrade(req.headers(), &listener.upgrades));
    let downstream_upgrade = downstream_upgrade.filter(|_| upgrade_to.is_some());
    let upgrade = upgrade_to.is_some();
    if upgrade && cluster.protocol != UpstreamProtocol::Http1 {
        return Err(ProxyError::UpgradeNeedsHttp1(cluster.name.to_string()));
    }
    let (mut parts, body) = req.into_parts();
    let downstream_version = parts.version;

    let h = &mut parts.headers;
    headers::strip_known_hop_by_hop(h, upgrade_to.as_ref(), hop_by_hop);
    let fwd = Forwarding {
        client_ip: &ctx.client_ip,
        via: if downstream_version == Version::HTTP_2 {
            &VIA_HTTP2
        } else {
            &VIA_HTTP1
        },
        // A trusted hop's `x-forwarded-proto` (the scheme the client used in front of it)
        // is kept; otherwise the connection's.
        proto: if listener.normalization.trusted_hops > 0
            && h.contains_key(crate::upstream::forwarding::X_FORWARDED_PROTO)
        {
            None
        } else {
            Some(&ctx.scheme)
        },
        request_id: (!request_id.from_client).then_some(&request_id.value),
        client_cert: ctx.tls.as_ref().and_then(|t| t.xfcc.as_ref()),
    };

    match cluster.protocol {
        UpstreamProtocol::Http1 => {
            // `normalize` left an origin-form target and one canonical `Host`, whatever
            // the client's version and form: both go out as they are, unless rewritten.
            if let Some(pq) = upstream_path {
                parts.uri = Uri::from(pq);
            }
            parts.version = Version::HTTP_11;
        }
        UpstreamProtocol::Http2 => {
            let path_and_query = match upstream_path {
                Some(pq) => pq,
                None => parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            };
            let authority = h
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_default();
            h.remove(header::HOST);
            parts.version = Version::HTTP_2;
            parts.uri = Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path_and_query)
                .build()
                .map_err(|_| {
                    ProxyError::BadRequest("the request's host is not a valid authority")
                })?;
        }
    }
    let out = upstream::Outbound {
        parts,
        body,
        fwd,
        timeout,
        upgrade,
    };
    let back = Back {
        version: downstream_version,
        upgrade: downstream_upgrade,
    };
    Ok((out, back))
}

/// The upstream's response made the client's: its version, its hop-by-hop headers, and an
/// accepted protocol switch handed to the connection loop.
fn respond(
    resp: Response<UpstreamBody>,
    in_flight: upstream::InFlight,
    back: Back,
    idle_timeout: Duration,
) -> Response<ProxyBody> {
    let mut resp = resp;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(downstream) = back.upgrade
    {
        let _ = downstream.send(hyper::upgrade::on(&mut resp));
        // The upstream request's share of its endpoint ends with the exchange; the tunnel
        // is the connection loop's.
        drop(in_flight);
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, ProxyBody::empty());
    }

    let (mut parts, body) = resp.into_parts();
    // The client gets the version it spoke, whatever the upstream answered with (an
    // HTTP/1.0 status line would make hyper close a keep-alive connection).
    parts.version = back.version;
    // `Via` goes on requests only, as Envoy and nginx do by default: responses keep the
    // upstream's end-to-end headers as they were. Membrane's HTTP/1.1 client leaves the
    // hop-by-hop headers out as it parses; hyper's (HTTP/2) responses are stripped here.
    match &body {
        UpstreamBody::Hyper(_) | UpstreamBody::Tls1(_) => {
            headers::strip_hop_by_hop(&mut parts.headers, None)
        }
        // Membrane's HTTP/1.1 server writes these fields from their bytes; hyper's HTTP/2
        // server needs them as a map.
        UpstreamBody::Http1(h1) if back.version == Version::HTTP_2 => {
            parts.headers = h1.header_map();
        }
        UpstreamBody::Http1(_) => {}
    }
    Response::from_parts(parts, ProxyBody::upstream(body, in_flight, idle_timeout))
}

/// The path a rewriting route sends upstream: the matched prefix replaced, the rest and the
/// query kept, and the result normalized by the listener's rules (a rewrite to `/` of the
/// prefix `/api` would otherwise send `//x` for `/api/x`).
fn rewritten_path(
    uri: &Uri,
    rewrite: Option<&(usize, Box<str>)>,
    rules: &crate::normalize::PathRules,
) -> Result<PathAndQuery, ProxyError> {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let Some((strip, with)) = rewrite else {
        return Ok(original);
    };
    let path = original.path();
    let rest = path.get(*strip..).unwrap_or("");
    let mut joined = String::with_capacity(with.len() + rest.len() + 1);
    if !with.starts_with('/') {
        joined.push('/');
    }
    joined.push_str(with);
    joined.push_str(rest);
    let mut out = crate::normalize::path::normalize(&joined, rules)
        .map_err(|e| ProxyError::Malformed(e.into()))?
        .into_owned();
    if let Some(q) = original.query() {
        out.push('?');
        out.push_str(q);
    }
    PathAndQuery::from_maybe_shared(Bytes::from(out))
        .map_err(|_| ProxyError::BadRequest("the rewritten path is not a valid URI path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrite_keeps_the_rest_and_the_query() {
        let rules = crate::normalize::PathRules::default();
        let uri: Uri = "/api/v1/users?id=7".parse().unwrap();
        let r = (7usize, Box::<str>::from("/v2"));
        assert_eq!(
            rewritten_path(&uri, Some(&r), &rules).unwrap(),
            "/v2/users?id=7"
        );
        let r = (4usize, Box::<str>::from(""));
        assert_eq!(
            rewritten_path(&uri, Some(&r), &rules).unwrap(),
            "/v1/users?id=7"
        );
        let uri: Uri = "/api".parse().unwrap();
        assert_eq!(rewritten_path(&uri, Some(&r), &rules).unwrap(), "/");
        assert_eq!(rewritten_path(&uri, None, &rules).unwrap(), "/api");
        // A rewrite to `/` of a prefix without its slash leaves no `//` behind.
        let uri: Uri = "/api/admin".parse().unwrap();
        let r = (4usize, Box::<str>::from("/"));
        assert_eq!(rewritten_path(&uri, Some(&r), &rules).unwrap(), "/admin");
    }
}
