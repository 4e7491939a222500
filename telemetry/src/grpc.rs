//! One unary gRPC call at a time over hyper's HTTP/2 client (h2c), for OTLP export. The
//! request's message is sent as the buffers the spans were written into: h2 writes a DATA
//! payload of more than a few hundred bytes from the buffer itself (vectored writes), so
//! the spans' bytes are not copied again. tonic's client copied every message into its
//! frame buffer, which cost the export as many instructions as writing the spans did.
//!
//! The connection is opened on first use and again after any failure; the reply's status
//! is read from its trailers (or its headers, for a trailers-only reply) and its message
//! is not read (an `ExportTraceServiceResponse`; a partial success is not acted on).

use bytes::Bytes;
use http::{HeaderValue, Request, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A gRPC message in parts, framed (the 5-byte prefix is the first part).
pub struct Message {
    parts: VecDeque<Bytes>,
    left: u64,
}

impl Message {
    /// `parts` as one uncompressed message.
    pub fn new(parts: Vec<Bytes>) -> Self {
        let len: usize = parts.iter().map(Bytes::len).sum();
        let mut prefix = [0u8; 5];
        prefix[1..].copy_from_slice(&(len as u32).to_be_bytes());
        let mut parts = VecDeque::from(parts);
        parts.push_front(Bytes::copy_from_slice(&prefix));
        Self {
            parts,
            left: len as u64 + 5,
        }
    }
}

impl Body for Message {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let next = this.parts.pop_front().map(|b| {
            this.left -= b.len() as u64;
            Ok(Frame::data(b))
        });
        Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A channel to one server.
pub struct Channel {
    /// `http://host:port`, checked by the caller.
    uri: Uri,
    timeout: Duration,
    conn: Option<SendRequest<Message>>,
}

impl Channel {
    pub fn new(uri: Uri, timeout: Duration) -> Self {
        Self {
            uri,
            timeout,
            conn: None,
        }
    }

    /// Calls `path` with `message`: connects when not connected, and the whole call is
    /// bounded by the channel's timeout. Any failure closes the connection.
    pub async fn unary(&mut self, path: &'static str, message: Message) -> Result<(), String> {
        let sent = tokio::time::timeout(self.timeout, self.call(path, message)).await;
        let r = sent.unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)));
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn call(&mut self, path: &'static str, message: Message) -> Result<(), String> {
        let conn = match &mut self.conn {
            Some(c) if !c.is_closed() => c,
            _ => self.conn.insert(self.connect().await?),
        };
        conn.ready().await.map_err(|e| e.to_string())?;
        let mut req = Request::new(message);
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("{}{path}", self.uri.to_string().trim_end_matches('/'))
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
        let h = req.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(http::header::TE, HeaderValue::from_static("trailers"));
        let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("HTTP status {}", resp.status()));
        }
        // A trailers-only reply carries the status in its headers.
        if let Some(s) = status(resp.headers()) {
            return s;
        }
        let all = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        match all.trailers().and_then(status) {
            Some(s) => s,
            None => Err("the reply has no grpc-status".into()),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Message>, String> {
        let authority = self
            .uri
            .authority()
            .ok_or_else(|| "the endpoint has no host".to_string())?
            .as_str();
        let tcp = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connecting to {authority}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .map_err(|e| format!("HTTP/2 handshake with {authority}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "OTLP connection ended");
            }
        });
        Ok(send)
    }
}

/// `grpc-status` (and `grpc-message`) as a result, when present.
fn status(h: &http::HeaderMap) -> Option<Result<(), String>> {
    let code = h.get("grpc-status")?;
    if code == "0" {
        return Some(Ok(()));
    }
    let message = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("");
    Some(Err(format!(
        "gRPC status {}: {message}",
        code.to_str().unwrap_or("?")
    )))
}
