//! Sending a request to a cluster: pick an endpoint, take a pooled connection or open one,
//! send, and give the connection back once the response body has been read to its end.

mod cluster;
mod connect;
pub mod forwarding;
pub mod h1;
pub mod pool;
mod tls_http1;

pub use cluster::{Cluster, ClusterShared, Endpoint};
pub use forwarding::Forwarding;

use crate::config::UpstreamProtocol;
use crate::http::body::{RequestBody, RequestBodyError};
use bytes::Bytes;
use h1::{H1Body, H1Error};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::{Request, Response};
use pool::{PoolKey, Sender};
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
    fn from_h1(addr: SocketAddr, e: H1Error) -> Self {
        match e {
            H1Error::Protocol(reason) => UpstreamError::Protocol { addr, reason },
            H1Error::RequestBody(e) => UpstreamError::RequestBody(*e),
            e @ (H1Error::Io(_) | H1Error::ClosedBeforeResponse) => UpstreamError::Reset {
                addr,
                reason: e.to_string(),
            },
        }
    }
}

/// A request in flight to one endpoint: dropping it ends the request's share of the
/// endpoint's load (least-request balancing counts these).
pub struct InFlight {
    cluster: Arc<Cluster>,
    endpoint: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.cluster.endpoints[self.endpoint]
            .active
            .fetch_sub(1, Ordering::Relaxed);
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

/// Sends `req` to an endpoint of `cluster`. `timeout` bounds everything up to the response
/// headers. `upgrade`: the request asks for a protocol switch, so it gets a connection of its
/// own that is never pooled.
pub async fn send(
    cluster: &Arc<Cluster>,
    req: Request<RequestBody>,
    fwd: &Forwarding,
    timeout: Duration,
    upgrade: bool,
) -> Result<(Response<UpstreamBody>, InFlight), UpstreamError> {
    let ep = cluster
        .pick()
        .ok_or_else(|| UpstreamError::NoEndpoint(cluster.name.clone()))?;
    let endpoint = &cluster.endpoints[ep];
    endpoint.active.fetch_add(1, Ordering::Relaxed);
    let in_flight = InFlight {
        cluster: cluster.clone(),
        endpoint: ep,
    };
    let key = PoolKey {
        cluster: cluster.shared.id,
        addr: endpoint.addr,
        protocol: cluster.protocol,
        tls: cluster.tls_fingerprint,
    };
    let exchange = exchange(cluster, key, req, fwd, upgrade);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(resp)) => Ok((resp, in_flight)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(UpstreamError::Timeout {
            addr: key.addr,
            after: timeout,
        }),
    }
}

async fn exchange(
    cluster: &Cluster,
    key: PoolKey,
    mut req: Request<RequestBody>,
    fwd: &Forwarding,
    upgrade: bool,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let addr = key.addr;
    if upgrade || cluster.protocol == UpstreamProtocol::Http2 || cluster.tls.is_some() {
        fwd.apply(req.headers_mut());
    }
    if upgrade {
        let mut sender = connect::open_upgrade(cluster, addr).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|source| UpstreamError::Exchange { addr, source })?;
        return Ok(resp.map(UpstreamBody::Hyper));
    }
    match cluster.protocol {
        UpstreamProtocol::Http1 if cluster.tls.is_some() => {
            tls_http1::exchange(cluster, key, req).await
        }
        UpstreamProtocol::Http1 => exchange_http1(cluster, key, req, fwd).await,
        UpstreamProtocol::Http2 => exchange_http2(cluster, key, req).await,
    }
}

async fn exchange_http1(
    cluster: &Cluster,
    key: PoolKey,
    req: Request<RequestBody>,
    fwd: &Forwarding,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let (parts, body) = req.into_parts();
    let mut body = (!body.is_end_stream()).then_some(body);
    // A pooled connection may have been closed by the upstream just now. A request without
    // body that got no byte of response is tried once more on a new connection; anything
    // else is not retried.
    for attempt in 0..2 {
        let (sender, reused) = connection(cluster, key, attempt).await?;
        let Sender::Http1(conn) = sender else { break };
        match h1::exchange(conn, key, &parts, fwd, body.take()).await {
            Ok(resp) => return Ok(resp.map(UpstreamBody::Http1)),
            Err(f) if f.retryable && reused => continue,
            Err(f) => return Err(UpstreamError::from_h1(key.addr, f.error)),
        }
    }
    Err(UpstreamError::Reset {
        addr: key.addr,
        reason: "no usable connection".into(),
    })
}

async fn exchange_http2(
    cluster: &Cluster,
    key: PoolKey,
    mut req: Request<RequestBody>,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let addr = key.addr;
    // As above: a request that was not sent on a pooled connection is retried once.
    for attempt in 0..2 {
        let (sender, reused) = connection(cluster, key, attempt).await?;
        let Sender::Http2(mut sender) = sender else {
            break;
        };
        if sender.ready().await.is_err() && reused {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok(resp.map(UpstreamBody::Hyper)),
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => req = unsent,
                _ => {
                    return Err(UpstreamError::Exchange {
                        addr,
                        source: e.into_error(),
                    });
                }
            },
        }
    }
    Err(UpstreamError::Reset {
        addr,
        reason: "no usable connection".into(),
    })
}

/// A connection for `key`: from this worker's pool on the first attempt, new otherwise (a
/// retry never reuses). The flag says whether it came from the pool.
async fn connection(
    cluster: &Cluster,
    key: PoolKey,
    attempt: u32,
) -> Result<(Sender, bool), UpstreamError> {
    if attempt == 0
        && let Some(pooled) = pool::checkout(&key, cluster.pool_idle_timeout)
    {
        return Ok((pooled, true));
    }
    Ok((connect::open(cluster, key).await?, false))
}
