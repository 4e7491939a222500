//! A TCP connection whose reads can be paused while the socket stays open: a client that
//! stopped reading (or opened large HTTP/2 windows and went quiet), for the stall tests and
//! the `h2_hold` bench.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct Pausable {
    inner: tokio::net::TcpStream,
    paused: Arc<AtomicBool>,
}

impl Pausable {
    /// The connection, and the switch that pauses its reads.
    pub fn new(inner: tokio::net::TcpStream) -> (Self, Arc<AtomicBool>) {
        let paused = Arc::new(AtomicBool::new(false));
        (
            Self {
                inner,
                paused: paused.clone(),
            },
            paused,
        )
    }
}

impl AsyncRead for Pausable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.paused.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pausable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
