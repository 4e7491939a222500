//! Membrane's own HTTP/1.1 server loop, for `http1` listeners and the HTTP/1.x connections
//! of `auto` ones.
//!
//! Why: with hyper serving downstream, about 9-10k instructions of the 25k a proxied request
//! cost went to hyper's server (parsing into its own structures, a per-request timer
//! allocation, dispatch). This loop parses the request head in place with httparse (URI and
//! header values are slices of the read buffer), hands the request to the same request path
//! as hyper does, and writes the response head and a small first body frame in one write.
//! HTTP/2 (on `http2` listeners, and on `auto` ones when the client starts with the
//! HTTP/2 preface) stays with hyper.
//!
//! What it does (RFC 9112): keep-alive (HTTP/1.1 by default, HTTP/1.0 on request),
//! Content-Length and chunked request bodies (read while the upstream exchange runs),
//! `Expect: 100-continue`, chunked responses when the length is unknown (close-delimited
//! for HTTP/1.0), trailers to clients that send `TE: trailers`, HEAD/204/304 without body,
//! `Date` added when missing, Upgrade (WebSocket) handed to a byte tunnel after a 101,
//! refusal of ambiguous framing (both Transfer-Encoding and Content-Length, or a final
//! coding other than chunked) with 400, and JSON errors for bad heads (400, 431). Pipelined
//! requests are answered in order. A client that sends no complete head within the
//! listener's `header_read_timeout` is disconnected; so is an idle keep-alive connection.

mod answer;
mod buffers;
mod date;
mod response;

pub use crate::stream::DownStream;

use crate::context::ConnContext;
use crate::deadline::Deadline;
use crate::h1::request::{self, HeadError};
use crate::http::error::ProxyError;
use crate::stream::{self as io, DownRead};
use bytes::BytesMut;
use response::{Answering, write_response};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// Most bytes a request head may take before the parser gives up (the listener's own limit
/// is checked per request, with a JSON 431, inside this).
pub struct Limits {
    pub max_head: usize,
    pub header_read_timeout: Duration,
    /// How long a response write may wait for the client to take bytes.
    pub send_timeout: Duration,
}

/// Serves one connection until it closes, errs, or its listener stops.
pub async fn serve(
    ctx: Arc<ConnContext>,
    stream: DownStream,
    initial: BytesMut,
    limits: Limits,
    stop: watch::Receiver<bool>,
    mut deadline: Deadline,
) {
    let (rd, mut wr) = stream.split();
    let mut rd = Some(rd);
    let mut rbuf = initial;
    // The config generation, checked per request with one plain load and reloaded only when
    // a new one is in. A request runs on the generation it started with; an idle connection
    // keeps the last one it used until its next request (or its end).
    let mut snapshots = arc_swap::Cache::new(&*ctx.state);
    // The stop flag is the watch channel's version (a plain load, no lock): the value only
    // ever goes from false to true, so a changed (or closed) channel means stopping. Idle
    // connections learn of it when the worker wakes them (`Timers::wake_all`).
    let stopping = || stop.has_changed().unwrap_or(true);
    // Sweeps (a new deny list) seen so far: an idle connection whose peer it revokes ends.
    let mut sweeps = 0;
    let tls = ctx.tls.is_some();
    // Whether the connection ends by the proxy's choice after a complete answer (or idle):
    // a TLS connection then gets a close_notify before the TCP close, so the client can tell
    // a complete close-delimited body from a cut one, and keeps its session to resume.
    let graceful = 'conn: loop {
        // One coarse deadline per connection (`server::deadline`), re-armed for each
        // phase: it bounds a slow head and an idle keep-alive connection here, and the
        // upstream exchange in the request path.
        deadline.arm(limits.header_read_timeout);
        // Waiting for a new request: the connection gives up its read buffer (the next
        // head's first bytes land in the worker's buffer, `buffers`).
        if rbuf.is_empty() {
            rbuf = BytesMut::new();
        }
        let head = tokio::select! {
            biased;
            // The head first: on the wake-up that brings it, nothing else is looked at.
            r = read_head(&mut rd, &mut rbuf, limits.max_head) => r,
            // Idle between requests: a stopping listener, or a deny list that now refuses
            // the peer, closes the connection here. The waker is handed over before the
            // flags are read: a stop or sweep that lands in between then finds the waker
            // in place (`wake_all`), and no wake-up is lost.
            () = std::future::poll_fn(|cx| {
                if deadline.poll_expired(cx).is_ready()
                    || stopping()
                    || (tls && deadline.swept(&mut sweeps) && ctx.revoked_now())
                {
                    return std::task::Poll::Ready(());
                }
                std::task::Poll::Pending
            }) => break 'conn true,
        };
        let head = match head {
            Err(ReadError::Closed) => break 'conn false,
            Err(ReadError::Bad(e)) => {
                let id = crate::http::headers::request_id(&http::HeaderMap::new(), false).value;
                let resp = e.into_response(&id);
                let to = Answering {
                    version: http::Version::HTTP_11,
                    head_request: false,
                    keep_alive: false,
                    trailers: false,
                    send_timeout: limits.send_timeout,
                };
                // Boxed like every answer (see below), so the connection's future stays small.
                let written = Box::pin(respond(&mut wr, resp, &to, &mut deadline)).await;
                break 'conn written.is_ok();
            }
            Ok(h) => h,
        };
        // One box per request for all of its answer (the request path's future is
        // kilobytes): inline, every connection's future would be that size for its whole
        // life, idle or not.
        let next = Box::pin(answer::answer(
            answer::Conn {
                ctx: &ctx,
                snapshot: snapshots.load(),
                rd: &mut rd,
                rbuf: &mut rbuf,
                wr: &mut wr,
                deadline: &mut deadline,
                send_timeout: limits.send_timeout,
                closing: &stopping,
            },
            head,
        ))
        .await;
        match next {
            answer::Next::Request => continue,
            answer::Next::Close { graceful } => break 'conn graceful,
            answer::Next::Tunnel(upstream) => {
                if let Some(rd) = rd.take()
                    && let Some(stream) = io::reunite(rd, wr)
                {
                    Box::pin(tunnel(stream, rbuf, upstream)).await;
                }
                return;
            }
        }
    };
    if graceful && tls {
        // Assumption: a close_notify that the client does not take within a second is not
        // worth holding the connection for (the TCP close follows either way).
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    }
}

/// Writes a response through a write buffer from the worker's pool.
pub(super) async fn respond(
    wr: &mut io::DownWrite,
    resp: http::Response<crate::http::body::ProxyBody>,
    to: &Answering,
    deadline: &mut Deadline,
) -> std::io::Result<bool> {
    let mut wbuf = buffers::take_write_buf();
    let written = write_response(wr, &mut wbuf, resp, to, deadline).await;
    buffers::give_write_buf(wbuf);
    written
}

enum ReadError {
    Closed,
    Bad(ProxyError),
}

async fn read_head(
    rd: &mut Option<DownRead>,
    rbuf: &mut BytesMut,
    max_head: usize,
) -> Result<request::RequestHead, ReadError> {
    loop {
        if !rbuf.is_empty() {
            match buffers::with_fields(|fields| request::parse_request(rbuf, fields)) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) if rbuf.len() > max_head => {
                    return Err(ReadError::Bad(ProxyError::HeadersTooLarge {
                        size: rbuf.len(),
                        limit: max_head,
                    }));
                }
                Ok(None) => {}
                Err(HeadError::TooManyHeaders) => {
                    return Err(ReadError::Bad(ProxyError::TooManyHeaders {
                        count: request::MAX_HEADERS + 1,
                        limit: request::MAX_HEADERS,
                    }));
                }
                Err(HeadError::Malformed(why)) => {
                    return Err(ReadError::Bad(ProxyError::BadRequest(why)));
                }
            }
        }
        let Some(rd) = rd.as_mut() else {
            return Err(ReadError::Closed);
        };
        let n = if rbuf.capacity() == 0 {
            buffers::read_landing(rd, rbuf).await
        } else {
            if rbuf.capacity() - rbuf.len() < 2048 {
                rbuf.reserve(buffers::READ_BUF);
            }
            rd.read_buf(rbuf).await
        }
        .map_err(|_| ReadError::Closed)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
    }
}

/// Copies bytes both ways between the client and the upgraded upstream connection.
async fn tunnel(mut down: DownStream, early: BytesMut, upstream: hyper::upgrade::OnUpgrade) {
    let Ok(upstream) = upstream.await else { return };
    let mut up = hyper_util::rt::TokioIo::new(upstream);
    if !early.is_empty() {
        use tokio::io::AsyncWriteExt;
        if up.write_all(&early).await.is_err() {
            return;
        }
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}
