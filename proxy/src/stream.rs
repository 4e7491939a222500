//! A downstream connection, plain or TLS, and its two halves for the HTTP/1.x loop. An enum
//! rather than a generic parameter: the request body reader and the request path stay one
//! type, and a plain connection pays one branch per read or write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

pub enum DownStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
}

pub enum DownRead {
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<Box<TlsStream>>),
}

pub enum DownWrite {
    Tcp(OwnedWriteHalf),
    Tls(WriteHalf<Box<TlsStream>>),
}

impl DownStream {
    /// Splits into halves that can be used at once (a body read while a response is written).
    /// A TCP stream splits for free; a TLS one shares its state behind tokio's lock.
    pub fn split(self) -> (DownRead, DownWrite) {
        match self {
            DownStream::Tcp(s) => {
                let (r, w) = s.into_split();
                (DownRead::Tcp(r), DownWrite::Tcp(w))
            }
            DownStream::Tls(s) => {
                let (r, w) = tokio::io::split(s);
                (DownRead::Tls(r), DownWrite::Tls(w))
            }
        }
    }
}

/// Puts two halves of one stream back together (`None` if they are not a pair).
pub fn reunite(r: DownRead, w: DownWrite) -> Option<DownStream> {
    match (r, w) {
        (DownRead::Tcp(r), DownWrite::Tcp(w)) => r.reunite(w).ok().map(DownStream::Tcp),
        (DownRead::Tls(r), DownWrite::Tls(w)) if r.is_pair_of(&w) => {
            Some(DownStream::Tls(r.unsplit(w)))
        }
        _ => None,
    }
}

macro_rules! delegate_read {
    ($t:ty, $($v:ident),+) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$v(s) => Pin::new(s).poll_read(cx, buf),)+
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($t:ty, $($v:ident),+) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $(Self::$v(s) => Pin::new(s).poll_write(cx, buf),)+
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $(Self::$v(s) => Pin::new(s).poll_write_vectored(cx, bufs),)+
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $(Self::$v(s) => s.is_write_vectored(),)+
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$v(s) => Pin::new(s).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$v(s) => Pin::new(s).poll_shutdown(cx),)+
                }
            }
        }
    };
}

delegate_read!(DownStream, Tcp, Tls);
delegate_read!(DownRead, Tcp, Tls);
delegate_write!(DownStream, Tcp, Tls);
delegate_write!(DownWrite, Tcp, Tls);
