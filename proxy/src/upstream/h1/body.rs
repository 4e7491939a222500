//! The response body, read from the upstream connection frame by frame.

use super::conn::H1Conn;
use crate::h1::H1Error;
use crate::h1::framing::{Framing, Source, Step, poll_decode};
use crate::h1::response::{FinalHead, Positions, RawFields};
use crate::upstream::cluster::PoolKey;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// Takes a connection back for reuse.
pub type GiveBack = fn(PoolKey, Box<H1Conn>);

/// A response body streamed from an upstream HTTP/1.1 connection. Once read to its end, the
/// connection goes back to this worker's pool if it can carry another request; dropped
/// early, the connection is closed.
pub struct H1Body {
    conn: Option<Box<H1Conn>>,
    key: PoolKey,
    /// Where a connection goes once its response is read to its end (the worker's pool).
    give_back: GiveBack,
    framing: Framing,
    keep_alive: bool,
    /// The response's end-to-end header fields, as bytes of its head.
    fields: RawFields,
    positions: Positions,
}

impl H1Body {
    /// The response for a parsed head; `reusable` is false when the connection cannot
    /// carry another request whatever the head says (the request body was cut short).
    pub(super) fn response(
        mut conn: Box<H1Conn>,
        key: PoolKey,
        give_back: GiveBack,
        head: FinalHead,
        reusable: bool,
    ) -> http::Response<Self> {
        let FinalHead {
            parts,
            framing,
            keep_alive,
            fields,
        } = head;
        let positions = std::mem::take(&mut conn.scratch);
        let body = Self {
            conn: Some(conn),
            key,
            give_back,
            framing,
            keep_alive: keep_alive && reusable,
            fields,
            positions,
        };
        http::Response::from_parts(parts, body)
    }

    /// Writes the response's header fields as they came (Membrane's HTTP/1.1 server).
    pub fn write_fields(&self, out: &mut Vec<u8>) {
        self.fields.write(&self.positions, out);
    }

    /// Whether the fields include `Date` and `Content-Length`.
    pub fn has_date_and_length(&self) -> (bool, bool) {
        (self.fields.has_date, self.fields.has_length)
    }

    /// The header fields as a map, for a server that needs one (hyper's HTTP/2).
    pub fn header_map(&self) -> http::HeaderMap {
        self.fields.to_map(&self.positions)
    }

    /// The body has ended: the connection is pooled when nothing forbids it.
    fn finish(&mut self) {
        self.framing = Framing::Empty;
        if let Some(mut conn) = self.conn.take()
            && self.keep_alive
            && conn.rbuf.is_empty()
        {
            // The positions vector goes back to serve the connection's next response.
            conn.scratch = std::mem::take(&mut self.positions);
            conn.forget_readiness();
            (self.give_back)(self.key, conn);
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(poll_decode(&mut self.framing, &mut **conn, cx)) {
            Ok(Step::Frame(f)) => {
                if matches!(self.framing, Framing::Empty) {
                    self.finish();
                }
                Poll::Ready(Some(Ok(f)))
            }
            Ok(Step::End) => {
                self.finish();
                Poll::Ready(None)
            }
            Ok(Step::Closed) => {
                self.keep_alive = false;
                self.finish();
                Poll::Ready(None)
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

impl Source for H1Conn {
    fn buf(&mut self) -> &mut BytesMut {
        &mut self.rbuf
    }
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        H1Conn::poll_fill(self, cx)
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body known to be complete (no bytes, or all read) that nobody polled to its end
        // still gives its connection back.
        if matches!(self.framing, Framing::Empty) {
            self.finish();
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.get_mut().poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.framing, Framing::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::UpstreamProtocol;
    use crate::upstream::cluster::OpenConnection;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    /// Encodes `data` as a chunked body with random chunk sizes, extensions and a trailer.
    fn encode_chunked(rng: &mut fastrand::Rng, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = rng.usize(1..=rest.len().min(300));
            let ext = if rng.bool() { ";a=b" } else { "" };
            out.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n");
        if rng.bool() {
            out.extend_from_slice(b"x-sum: 42\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    #[tokio::test]
    async fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut rng = fastrand::Rng::with_seed(5);
        for round in 0..40 {
            let data: Vec<u8> = (0..rng.usize(0..2000)).map(|_| rng.u8(..)).collect();
            let wire = encode_chunked(&mut rng, &data);
            let (client, server) =
                tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
            let (mut server, _) = server.unwrap();
            let conn = Box::new(H1Conn::new(client.unwrap(), OpenConnection::for_test()));
            let key = PoolKey {
                cluster: 0,
                addr,
                protocol: UpstreamProtocol::Http1,
                tls: 0,
            };
            let cuts: Vec<usize> = {
                let mut c: Vec<usize> = (0..rng.usize(0..6))
                    .map(|_| rng.usize(0..=wire.len()))
                    .collect();
                c.sort_unstable();
                c
            };
            let writer = tokio::spawn(async move {
                let mut at = 0;
                for cut in cuts.into_iter().chain([wire.len()]) {
                    server.write_all(&wire[at..cut]).await.unwrap();
                    server.flush().await.unwrap();
                    at = cut;
                    tokio::task::yield_now().await;
                }
                server
            });
            let head = FinalHead {
                parts: http::Response::new(()).into_parts().0,
                framing: Framing::chunked(),
                keep_alive: true,
                fields: RawFields {
                    head: Bytes::new(),
                    has_date: false,
                    has_length: false,
                },
            };
            let body = H1Body::response(conn, key, |_, _| {}, head, true).into_body();
            let collected = body
                .collect()
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            let trailers = collected.trailers().cloned();
            assert_eq!(collected.to_bytes(), data, "round {round}");
            if let Some(t) = trailers {
                assert_eq!(t["x-sum"], "42");
            }
            drop(writer.await.unwrap());
        }
    }
}
