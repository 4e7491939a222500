//! The response body of HTTP/1.1 to TLS upstreams, with hyper's client. (Membrane's own HTTP/1.1 client reads and
//! writes one TCP socket through shared references, full duplex; a TLS session cannot be
//! shared that way, and upstream TLS is not on the path the speed targets measure.)
//! The connection goes back to this worker's pool when the response body has been read to
//! its end; a body dropped early takes its connection with it.

use super::pool::{self, PoolKey, Sender};
use crate::body::RequestBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

pub struct PooledBody {
    body: Incoming,
    back: Option<(PoolKey, http1::SendRequest<RequestBody>)>,
}

impl PooledBody {
    /// The body of a response on `sender`'s connection, which goes back to the pool under
    /// `key` once the body has ended.
    pub(super) fn new(
        body: Incoming,
        key: PoolKey,
        sender: http1::SendRequest<RequestBody>,
    ) -> Self {
        let mut b = Self {
            body,
            back: Some((key, sender)),
        };
        if b.body.is_end_stream() {
            b.finish();
        }
        b
    }

    fn finish(&mut self) {
        if let Some((key, sender)) = self.back.take() {
            pool::checkin(key, Sender::Tls1(sender));
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.finish(),
            Some(Err(_)) => self.back = None,
            Some(Ok(_)) if self.body.is_end_stream() => self.finish(),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
