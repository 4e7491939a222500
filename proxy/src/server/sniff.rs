//! `auto` listeners: HTTP/2 with prior knowledge is told from HTTP/1.1 by its preface.

use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub enum Sniffed {
    /// The bytes read so far start an HTTP/1.x request.
    Http1(BytesMut),
    /// The HTTP/2 connection preface (or the start of it) was read.
    Http2(Bytes),
    /// The client went away or sent nothing in time.
    Gone,
}

/// Reads until the first bytes tell HTTP/2's preface from anything else. An HTTP/1.1
/// request line diverges from the preface at its first byte in practice, so this costs no
/// extra read.
pub async fn sniff<S: AsyncRead + Unpin>(stream: &mut S, timeout: Duration) -> Sniffed {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let read = async {
        loop {
            let n = buf.len().min(PREFACE.len());
            if buf[..n] != PREFACE[..n] {
                return Sniffed::Http1(std::mem::take(&mut buf));
            }
            if n == PREFACE.len() {
                return Sniffed::Http2(std::mem::take(&mut buf).freeze());
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Sniffed::Gone,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Sniffed::Gone)
}

/// A stream that first yields bytes already read from it.
pub struct Prefixed<S> {
    pub prefix: Bytes,
    pub inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // An empty slice still holds the sniff's whole 8 KiB buffer, for as long as
                // the connection lives (massif, 1,000 idle HTTP/2 connections): let it go.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
