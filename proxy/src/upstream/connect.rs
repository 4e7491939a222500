use super::UpstreamError;
use super::cluster::{Cluster, ClusterShared};
use super::pool::{self, PoolKey, Sender};
use crate::config::UpstreamProtocol;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::gauge::Gauge;
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpStream;

/// Counts an open upstream connection against its cluster's limit until dropped.
struct OpenConnection {
    shared: Arc<ClusterShared>,
    gauge: Gauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

/// Opens a new connection to one endpoint and spawns its driver task on this worker.
/// `upgrades`: the connection may be taken over by an Upgrade (WebSocket) tunnel.
pub(super) async fn open(
    cluster: &Cluster,
    key: PoolKey,
    upgrades: bool,
) -> Result<Sender, UpstreamError> {
    let addr = key.addr;
    let limit = cluster.max_connections;
    if cluster
        .shared
        .open_connections
        .fetch_add(1, Ordering::Relaxed)
        >= limit
    {
        cluster
            .shared
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
        return Err(UpstreamError::Overflow {
            cluster: cluster.name.clone(),
            limit,
        });
    }
    cluster.metrics.connections.inc();
    let guard = OpenConnection {
        shared: cluster.shared.clone(),
        gauge: cluster.metrics.connections.clone(),
    };
    let after = cluster.connect_timeout;
    let stream = match tokio::time::timeout(after, TcpStream::connect(addr)).await {
        Err(_) => {
            cluster.metrics.connect_timeout.inc();
            return Err(UpstreamError::ConnectTimeout { addr, after });
        }
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
            cluster.metrics.connect_refused.inc();
            return Err(UpstreamError::ConnectRefused { addr });
        }
        Ok(Err(source)) => {
            cluster.metrics.connect_other.inc();
            return Err(UpstreamError::Connect { addr, source });
        }
        Ok(Ok(s)) => s,
    };
    // Small writes (headers) must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    match key.protocol {
        UpstreamProtocol::Http1 => {
            let (sender, conn) = http1::Builder::new()
                .writev(false)
                .handshake(io)
                .await
                .map_err(|source| UpstreamError::Handshake { addr, source })?;
            tokio::spawn(async move {
                let _open = guard;
                let result = if upgrades {
                    conn.with_upgrades().await
                } else {
                    conn.await
                };
                if let Err(e) = result {
                    tracing::debug!(%addr, error = %e, "upstream connection closed with an error");
                }
            });
            Ok(Sender::Http1(sender))
        }
        UpstreamProtocol::Http2 => {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(|source| UpstreamError::Handshake { addr, source })?;
            tokio::spawn(async move {
                let _open = guard;
                if let Err(e) = conn.await {
                    tracing::debug!(%addr, error = %e, "upstream h2 connection closed with an error");
                }
            });
            pool::share_http2(key, &sender);
            Ok(Sender::Http2(sender))
        }
    }
}
