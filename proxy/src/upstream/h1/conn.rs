use super::ExchangeError;
use super::body::{GiveBack, H1Body};
use super::encode::encode_request;
use crate::body::RequestBody;
use crate::h1::H1Error;
use crate::h1::response as head;
use crate::stream::ByteCounters;
use crate::upstream::cluster::{OpenConnection, PoolKey};
use crate::upstream::forwarding::Forwarding;
use bytes::BytesMut;
use http::request::Parts;
use http::{Method, Response, header};
use http_body_util::BodyExt;
use std::io::ErrorKind;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// Read buffer growth step, and the most a response head may take.
const READ_CHUNK: usize = 16 * 1024;
const MAX_HEAD: usize = 64 * 1024;

/// A connection's socket and its cluster's byte counters, which every read and write adds
/// to (one atomic add each).
pub(super) struct Wire {
    pub(super) tcp: TcpStream,
    bytes: ByteCounters,
}

/// One upstream HTTP/1.1 connection with its buffers.
pub struct H1Conn {
    pub(super) stream: Wire,
    pub(super) rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Header positions while a response head is parsed; kept to avoid an allocation.
    pub(super) scratch: Vec<crate::h1::fields::FieldSpan>,
    _open: OpenConnection,
}

impl H1Conn {
    pub(crate) fn new(stream: TcpStream, open: OpenConnection) -> Self {
        Self {
            stream: Wire {
                tcp: stream,
                bytes: open.bytes.clone(),
            },
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(1024),
            scratch: Vec::with_capacity(32),
            _open: open,
        }
    }

    /// True when the upstream has closed this idle connection (or sent bytes nobody asked
    /// for). Uses tokio's readiness state, so an idle, healthy connection costs no syscall;
    /// `try_io` reads that state without registering a waker (which would take the socket's
    /// waiter lock on every checkout and return).
    pub fn is_closed(&self) -> bool {
        let tcp = &self.stream.tcp;
        let probe = tcp.try_io(tokio::io::Interest::READABLE, || {
            let mut byte = [std::mem::MaybeUninit::new(0u8)];
            socket2::SockRef::from(tcp).peek(&mut byte)
        });
        // Not readable: healthy. Readable: closed (0), stray bytes (n) or an error.
        !matches!(probe, Err(e) if e.kind() == ErrorKind::WouldBlock)
    }

    /// Forgets the socket's "readable" state left by the last read of a response, without a
    /// syscall, so that `is_closed` sees readiness only for what arrives while the connection
    /// idles (the upstream closing it, or stray bytes). A close that races this call is caught
    /// by the exchange instead: a request without a body is then retried.
    pub(super) fn forget_readiness(&self) {
        let _ = self.stream.tcp.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(ErrorKind::WouldBlock.into())
        });
    }

    /// Reads more bytes into the read buffer; `Ok(0)` is end of stream.
    #[inline]
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        poll_fill(&self.stream, &mut self.rbuf, cx)
    }
}

/// A failed exchange, and whether it may be tried again on a new connection: only when
/// nothing of a response arrived and the request had no body to lose.
pub struct Failed {
    pub error: ExchangeError,
    pub retryable: bool,
}

/// Sends one request on `conn` and reads the response head. A request body is sent while
/// the response is awaited, so an upstream that answers early (413, say) and stops reading
/// is heard; the connection is then not reused. The returned body owns the connection and
/// hands it to `give_back` under `key` once read to its end, when it can be reused.
pub async fn exchange(
    mut conn: Box<H1Conn>,
    key: PoolKey,
    give_back: GiveBack,
    parts: &Parts,
    fwd: &Forwarding<'_>,
    body: Option<RequestBody>,
) -> Result<Response<H1Body>, Failed> {
    let chunked = body.is_some() && !parts.headers.contains_key(header::CONTENT_LENGTH);
    conn.wbuf.clear();
    encode_request(&mut conn.wbuf, parts, fwd, chunked);
    let is_head = parts.method == Method::HEAD;
    let H1Conn {
        stream,
        rbuf,
        wbuf,
        scratch,
        ..
    } = &mut *conn;
    let stream = &*stream;
    let Some(body) = body else {
        // No body: a failure before any response byte means the pooled connection was dead
        // already, and the request may be tried again.
        if let Err(e) = write_all(stream, wbuf).await {
            return Err(Failed {
                error: H1Error::from(e).into(),
                retryable: true,
            });
        }
        let head =
            read_head(stream, rbuf, scratch, is_head)
                .await
                .map_err(|(error, nothing)| Failed {
                    error: error.into(),
                    retryable: nothing,
                })?;
        return Ok(H1Body::response(conn, key, give_back, *head, true));
    };
    let fail = |error: ExchangeError| Failed {
        error,
        retryable: false,
    };
    write_all(stream, wbuf)
        .await
        .map_err(|e| fail(H1Error::from(e).into()))?;
    // The futures borrow the connection; they end with this block.
    let (head, sent) = {
        let send = send_body(stream, body, chunked);
        let recv = read_head(stream, rbuf, scratch, is_head);
        tokio::pin!(send, recv);
        let mut sent = false;
        let mut send_failed = false;
        let head = loop {
            tokio::select! {
                biased;
                head = &mut recv => break head,
                done = &mut send, if !sent && !send_failed => match done {
                    Ok(()) => sent = true,
                    Err(e @ ExchangeError::RequestBody(_)) => return Err(fail(e)),
                    // The upstream stopped reading (it may have answered already): keep
                    // waiting for its response.
                    Err(_) => send_failed = true,
                },
            }
        };
        (head, sent)
    };
    let head = head.map_err(|(error, _)| fail(error.into()))?;
    // A response before the whole body went out leaves the connection mid-request.
    Ok(H1Body::response(conn, key, give_back, *head, sent))
}

/// Reads until a final response head is parsed. The error comes with whether nothing at all
/// had arrived from the upstream.
async fn read_head(
    stream: &Wire,
    rbuf: &mut BytesMut,
    scratch: &mut Vec<crate::h1::fields::FieldSpan>,
    is_head: bool,
) -> Result<Box<head::FinalHead>, (H1Error, bool)> {
    let mut received_any = false;
    loop {
        match head::parse_response(rbuf, scratch, is_head) {
            Ok(Some(head::Parsed::Informational)) => {
                received_any = true;
                continue;
            }
            Ok(Some(head::Parsed::Final(head))) => return Ok(head),
            Ok(None) if rbuf.len() > MAX_HEAD => {
                return Err((H1Error::Protocol("response head over 64 KiB"), false));
            }
            Ok(None) => {}
            Err(e) => return Err((e, false)),
        }
        let nothing = !received_any && rbuf.is_empty();
        match fill(stream, rbuf).await {
            Ok(0) => return Err((H1Error::ClosedBeforeResponse, nothing)),
            Ok(_) => received_any = true,
            Err(e) => return Err((e.into(), nothing)),
        }
    }
}

/// Reads more into `rbuf`; `Ok(0)` is end of stream. Readiness is checked first, which
/// costs no syscall, and the read is tried only when the socket may have data.
fn poll_fill(
    stream: &Wire,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
        rbuf.reserve(READ_CHUNK);
    }
    loop {
        std::task::ready!(stream.tcp.poll_read_ready(cx))?;
        match stream.tcp.try_read_buf(rbuf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Ok(n) => {
                stream.bytes.received.inc_by(n as u64);
                return Poll::Ready(Ok(n));
            }
            other => return Poll::Ready(other),
        }
    }
}

async fn fill(stream: &Wire, rbuf: &mut BytesMut) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_fill(stream, rbuf, cx)).await
}

/// Writes all of `buf` through a shared reference, so that reading can go on at the same
/// time.
async fn write_all(stream: &Wire, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match stream.tcp.try_write(buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                stream.bytes.sent.inc_by(n as u64);
                buf = &buf[n..];
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => stream.tcp.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn send_body(
    stream: &Wire,
    mut body: RequestBody,
    chunked: bool,
) -> Result<(), ExchangeError> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ExchangeError::RequestBody)?;
        if let Ok(data) = frame.into_data() {
            if data.is_empty() {
                continue;
            }
            if chunked {
                write_all(stream, format!("{:x}\r\n", data.len()).as_bytes())
                    .await
                    .map_err(H1Error::from)?;
                write_all(stream, &data).await.map_err(H1Error::from)?;
                write_all(stream, b"\r\n").await.map_err(H1Error::from)?;
            } else {
                write_all(stream, &data).await.map_err(H1Error::from)?;
            }
        }
        // Request trailers are dropped: few upstreams accept them and HTTP/1.1 proxies
        // commonly drop them.
    }
    if chunked {
        write_all(stream, b"0\r\n\r\n")
            .await
            .map_err(H1Error::from)?;
    }
    Ok(())
}
