//! Sending a request to a cluster: pick an endpoint, take a pooled connection or open one,
//! send, and give the connection back once the response body has been read to its end.

mod attempts;
pub mod breaker;
mod cluster;
mod connect;
mod counted;
mod exchange;
pub mod forwarding;
pub mod h1;
pub mod health;
pub mod health_check;
pub mod metrics;
pub mod pool;
pub mod retry;
mod tls_http1;
pub mod trail;

pub use cluster::{Cluster, ClusterShared, Endpoint, Outlier, Resilience, SuccessRate};
pub use forwarding::Forwarding;

use crate::body::{RequestBody, RequestBodyError};
use crate::config::LbPolicy;
use crate::deadline::Deadline;
use crate::h1::H1Error;
use bytes::Bytes;
use h1::H1Body;
use http_body::{Body, Frame, SizeHint};
use hyper::Response;
use hyper::body::Incoming;
use pool::PoolKey;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

/// Why a request could not be exchanged with the cluster.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cluster `{0}` has no endpoints")]
    NoEndpoint(Arc<str>),
    #[error("cluster `{cluster}` is at its limit of {limit} open connections")]
    Overflow { cluster: Arc<str>, limit: usize },
    #[error("cluster `{cluster}` is at its limit of {limit} {}", which.as_str())]
    Breaker {
        cluster: Arc<str>,
        which: metrics::Breaker,
        limit: usize,
    },
    #[error("connection to {addr} was refused")]
    ConnectRefused { addr: SocketAddr },
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls { addr: SocketAddr, reason: String },
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("{addr} sent no response headers within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("the exchange with {addr} failed: {source}")]
    Exchange {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("the exchange with {addr} failed: {reason}")]
    Reset { addr: SocketAddr, reason: String },
    #[error("{addr} sent an invalid response: {reason}")]
    Protocol {
        addr: SocketAddr,
        reason: &'static str,
    },
    #[error("reading the request body from the client failed: {0}")]
    RequestBody(RequestBodyError),
}

impl UpstreamError {
    /// The status the client gets and the stable error code clients, logs and spans name
    /// the failure by. Exhaustive on purpose.
    pub fn status_and_code(&self) -> (http::StatusCode, &'static str) {
        use http::StatusCode as S;
        match self {
            UpstreamError::NoEndpoint(_) => (S::SERVICE_UNAVAILABLE, "no_endpoint"),
            UpstreamError::Overflow { .. } | UpstreamError::Breaker { .. } => {
                (S::SERVICE_UNAVAILABLE, "upstream_overflow")
            }
            UpstreamError::ConnectRefused { .. } => (S::BAD_GATEWAY, "upstream_connect_refused"),
            UpstreamError::Connect { .. } => (S::BAD_GATEWAY, "upstream_connect_failed"),
            UpstreamError::ConnectTimeout { .. } => {
                (S::GATEWAY_TIMEOUT, "upstream_connect_timeout")
            }
            UpstreamError::Handshake { .. } | UpstreamError::Protocol { .. } => {
                (S::BAD_GATEWAY, "upstream_protocol_error")
            }
            UpstreamError::Tls { .. } => (S::BAD_GATEWAY, "upstream_tls_failed"),
            UpstreamError::Timeout { .. } => (S::GATEWAY_TIMEOUT, "upstream_timeout"),
            UpstreamError::Exchange { .. } | UpstreamError::Reset { .. } => {
                (S::BAD_GATEWAY, "upstream_reset")
            }
            UpstreamError::RequestBody(_) => (S::BAD_REQUEST, "bad_request"),
        }
    }

    /// What the client is told: the kind of failure, never the upstream's address, cluster
    /// or the lower layer's words (those go to the log). Exhaustive on purpose.
    pub fn client_message(&self) -> &'static str {
        match self {
            UpstreamError::NoEndpoint(_) => "no upstream endpoint is available",
            UpstreamError::Overflow { .. } => "the upstream is at its connection limit",
            UpstreamError::Breaker { .. } => "the upstream is at its limit of requests",
            UpstreamError::ConnectRefused { .. } => "the upstream refused the connection",
            UpstreamError::ConnectTimeout { .. } => "connecting to the upstream timed out",
            UpstreamError::Connect { .. } => "connecting to the upstream failed",
            UpstreamError::Tls { .. } => "the TLS handshake with the upstream failed",
            UpstreamError::Handshake { .. } => "the HTTP handshake with the upstream failed",
            UpstreamError::Timeout { .. } => "the upstream sent no response in time",
            UpstreamError::Exchange { .. } | UpstreamError::Reset { .. } => {
                "the upstream ended the exchange"
            }
            UpstreamError::Protocol { .. } => "the upstream sent an invalid response",
            UpstreamError::RequestBody(_) => "reading the request body failed",
        }
    }
}

/// A request in flight to one endpoint: dropping it ends the request's share of the
/// endpoint's load. Only least-request balancing reads those counts, so other clusters
/// count nothing (two atomic updates and a reference count less per request).
pub struct InFlight(Option<(Arc<Cluster>, usize)>);

impl InFlight {
    fn start(cluster: &Arc<Cluster>, endpoint: usize) -> Self {
        if cluster.lb != LbPolicy::LeastRequest {
            return InFlight(None);
        }
        cluster.endpoints[endpoint]
            .active
            .fetch_add(1, Ordering::Relaxed);
        InFlight(Some((cluster.clone(), endpoint)))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some((cluster, endpoint)) = &self.0 {
            cluster.endpoints[*endpoint]
                .active
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A response body from either client.
pub enum UpstreamBody {
    Http1(H1Body),
    Hyper(Incoming),
    /// hyper's HTTP/1.1 client over TLS; gives its connection back at the end.
    Tls1(tls_http1::PooledBody),
}

/// An error while streaming a response body from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    #[error(transparent)]
    Http1(#[from] H1Error),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error("the upstream sent nothing of the body for {0:?}")]
    Idle(Duration),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        match self.get_mut() {
            UpstreamBody::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Tls1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http1(b) => b.is_end_stream(),
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::Tls1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http1(b) => b.size_hint(),
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::Tls1(b) => b.size_hint(),
        }
    }
}

/// A request on its way to a cluster: head rewritten for the upstream, forwarding headers
/// decided (Membrane's HTTP/1.1 client writes them while encoding the head; hyper's paths
/// get them applied to the map).
pub struct Outbound<'a> {
    pub parts: Head<'a>,
    pub body: RequestBody,
    pub fwd: Forwarding<'a>,
    /// Bounds everything up to the response headers.
    pub timeout: Duration,
    /// The request asks for a protocol switch: it gets a connection of its own that is
    /// never pooled.
    pub upgrade: bool,
}

/// A request head on its way upstream: the request's own, or lent by a caller that may send
/// it again (retries). Membrane's HTTP/1.1 client only reads it; hyper's clients take a head
/// of their own, copied from a lent one. (Not boxed: the owned head is the common case,
/// moved once into the exchange.)
#[allow(clippy::large_enum_variant)]
pub enum Head<'a> {
    Owned(http::request::Parts),
    Lent(&'a http::request::Parts),
}

impl Head<'_> {
    pub fn get(&self) -> &http::request::Parts {
        match self {
            Head::Owned(p) => p,
            Head::Lent(p) => p,
        }
    }

    pub fn into_owned(self) -> http::request::Parts {
        match self {
            Head::Owned(p) => p,
            Head::Lent(p) => copy_head(p),
        }
    }
}

/// A copy of a request head (extensions are not carried: nothing on the way upstream reads
/// them but a protocol switch, which is never sent twice).
fn copy_head(p: &http::request::Parts) -> http::request::Parts {
    let mut r = http::Request::new(());
    *r.method_mut() = p.method.clone();
    *r.uri_mut() = p.uri.clone();
    *r.version_mut() = p.version;
    *r.headers_mut() = p.headers.clone();
    r.into_parts().0
}

/// Sends a request to an endpoint of `cluster`.
///
/// Every level of the request path holds the future of the level below it inline and moves
/// it once per request, so the plain HTTP/1.1 path is kept flat and small: this function,
/// the exchange on a pooled connection, and Membrane's client. Opening a connection and the
/// paths through hyper and rustls (upgrades, HTTP/2, TLS), whose futures are several KiB,
/// are boxed: an allocation for those requests instead of a larger copy for every one.
///
/// `at` is when the request was handed over (read by the caller for its own metrics): the
/// route's timeout across retries counts from there. A traced request passes a `trail`
/// for the attempts that were retried. The answer names the endpoint by its index in the
/// cluster.
pub async fn send(
    cluster: &Arc<Cluster>,
    out: Outbound<'_>,
    deadline: Option<&mut Deadline>,
    at: std::time::Instant,
    trail: Option<&mut trail::Trail>,
) -> Result<(Response<UpstreamBody>, InFlight, usize), UpstreamError> {
    if let Some(r) = &cluster.resilience {
        // Not boxed: a box cost an allocation and a copy of its future on every request of
        // these clusters. Held inline, it makes this future about 1.2 KiB larger (4.1 KiB),
        // which left the plain path within 1% of its instructions before (measured).
        return attempts::send(cluster, r, out, deadline, at, trail).await;
    }
    let ep = cluster
        .pick()
        .ok_or_else(|| UpstreamError::NoEndpoint(cluster.name.clone()))?;
    let endpoint = &cluster.endpoints[ep];
    let in_flight = InFlight::start(cluster, ep);
    let key = PoolKey {
        cluster: cluster.shared.id,
        addr: endpoint.addr,
        protocol: cluster.protocol,
        tls: cluster.tls_fingerprint,
    };
    let timeout = out.timeout;
    let mut bound = Bound::new(deadline, timeout);
    // Pinned where it is made: held once in this future, not moved into a wrapper.
    let mut f = std::pin::pin!(exchange::exchange(cluster, key, out));
    let sent = std::future::poll_fn(|cx| bound.poll_within(f.as_mut(), cx)).await;
    bound.end();
    match sent {
        Some(Ok(resp)) => Ok((resp, in_flight, ep)),
        Some(Err(e)) => Err(e),
        None => Err(UpstreamError::Timeout {
            addr: key.addr,
            after: timeout,
        }),
    }
}

/// What bounds the wait for a response head.
enum Bound<'a> {
    /// The connection's coarse deadline (Membrane's HTTP/1.x loop).
    Coarse(&'a mut Deadline),
    /// A tokio timer of the request's own (requests served by hyper).
    Timer(Pin<Box<tokio::time::Sleep>>),
}

impl<'a> Bound<'a> {
    /// `timeout` from now, on the connection's deadline when it has one.
    fn new(deadline: Option<&'a mut Deadline>, timeout: Duration) -> Self {
        match deadline {
            Some(d) => {
                d.arm(timeout);
                Bound::Coarse(d)
            }
            None => Bound::Timer(Box::pin(tokio::time::sleep(timeout))),
        }
    }

    /// Done waiting: the connection's deadline is free for its next phase.
    fn end(self) {
        if let Bound::Coarse(d) = self {
            d.disarm();
        }
    }

    /// Polls `f`, then the bound: `None` once the bound has passed first.
    fn poll_within<F: std::future::Future>(
        &mut self,
        f: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<F::Output>> {
        if let Poll::Ready(out) = f.poll(cx) {
            return Poll::Ready(Some(out));
        }
        match self {
            Bound::Coarse(d) => d.poll_expired(cx),
            Bound::Timer(t) => t.as_mut().poll(cx),
        }
        .map(|()| None)
    }
}
