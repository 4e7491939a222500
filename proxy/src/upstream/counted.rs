//! An upstream connection's socket (plain or TLS) for hyper's clients, with every read and
//! write added to its cluster's byte counters (`membrane_upstream_{received,sent}_bytes_total`):
//! one atomic add each, as on client connections. Membrane's own HTTP/1.1 client counts in
//! its read and write calls instead (`h1::conn`). TLS connections count the payload, after
//! decryption, as client connections do.

use crate::stream::{ByteCounters, count_read, count_write};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct Counted<S> {
    io: S,
    bytes: ByteCounters,
}

impl<S> Counted<S> {
    pub fn new(io: S, bytes: ByteCounters) -> Self {
        Self { io, bytes }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let filled = buf.filled().len();
        let r = Pin::new(&mut me.io).poll_read(cx, buf);
        count_read(&r, buf, filled, &me.bytes.received);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        count_write(Pin::new(&mut me.io).poll_write(cx, buf), &me.bytes.sent)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        count_write(
            Pin::new(&mut me.io).poll_write_vectored(cx, bufs),
            &me.bytes.sent,
        )
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
