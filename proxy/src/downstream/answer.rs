//! One request's answer on an HTTP/1.x connection: the request path, then the response
//! write. The connection loop (`super::serve`) runs it boxed, one allocation per request,
//! so that what a connection keeps between requests is only its own small state.

use super::response::Answering;
use crate::body::{BodyReader, ReadSide};
use crate::context::ConnContext;
use crate::deadline::Deadline;
use crate::h1::framing::Framing;
use crate::h1::request::RequestHead;
use crate::http::UpgradeSlot;
use crate::http::body::RequestBody;
use crate::http::service;
use crate::snapshot::Snapshot;
use crate::stream::{DownRead, DownWrite};
use bytes::BytesMut;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// The connection's parts an answer uses.
pub(super) struct Conn<'a> {
    pub ctx: &'a ConnContext,
    pub snapshot: &'a Snapshot,
    pub rd: &'a mut Option<DownRead>,
    pub rbuf: &'a mut BytesMut,
    pub wr: &'a mut DownWrite,
    pub deadline: &'a mut Deadline,
    pub send_timeout: Duration,
    /// Whether the listener is stopping (then the answer ends the connection).
    pub closing: &'a (dyn Fn() -> bool + Sync),
}

/// What the connection does after an answer.
pub(super) enum Next {
    /// Reads the next request.
    Request,
    /// Ends; `graceful` when by the proxy's choice after a complete answer.
    Close { graceful: bool },
    /// A 101 went out: the connection becomes a byte tunnel to the upgraded upstream.
    Tunnel(hyper::upgrade::OnUpgrade),
}

pub(super) async fn answer(c: Conn<'_>, head: RequestHead) -> Next {
    let to_version = head.parts.version;
    let head_request = head.parts.method == http::Method::HEAD;
    if head.expect_continue && !matches!(head.framing, Framing::Empty) {
        // The interim answer goes out before the request is handled (RFC 9110 §10.1.1
        // lets a server send it early); the client then sends its body.
        use tokio::io::AsyncWriteExt;
        if c.wr
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
            || c.wr.flush().await.is_err()
        {
            return Next::Close { graceful: false };
        }
    }
    let side = match head.framing {
        Framing::Empty => None,
        framing => c.rd.take().map(|rd| {
            Arc::new(Mutex::new(Some(ReadSide {
                rd,
                rbuf: std::mem::take(c.rbuf),
                framing,
            })))
        }),
    };
    let body = match &side {
        Some(side) => RequestBody::Native(BodyReader { side: side.clone() }),
        None => RequestBody::Empty,
    };
    let mut req = http::Request::from_parts(head.parts, body);
    let upgrade = if head.upgrade {
        let (tx, rx) = oneshot::channel();
        req.extensions_mut()
            .insert(UpgradeSlot(Arc::new(Mutex::new(Some(tx)))));
        Some(rx)
    } else {
        None
    };
    let resp = service::serve(c.ctx, c.snapshot, req, Some(&mut *c.deadline)).await;
    // Take the read buffer back; a body not read to its end leaves the connection in
    // the middle of a request, so it is closed after this response.
    let mut body_done = true;
    if let Some(side) = side {
        let taken = side.lock().unwrap_or_else(|e| e.into_inner()).take();
        match taken {
            Some(s) => {
                *c.rbuf = s.rbuf;
                body_done = matches!(s.framing, Framing::Empty);
                *c.rd = Some(s.rd);
            }
            None => return Next::Close { graceful: false },
        }
    }
    let closing = (c.closing)();
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
        && let Some(rx) = upgrade
    {
        let to = Answering {
            version: to_version,
            head_request: true,
            keep_alive: true,
            trailers: false,
            send_timeout: c.send_timeout,
        };
        if super::respond(c.wr, resp, &to, c.deadline).await.is_ok()
            && let Ok(upstream) = rx.await
        {
            return Next::Tunnel(upstream);
        }
        return Next::Close { graceful: false };
    }
    // The gateway's own answer may ask for the connection to end (a revoked peer).
    let close_asked = resp
        .extensions()
        .get::<crate::context::CloseConnection>()
        .is_some();
    let to = Answering {
        version: to_version,
        head_request,
        keep_alive: head.keep_alive && body_done && !closing && !close_asked,
        trailers: head.trailers,
        send_timeout: c.send_timeout,
    };
    match super::respond(c.wr, resp, &to, c.deadline).await {
        Ok(true) => Next::Request,
        Ok(false) => Next::Close { graceful: true },
        Err(_) => Next::Close { graceful: false },
    }
}
