use crate::upstream::InFlight;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// The body of every response the proxy sends: streamed from an upstream, or made here.
pub enum ProxyBody {
    /// Streams frame by frame, never buffered whole. Once the upstream body has ended, the
    /// in-flight record lets the upstream connection go back to the pool.
    Upstream {
        body: Incoming,
        in_flight: InFlight,
    },
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody::Full(Some(bytes))
    }

    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    pub fn upstream(body: Incoming, mut in_flight: InFlight) -> Self {
        if body.is_end_stream() {
            in_flight.complete();
        }
        ProxyBody::Upstream { body, in_flight }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, in_flight } => {
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                // hyper may stop polling as soon as it sees the end, so check after each frame.
                if frame.is_none() || body.is_end_stream() {
                    in_flight.complete();
                }
                Poll::Ready(frame)
            }
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}
