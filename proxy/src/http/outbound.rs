//! A request on its way to its cluster and its response on the way back: hop-by-hop
//! headers, forwarding headers, the head made fit for the upstream's protocol, and an
//! accepted protocol switch handed to the connection loop.

use super::body::{ProxyBody, RequestBody};
use super::error::ProxyError;
use super::headers::{self, RequestId, VIA_HTTP1, VIA_HTTP2};
use crate::config::UpstreamProtocol;
use crate::context::ConnContext;
use crate::snapshot::Listener;
use crate::upstream::{self, Cluster, Forwarding, UpstreamBody};
use http::header;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use std::time::Duration;
use tokio::sync::oneshot;

/// What a forwarded request's response needs from the request.
pub(super) struct Back {
    /// The version the client spoke, which its response is given.
    pub version: Version,
    /// Where the upstream side of an accepted protocol switch goes (Membrane's HTTP/1.x
    /// loop tunnels it once the 101 is out).
    pub upgrade: Option<oneshot::Sender<hyper::upgrade::OnUpgrade>>,
}

/// Readies a request for its cluster: hop-by-hop headers out, the forwarding headers
/// decided, the head made fit for the upstream's protocol.
#[allow(clippy::too_many_arguments)]
pub(super) fn outbound<'a>(
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
        // Set by the request path when the listener traces.
        trace: None,
        drop_tracestate: false,
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
        parts: upstream::Head::Owned(parts),
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
pub(super) fn respond(
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
