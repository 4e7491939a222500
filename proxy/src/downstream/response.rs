//! Writing a response to a downstream HTTP/1.1 connection.

use super::date;
use super::io::DownWrite;
use crate::deadline::Deadline;
use crate::h1::fields::write_line;
use crate::http::body::ProxyBody;
use crate::upstream::UpstreamBody;
use http::header::{self, HeaderMap};
use http::{Response, StatusCode, Version};
use http_body::{Body, Frame};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// What the response writer needs to know about the request it answers.
pub struct Answering {
    pub version: Version,
    pub head_request: bool,
    /// The connection may carry another request after this one.
    pub keep_alive: bool,
    pub trailers: bool,
    /// How long a write may wait for the client to take bytes.
    pub send_timeout: Duration,
}

enum Out {
    None,
    Length,
    Chunked,
    UntilClose,
}

/// Writes `resp`; returns whether the connection can be kept (the body was framed and sent
/// whole). Small bodies that are ready at once go out in the same write as the head.
///
/// Both waits of a streamed response are bounded, on the connection's coarse deadline: a
/// write the client does not take within `send_timeout` (a client that stopped reading),
/// and a body frame the upstream does not send within the body's idle timeout. Either ends
/// the connection, and with it the upstream connection the body held; before, a stalled
/// download held both forever. The deadline is armed only once a wait has begun (a write
/// or a frame that is ready at once costs no clock read).
pub async fn write_response(
    stream: &mut DownWrite,
    wbuf: &mut Vec<u8>,
    resp: Response<ProxyBody>,
    to: &Answering,
    deadline: &mut Deadline,
) -> std::io::Result<bool> {
    let send_timeout = to.send_timeout;
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let mut keep_alive = to.keep_alive;
    wbuf.clear();
    wbuf.extend_from_slice(if to.version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    wbuf.extend_from_slice(status.as_str().as_bytes());
    wbuf.push(b' ');
    wbuf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    wbuf.extend_from_slice(b"\r\n");
    let (mut has_length, mut has_date) = write_headers(wbuf, &parts.headers);
    // A response from Membrane's HTTP/1.1 client carries its header fields as the bytes
    // they came in: they go out as they are, with no header map in between.
    if let ProxyBody::Upstream {
        body: UpstreamBody::Http1(h1),
        ..
    } = &body
    {
        h1.write_fields(wbuf);
        let (date, length) = h1.has_date_and_length();
        has_date |= date;
        has_length |= length;
    }
    if !has_date {
        wbuf.extend_from_slice(b"date: ");
        wbuf.extend_from_slice(date::now().as_bytes());
        wbuf.extend_from_slice(b"\r\n");
    }
    let no_body = to.head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let out = if no_body {
        Out::None
    } else if has_length {
        Out::Length
    } else if let Some(n) = body.size_hint().exact() {
        wbuf.extend_from_slice(b"content-length: ");
        wbuf.extend_from_slice(n.to_string().as_bytes());
        wbuf.extend_from_slice(b"\r\n");
        Out::Length
    } else if to.version == Version::HTTP_11 {
        wbuf.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Out::Chunked
    } else {
        keep_alive = false;
        Out::UntilClose
    };
    if !keep_alive {
        wbuf.extend_from_slice(b"connection: close\r\n");
    } else if to.version == Version::HTTP_10 {
        wbuf.extend_from_slice(b"connection: keep-alive\r\n");
    }
    wbuf.extend_from_slice(b"\r\n");
    if matches!(out, Out::None) {
        write_bounded(stream, wbuf, deadline, send_timeout).await?;
        return Ok(keep_alive);
    }
    let idle = body.idle_timeout();
    // The body's first frame is often ready (a direct response, or an upstream body already
    // in the read buffer): send it with the head.
    let mut first = {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(f) => Some(f),
            Poll::Pending => None,
        }
    };
    let mut ended = false;
    loop {
        let frame = match first.take() {
            Some(f) => f,
            None => {
                if !wbuf.is_empty() {
                    write_bounded(stream, wbuf, deadline, send_timeout).await?;
                    wbuf.clear();
                }
                match next_frame(&mut body, deadline, idle).await {
                    Some(f) => f,
                    None => {
                        tracing::debug!(after = ?idle, "the upstream sent nothing more; closing");
                        return Ok(false);
                    }
                }
            }
        };
        match frame {
            None => break,
            Some(Err(e)) => {
                // Nothing can be said to the client mid-body: the connection is closed.
                tracing::debug!(error = %e, "response body failed");
                if !wbuf.is_empty() {
                    let _ = write_bounded(stream, wbuf, deadline, send_timeout).await;
                }
                return Ok(false);
            }
            Some(Ok(frame)) => ended |= encode_frame(wbuf, frame, &out, to.trailers),
        }
    }
    if matches!(out, Out::Chunked) && !ended {
        wbuf.extend_from_slice(b"0\r\n\r\n");
    }
    if !wbuf.is_empty() {
        write_bounded(stream, wbuf, deadline, send_timeout).await?;
    }
    Ok(keep_alive && !matches!(out, Out::UntilClose))
}

/// Writes `buf` whole, giving up when the client takes none of it for `timeout`: armed only
/// once the first attempt has to wait.
async fn write_bounded(
    stream: &mut DownWrite,
    buf: &[u8],
    deadline: &mut Deadline,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut buf = buf;
    // A plain TCP socket nearly always takes a response at once: one attempt without any
    // future around it (TLS may hold records back and needs its flush: the general way).
    if let Some(tried) = stream.try_write_tcp(buf) {
        match tried {
            Ok(n) if n == buf.len() => return Ok(()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    let mut write = std::pin::pin!(write_all(stream, buf));
    let mut armed = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = write.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if !armed {
            deadline.arm(timeout);
            armed = true;
        }
        match deadline.poll_expired(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no response bytes within the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// The body's next frame; `None` when the upstream sent nothing for `idle`.
async fn next_frame(
    body: &mut ProxyBody,
    deadline: &mut Deadline,
    idle: Duration,
) -> Option<Option<Result<Frame<bytes::Bytes>, crate::upstream::UpstreamBodyError>>> {
    let mut armed = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(f) = Pin::new(&mut *body).poll_frame(cx) {
            return Poll::Ready(Some(f));
        }
        if !armed {
            deadline.arm(idle);
            armed = true;
        }
        deadline.poll_expired(cx).map(|()| None)
    })
    .await
}

/// Appends one body frame in the response's framing; true when it ended a chunked body
/// (trailers).
fn encode_frame(wbuf: &mut Vec<u8>, frame: Frame<bytes::Bytes>, out: &Out, trailers: bool) -> bool {
    match frame.into_data() {
        Ok(data) => {
            if !data.is_empty() {
                if matches!(out, Out::Chunked) {
                    wbuf.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    wbuf.extend_from_slice(&data);
                    wbuf.extend_from_slice(b"\r\n");
                } else {
                    wbuf.extend_from_slice(&data);
                }
            }
            false
        }
        Err(frame) => match (out, frame.into_trailers()) {
            (Out::Chunked, Ok(map)) => {
                wbuf.extend_from_slice(b"0\r\n");
                if trailers {
                    write_headers(wbuf, &map);
                }
                wbuf.extend_from_slice(b"\r\n");
                true
            }
            _ => false,
        },
    }
}

/// Writes header lines; says whether `content-length` and `date` were among them.
fn write_headers(wbuf: &mut Vec<u8>, headers: &HeaderMap) -> (bool, bool) {
    let (mut length, mut date) = (false, false);
    for (name, value) in headers {
        length |= name == header::CONTENT_LENGTH;
        date |= name == header::DATE;
        write_line(wbuf, name.as_str().as_bytes(), value.as_bytes());
    }
    (length, date)
}

/// Writes, and flushes TLS: it may hold records back when the socket was full, and nothing
/// else would push them out before the next response. (TCP has nothing to flush.)
async fn write_all(stream: &mut DownWrite, buf: &[u8]) -> std::io::Result<()> {
    stream.write_all(buf).await?;
    if stream.is_tls() {
        stream.flush().await?;
    }
    Ok(())
}
