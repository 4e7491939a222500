use super::H1Error;
use super::body::H1Body;
use super::head;
use crate::upstream::connect::OpenConnection;
use crate::upstream::forwarding::Forwarding;
use crate::upstream::pool::PoolKey;
use bytes::BytesMut;
use http::request::Parts;
use http::{Method, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::io::ErrorKind;
use std::task::{Context, Poll, Waker};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Read buffer growth step, and the most a response head may take.
const READ_CHUNK: usize = 16 * 1024;
const MAX_HEAD: usize = 64 * 1024;

/// One upstream HTTP/1.1 connection with its buffers.
pub struct H1Conn {
    pub(super) stream: TcpStream,
    pub(super) rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Header positions while a response head is parsed; kept to avoid an allocation.
    scratch: Vec<(usize, usize, usize, usize)>,
    _open: OpenConnection,
}

impl H1Conn {
    pub(crate) fn new(stream: TcpStream, open: OpenConnection) -> Self {
        Self {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(1024),
            scratch: Vec::with_capacity(32),
            _open: open,
        }
    }

    /// True when the upstream has closed this idle connection (or sent bytes nobody asked
    /// for). Uses tokio's readiness state, so an idle, healthy connection costs no syscall.
    pub fn is_closed(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock)
            }
        }
    }

    /// Forgets the socket's "readable" state left by the last read of a response, without a
    /// syscall, so that `is_closed` sees readiness only for what arrives while the connection
    /// idles (the upstream closing it, or stray bytes). A close that races this call is caught
    /// by the exchange instead: a request without a body is then retried.
    pub(super) fn forget_readiness(&self) {
        let _ = self.stream.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(ErrorKind::WouldBlock.into())
        });
    }

    /// Reads more bytes into the read buffer; `Ok(0)` is end of stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        loop {
            std::task::ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// A failed exchange, and whether it may be tried again on a new connection: only when
/// nothing of a response arrived and the request had no body to lose.
pub struct Failed {
    pub error: H1Error,
    pub retryable: bool,
}

/// Sends one request on `conn` and reads the response head. The body, if any, is sent in
/// full first. The returned body owns the connection and returns it to the pool under
/// `key` when it has been read to its end and the connection can be reused.
pub async fn exchange(
    mut conn: H1Conn,
    key: PoolKey,
    parts: &Parts,
    fwd: &Forwarding,
    body: Option<Incoming>,
) -> Result<Response<H1Body>, Failed> {
    let fail = |error| Failed {
        error,
        retryable: false,
    };
    let chunked = body.is_some() && !parts.headers.contains_key(header::CONTENT_LENGTH);
    conn.wbuf.clear();
    head::encode_request(&mut conn.wbuf, parts, fwd, chunked);
    // A write error on a request without body means the idle connection was dead already.
    let had_body = body.is_some();
    if let Err(e) = conn.stream.write_all(&conn.wbuf).await {
        return Err(Failed {
            error: e.into(),
            retryable: !had_body,
        });
    }
    if let Some(body) = body {
        send_body(&mut conn, body, chunked).await.map_err(fail)?;
    }
    let is_head = parts.method == Method::HEAD;
    let mut received_any = false;
    loop {
        match head::parse_response(&mut conn.rbuf, &mut conn.scratch, is_head) {
            Ok(Some(head::Parsed::Informational)) => {
                received_any = true;
                continue;
            }
            Ok(Some(head::Parsed::Final {
                parts,
                framing,
                keep_alive,
            })) => {
                return Ok(Response::from_parts(
                    parts,
                    H1Body::new(conn, key, framing, keep_alive),
                ));
            }
            Ok(None) => {
                if conn.rbuf.len() > MAX_HEAD {
                    return Err(fail(H1Error::Protocol("response head over 64 KiB")));
                }
            }
            Err(e) => return Err(fail(e)),
        }
        match conn.fill().await {
            Ok(0) => {
                let nothing = !received_any && conn.rbuf.is_empty();
                return Err(Failed {
                    error: H1Error::ClosedBeforeResponse,
                    retryable: nothing && !had_body,
                });
            }
            Ok(_) => received_any = true,
            Err(e) => {
                let nothing = !received_any && conn.rbuf.is_empty();
                return Err(Failed {
                    error: e.into(),
                    retryable: nothing && !had_body,
                });
            }
        }
    }
}

async fn send_body(conn: &mut H1Conn, mut body: Incoming, chunked: bool) -> Result<(), H1Error> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(H1Error::RequestBody)?;
        if let Ok(data) = frame.into_data() {
            if data.is_empty() {
                continue;
            }
            if chunked {
                let size = format!("{:x}\r\n", data.len());
                conn.stream.write_all(size.as_bytes()).await?;
                conn.stream.write_all(&data).await?;
                conn.stream.write_all(b"\r\n").await?;
            } else {
                conn.stream.write_all(&data).await?;
            }
        }
        // Request trailers are dropped: few upstreams accept them and HTTP/1.1 proxies
        // commonly drop them.
    }
    if chunked {
        conn.stream.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}
