//! The control server's TLS listener: handshakes in front of the gRPC server (ADS and the
//! certificate service), each connection tagged with what its client proved
//! ([`ChannelPeer`], found in every request's extensions).
//!
//! A client that speaks plaintext, or shows a certificate this CA did not issue, fails the
//! handshake and never reaches gRPC; it is counted by reason. A client with no certificate
//! completes the handshake (its request may carry a join token); ADS refuses it.

use crate::reasons::ByReason;
use membrane_api::stream::ChannelStream;
use membrane_policy::identity::SpiffeId;
use rustls::ServerConfig;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection's client proved in its handshake.
#[derive(Debug, Clone)]
pub struct ChannelPeer {
    pub addr: SocketAddr,
    /// The SPIFFE ID of its verified client certificate; `None` when it showed none.
    pub id: Option<SpiffeId>,
    /// The SHA-256 of that certificate (hex), for the deny list.
    pub cert_sha256: Option<String>,
}

/// A TLS connection with its peer, as tonic's server takes it.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    peer: ChannelPeer,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ChannelPeer;
    fn connect_info(&self) -> ChannelPeer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The reason a handshake failed, as a bounded metric label.
fn handshake_reason(e: &io::Error) -> &'static str {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return if e.kind() == io::ErrorKind::UnexpectedEof {
            "closed"
        } else {
            "io"
        };
    };
    match tls {
        rustls::Error::InvalidMessage(_) => "not_tls",
        rustls::Error::InvalidCertificate(_) => "bad_client_certificate",
        rustls::Error::NoApplicationProtocol => "no_h2",
        _ => "handshake",
    }
}

/// Accepts on `listener`, completes each handshake on a task of its own, and yields the
/// connections that made it. Failed handshakes are counted in `refused`.
/// `config` gives the TLS configuration for each new connection (it changes when the CA
/// does).
pub fn incoming(
    listener: TcpListener,
    config: impl Fn() -> Arc<ServerConfig> + Send + 'static,
    refused: Arc<ByReason>,
) -> ChannelStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "control channel: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(config());
            let (tx, refused) = (tx.clone(), refused.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        let reason = handshake_reason(&e);
                        refused.add(reason);
                        tracing::warn!(%addr, reason, error = %e, "control channel: handshake refused");
                        return;
                    }
                    Err(_) => {
                        refused.add("handshake_timeout");
                        return;
                    }
                };
                let certs = tls.get_ref().1.peer_certificates();
                let id = membrane_identity::channel::peer_id(certs);
                let cert_sha256 = certs
                    .and_then(|c| c.first())
                    .map(|leaf| membrane_identity::sha256_hex(leaf));
                let peer = ChannelPeer {
                    addr,
                    id,
                    cert_sha256,
                };
                let _ = tx.send(Ok(TlsConn { inner: tls, peer })).await;
            });
        }
    });
    ChannelStream(rx)
}
