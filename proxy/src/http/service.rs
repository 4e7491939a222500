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

use super::body::{ProxyBody, RequestBody};
use super::decide::{Decision, canonical, decide};
use super::error::ProxyError;
use super::headers;
use super::outbound::respond;
use super::phases::PolicyNote;
use crate::access_log;
use crate::context::ConnContext;
use crate::deadline::Deadline;
use crate::snapshot::Snapshot;
use crate::upstream;
use http::header::HeaderValue;
use http::{Request, Response, Version};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

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
    // Traces: the context is read before the phases (which move the request on).
    // Boxed: the request's future holds one pointer for it, traced or not.
    let mut traced = listener.tracing.as_ref().map(|lt| {
        let sent = normalized.as_ref().map_or(true, |n| n.fields.trace_context);
        Box::new(crate::trace::Traced::begin(lt, &req, sent))
    });
    let logged = listener.access_log.is_some().then(|| {
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
    let mut sent_at = None;
    // The cluster a traced request went to (its endpoints name the client spans').
    let mut upstream_cluster = None;
    let outcome = match decided {
        Ok((Decision::Answer(resp), m)) => Ok((resp, m)),
        Ok((
            Decision::Forward {
                cluster,
                mut out,
                back,
            },
            m,
        )) => {
            if let Some(t) = &traced {
                out.fwd.trace = Some(t.trace.header());
                out.fwd.drop_tracestate = t.trace.drops_state();
            }
            // The exchange's time ends where the request's does (one clock read less).
            let at = Instant::now();
            // A cluster that may retry times each attempt itself.
            if cluster.resilience.is_none() {
                sent_at = Some(at);
            }
            let trail = traced.as_mut().map(|t| &mut t.trail);
            let sent = upstream::send(cluster, out, deadline, at, trail).await;
            if let Some(t) = traced.as_mut() {
                t.upstream = Some(crate::trace::Upstream {
                    start: t.trail.last_start.unwrap_or(at),
                    endpoint: sent.as_ref().ok().map(|s| s.2),
                    status: sent.as_ref().ok().map(|s| s.0.status()),
                });
                upstream_cluster = Some(cluster);
            }
            match sent {
                Ok((resp, in_flight, _)) => {
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
            let trace_id = traced.as_ref().map(|t| t.trace.trace_id());
            (
                e.into_response_traced(&request_id.value, trace_id.as_ref()),
                metrics,
            )
        }
    };
    let end = Instant::now();
    let elapsed = end - start;
    metrics.record(resp.status(), elapsed);
    if let Some(at) = sent_at {
        metrics.record_upstream(end - at);
    }
    let mut resp = resp;
    if let Some(v) = &note.rate {
        // Allowed requests on a limited route learn their budget too.
        let h = resp.headers_mut();
        h.insert("ratelimit-limit", HeaderValue::from(v.limit));
        h.insert("ratelimit-remaining", HeaderValue::from(v.remaining));
        h.insert("ratelimit-reset", HeaderValue::from(v.reset_secs));
    }
    let peer = ctx.tls.as_ref().and_then(|t| t.identity.spiffe.as_ref());
    if let (Some((method, path, version)), Some(log)) = (logged, &listener.access_log)
        && log.wants(error.is_some())
    {
        let trace_id = traced.as_ref().map(|t| t.trace.trace_id().hex());
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
            trace_id: trace_id.as_deref(),
        };
        log.write(&line, &listener.metrics.access_log_dropped);
    }
    if let (Some(t), Some(lt)) = (traced, &listener.tracing)
        && t.trace.wanted(lt, error.is_some())
    {
        let t = *t;
        metrics.exemplar(elapsed, t.trace.trace_id().0);
        let exchange = t.upstream.map(|u| crate::trace::Exchange {
            took: end.saturating_duration_since(u.start),
            endpoint: u.endpoint,
            status: u.status,
            endpoints: upstream_cluster.map_or(&[][..], |c| &c.endpoints[..]),
            trail: &t.trail,
        });
        t.trace.finish(
            lt,
            end,
            crate::trace::Finished {
                method: &t.method,
                path: t.target.as_ref().map_or("/", |p| p.path()),
                scheme: if ctx.tls.is_some() { "https" } else { "http" },
                protocol: version_name(t.version),
                status: resp.status(),
                error,
                route: &metrics.route,
                names: &metrics.span_attributes,
                peer: peer.map(|p| p.as_str()),
                client_ip: ctx.client_ip.to_str().unwrap_or(""),
                request_id: request_id.value.to_str().unwrap_or(""),
                subject: note.subject.as_deref(),
                authz: note
                    .decision
                    .as_ref()
                    .map(|d| (d.verdict.as_str(), d.rule.as_str())),
                rate_allowed: note.rate.is_some(),
                elapsed,
                upstream: exchange,
            },
        );
    }
    resp
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
