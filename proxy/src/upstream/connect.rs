use super::UpstreamError;
use super::breaker::{Held, Limit};
use super::cluster::{Cluster, OpenConnection, PoolKey};
use super::counted::Counted;
use super::h1::H1Conn;
use super::metrics::Breaker;
use super::metrics::ConnectFailure;
use super::pool::{self, Sender};
use crate::body::RequestBody;
use crate::config::UpstreamProtocol;
use crate::tls::client::ClientTls;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use tokio::net::TcpStream;

/// Opens a TCP connection to one endpoint of `cluster`, counted against its limit.
async fn connect_tcp(
    cluster: &Cluster,
    addr: SocketAddr,
) -> Result<(TcpStream, OpenConnection), UpstreamError> {
    // Requests waiting for a connection to open (a circuit breaker when limited).
    let _pending = match &cluster.resilience {
        Some(r) if r.breakers.max_pending != usize::MAX => Some(
            Held::take(&cluster.shared, Limit::Pending, r.breakers.max_pending)
                .ok_or_else(|| cluster.overflow(Limit::Pending, r.breakers.max_pending))?,
        ),
        _ => None,
    };
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
        cluster.metrics.overflowed(Breaker::Connections);
        return Err(UpstreamError::Overflow {
            cluster: cluster.name.clone(),
            limit,
        });
    }
    cluster.metrics.connections.inc();
    let guard = OpenConnection {
        shared: cluster.shared.clone(),
        gauge: cluster.metrics.connections.clone(),
        bytes: cluster.metrics.bytes.clone(),
    };
    let after = cluster.connect_timeout;
    let stream = match tokio::time::timeout(after, TcpStream::connect(addr)).await {
        Err(_) => {
            cluster.metrics.connect_failed(ConnectFailure::Timeout);
            return Err(UpstreamError::ConnectTimeout { addr, after });
        }
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
            cluster.metrics.connect_failed(ConnectFailure::Refused);
            return Err(UpstreamError::ConnectRefused { addr });
        }
        Ok(Err(source)) => {
            cluster.metrics.connect_failed(ConnectFailure::Other);
            return Err(UpstreamError::Connect { addr, source });
        }
        Ok(Ok(s)) => s,
    };
    // Small writes (headers) must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    Ok((stream, guard))
}

/// Opens a connection for Membrane's HTTP/1.1 client, or an HTTP/2 one (then shared through
/// this worker's pool), according to the key's protocol.
pub(super) async fn open(cluster: &Cluster, key: PoolKey) -> Result<Sender, UpstreamError> {
    let addr = key.addr;
    let (stream, guard) = connect_tcp(cluster, addr).await?;
    if let Some(tls) = &cluster.tls {
        let stream = connect_tls(cluster, tls, addr, stream).await?;
        let stream = Counted::new(stream, guard.bytes.clone());
        return match key.protocol {
            UpstreamProtocol::Http1 => {
                let (sender, conn) = http1::Builder::new()
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|source| UpstreamError::Handshake { addr, source })?;
                spawn_conn(addr, guard, conn);
                Ok(Sender::Tls1(sender))
            }
            UpstreamProtocol::Http2 => {
                let (sender, conn) = h2_client()
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|source| UpstreamError::Handshake { addr, source })?;
                spawn_conn(addr, guard, conn);
                pool::share_http2(key, &sender);
                Ok(Sender::Http2(sender))
            }
        };
    }
    match key.protocol {
        UpstreamProtocol::Http1 => Ok(Sender::Http1(Box::new(H1Conn::new(stream, guard)))),
        UpstreamProtocol::Http2 => {
            let stream = Counted::new(stream, guard.bytes.clone());
            let (sender, conn) = h2_client()
                .handshake(TokioIo::new(stream))
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

/// Runs the TLS handshake on a new upstream connection, within the cluster's connect
/// timeout; a failure is counted and reported with rustls' reason (a wrong SPIFFE ID, an
/// unknown CA, ...).
async fn connect_tls(
    cluster: &Cluster,
    tls: &ClientTls,
    addr: SocketAddr,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let after = cluster.connect_timeout;
    match tokio::time::timeout(after, connector.connect(tls.server_name.clone(), stream)).await {
        Err(_) => {
            cluster.metrics.connect_failed(ConnectFailure::Timeout);
            Err(UpstreamError::ConnectTimeout { addr, after })
        }
        Ok(Err(e)) => {
            cluster.metrics.connect_failed(ConnectFailure::Tls);
            tracing::debug!(%addr, error = %e, "upstream TLS handshake failed");
            Err(UpstreamError::Tls {
                addr,
                reason: e.to_string(),
            })
        }
        Ok(Ok(s)) => Ok(s),
    }
}

fn spawn_conn<F, E>(addr: SocketAddr, guard: OpenConnection, conn: F)
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        let _open = guard;
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "upstream connection closed with an error");
        }
    });
}

/// Opens a connection of its own, never pooled, for a request that asks for a protocol
/// switch; hyper's client carries the upgrade.
pub(super) async fn open_upgrade(
    cluster: &Cluster,
    addr: SocketAddr,
) -> Result<http1::SendRequest<RequestBody>, UpstreamError> {
    let (stream, guard) = connect_tcp(cluster, addr).await?;
    if let Some(tls) = &cluster.tls {
        let stream = connect_tls(cluster, tls, addr, stream).await?;
        let stream = Counted::new(stream, guard.bytes.clone());
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake { addr, source })?;
        spawn_conn(addr, guard, conn.with_upgrades());
        return Ok(sender);
    }
    let stream = Counted::new(stream, guard.bytes.clone());
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Handshake { addr, source })?;
    spawn_conn(addr, guard, conn.with_upgrades());
    Ok(sender)
}

/// hyper's HTTP/2 client with receive windows small enough that an upstream answering
/// a client that does not read cannot park megabytes here: 256 KiB per stream, 1 MiB per
/// connection (hyper's defaults: 2 MiB and 5 MiB). On loopback and in a data centre the
/// bandwidth-delay product is far below that, so throughput does not suffer.
fn h2_client() -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(1024 * 1024);
    b
}
