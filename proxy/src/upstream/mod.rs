//! Sending a request to a cluster: pick an endpoint, take a pooled connection or open one,
//! send, and give the connection back once the response body has been read to its end.

mod cluster;
mod connect;
pub mod pool;

pub use cluster::{Cluster, ClusterShared, Endpoint};

use hyper::body::Incoming;
use hyper::{Request, Response};
use pool::{PoolKey, Sender};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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
}

/// A request in flight to one endpoint. Dropping it ends the request's share of the
/// endpoint's load and, if the response was read to its end, returns the connection to the
/// pool.
pub struct InFlight {
    cluster: Arc<Cluster>,
    endpoint: usize,
    reuse: Option<(PoolKey, Sender)>,
    complete: bool,
}

impl InFlight {
    /// The response body has been read to its end: the connection may serve another request.
    pub fn complete(&mut self) {
        self.complete = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.cluster.endpoints[self.endpoint]
            .active
            .fetch_sub(1, Ordering::Relaxed);
        if self.complete
            && let Some((key, sender)) = self.reuse.take()
        {
            pool::checkin(key, sender);
        }
    }
}

/// Sends `req` to an endpoint of `cluster`. `timeout` bounds everything up to the response
/// headers. `upgrade`: the request asks for a protocol switch, so it gets a connection of its
/// own that is never pooled.
pub async fn send(
    cluster: &Arc<Cluster>,
    req: Request<Incoming>,
    timeout: Duration,
    upgrade: bool,
) -> Result<(Response<Incoming>, InFlight), UpstreamError> {
    let ep = cluster
        .pick()
        .ok_or_else(|| UpstreamError::NoEndpoint(cluster.name.clone()))?;
    let endpoint = &cluster.endpoints[ep];
    endpoint.active.fetch_add(1, Ordering::Relaxed);
    let mut in_flight = InFlight {
        cluster: cluster.clone(),
        endpoint: ep,
        reuse: None,
        complete: false,
    };
    let key = PoolKey {
        cluster: cluster.shared.id,
        addr: endpoint.addr,
        protocol: cluster.protocol,
    };
    let exchange = exchange(cluster, key, req, upgrade, &mut in_flight);
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
    mut req: Request<Incoming>,
    upgrade: bool,
    in_flight: &mut InFlight,
) -> Result<Response<Incoming>, UpstreamError> {
    let addr = key.addr;
    // A pooled connection may have been closed by the upstream just now; a request that was
    // not sent on it is retried once on a new connection. A request that was sent is not.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let pooled = if upgrade || attempts > 1 {
            None
        } else {
            pool::checkout(&key, cluster.pool_idle_timeout)
        };
        let reused = pooled.is_some();
        let sender = match pooled {
            Some(s) => s,
            None => connect::open(cluster, key, upgrade).await?,
        };
        let result = match sender {
            Sender::Http1(mut s) => {
                if s.ready().await.is_err() && reused {
                    continue;
                }
                let r = s.try_send_request(req).await;
                if r.is_ok() && !upgrade {
                    in_flight.reuse = Some((key, Sender::Http1(s)));
                }
                r
            }
            Sender::Http2(mut s) => {
                if s.ready().await.is_err() && reused {
                    continue;
                }
                s.try_send_request(req).await
            }
        };
        match result {
            Ok(resp) => return Ok(resp),
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
}
