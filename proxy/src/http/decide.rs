//! The request path up to its action, without I/O: the canonical request (`normalize`,
//! owned and repeated headers), header limits, the route, the rewritten path, the policy
//! phases, then the action decided: an answer made here, or a request ready for its
//! cluster. Served requests (`service`) and `membrane explain` (`dry_run`) both go
//! through it.

use super::body::{ProxyBody, RequestBody};
use super::error::ProxyError;
use super::headers::RequestId;
use super::outbound::{Back, outbound};
use super::phases::{self, PolicyNote};
use super::rewrite::{redirect_location, rewritten_path};
use crate::context::ConnContext;
use crate::metrics::RouteMetrics;
use crate::normalize::Normalized;
use crate::route::RequestView;
use crate::snapshot::{Action, Listener, RouteEntry};
use crate::upstream::{self, Cluster};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response};
use std::sync::Arc;

/// The request in its one canonical form (`normalize`), less the fields only this
/// listener's gateway sets (`owned_headers`). First thing on every request.
pub(super) fn canonical(
    ctx: &ConnContext,
    listener: &Listener,
    req: &mut Request<RequestBody>,
) -> Result<Normalized, ProxyError> {
    // A peer revoked after its connection was made is refused here, on each request (new
    // connections are refused at the handshake).
    if ctx.revoked_by(listener) {
        return Err(ProxyError::PeerRevoked);
    }
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

/// What the phases up to the action decided.
pub(super) enum Decision<'a> {
    /// Answered here: a direct response or a redirect.
    Answer(Response<ProxyBody>),
    /// To a cluster, with what the response needs from the request on its way back.
    Forward {
        cluster: &'a Arc<Cluster>,
        out: upstream::Outbound<'a>,
        back: Back,
    },
}

pub(super) type Decided<'a> =
    Result<(Decision<'a>, &'a RouteMetrics), (ProxyError, &'a RouteMetrics)>;

/// Limits, host, route, policy, then the route's action: a response made here, or a
/// request ready for its cluster.
pub(super) fn decide<'a>(
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
pub(super) fn request_host(req: &Request<RequestBody>, host_len: usize) -> &str {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.get(..host_len))
        .unwrap_or("")
}
