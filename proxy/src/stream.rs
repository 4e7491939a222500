//! A downstream connection, plain or TLS, and its two halves for the HTTP/1.x loop. An enum
//! rather than a generic parameter: the request body reader and the request path stay one
//! type, and a plain connection pays one branch per read or write. Each read and write
//! adds its bytes to the listener's counters (one atomic add).

use prometheus_client::metrics::counter::Counter;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A listener's byte counters, which its connections add to: what they read from clients
/// and what they wrote to them, as the bytes on the connection (HTTP heads and bodies,
/// framing included; TLS records' payloads, after decryption).
#[derive(Debug, Clone, Default)]
pub struct ByteCounters {
    pub received: Counter,
    pub sent: Counter,
}

pub enum DownIo {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
}

pub struct DownStream {
    io: DownIo,
    bytes: ByteCounters,
}

pub enum ReadIo {
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<Box<TlsStream>>),
}

pub struct DownRead {
    io: ReadIo,
    received: Counter,
}

pub enum WriteIo {
    Tcp(OwnedWriteHalf),
    Tls(WriteHalf<Box<TlsStream>>),
}

pub struct DownWrite {
    io: WriteIo,
    sent: Counter,
}

impl DownStream {
    pub fn new(io: DownIo, bytes: ByteCounters) -> Self {
        Self { io, bytes }
    }

    /// Splits into halves that can be used at once (a body read while a response is written).
    /// A TCP stream splits for free; a TLS one shares its state behind tokio's lock.
    pub fn split(self) -> (DownRead, DownWrite) {
        let (r, w) = match self.io {
            DownIo::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadIo::Tcp(r), WriteIo::Tcp(w))
            }
            DownIo::Tls(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadIo::Tls(r), WriteIo::Tls(w))
            }
        };
        (
            DownRead {
                io: r,
                received: self.bytes.received,
            },
            DownWrite {
                io: w,
                sent: self.bytes.sent,
            },
        )
    }
}

/// Puts two halves of one stream back together (`None` if they are not a pair).
pub fn reunite(r: DownRead, w: DownWrite) -> Option<DownStream> {
    let bytes = ByteCounters {
        received: r.received,
        sent: w.sent,
    };
    let io = match (r.io, w.io) {
        (ReadIo::Tcp(r), WriteIo::Tcp(w)) => r.reunite(w).ok().map(DownIo::Tcp),
        (ReadIo::Tls(r), WriteIo::Tls(w)) if r.is_pair_of(&w) => Some(DownIo::Tls(r.unsplit(w))),
        _ => None,
    }?;
    Some(DownStream { io, bytes })
}

impl DownWrite {
    /// One write on a plain TCP connection without waiting (`None` on TLS, which has to be
    /// written and flushed the general way).
    pub fn try_write_tcp(&mut self, buf: &[u8]) -> Option<io::Result<usize>> {
        match &self.io {
            WriteIo::Tcp(w) => Some(w.try_write(buf).inspect(|n| {
                self.sent.inc_by(*n as u64);
            })),
            WriteIo::Tls(_) => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.io, WriteIo::Tls(_))
    }
}

/// Counts what a read put into `buf` (from `filled` on).
pub fn count_read(r: &Poll<io::Result<()>>, buf: &ReadBuf<'_>, filled: usize, c: &Counter) {
    if let Poll::Ready(Ok(())) = r {
        c.inc_by((buf.filled().len() - filled) as u64);
    }
}

pub fn count_write(r: Poll<io::Result<usize>>, c: &Counter) -> Poll<io::Result<usize>> {
    if let Poll::Ready(Ok(n)) = &r {
        c.inc_by(*n as u64);
    }
    r
}

macro_rules! delegate_read {
    ($t:ty, $io:ident, [$($counter:ident).+], $($v:ident),+) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let me = self.get_mut();
                let filled = buf.filled().len();
                let r = match &mut me.io {
                    $($io::$v(s) => Pin::new(s).poll_read(cx, buf),)+
                };
                count_read(&r, buf, filled, &me.$($counter).+);
                r
            }
        }
    };
}

macro_rules! delegate_write {
    ($t:ty, $io:ident, [$($counter:ident).+], $($v:ident),+) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let me = self.get_mut();
                let r = match &mut me.io {
                    $($io::$v(s) => Pin::new(s).poll_write(cx, buf),)+
                };
                count_write(r, &me.$($counter).+)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let me = self.get_mut();
                let r = match &mut me.io {
                    $($io::$v(s) => Pin::new(s).poll_write_vectored(cx, bufs),)+
                };
                count_write(r, &me.$($counter).+)
            }

            fn is_write_vectored(&self) -> bool {
                match &self.io {
                    $($io::$v(s) => s.is_write_vectored(),)+
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match &mut self.get_mut().io {
                    $($io::$v(s) => Pin::new(s).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                match &mut self.get_mut().io {
                    $($io::$v(s) => Pin::new(s).poll_shutdown(cx),)+
                }
            }
        }
    };
}

delegate_read!(DownStream, DownIo, [bytes.received], Tcp, Tls);
delegate_read!(DownRead, ReadIo, [received], Tcp, Tls);
delegate_write!(DownStream, DownIo, [bytes.sent], Tcp, Tls);
delegate_write!(DownWrite, WriteIo, [sent], Tcp, Tls);
