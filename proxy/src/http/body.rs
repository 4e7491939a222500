use crate::upstream::{InFlight, UpstreamBody, UpstreamBodyError};

pub use crate::body::{RequestBody, RequestBodyError};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The body of every response the proxy sends: streamed from an upstream, or made here.
pub enum ProxyBody {
    /// Streams frame by frame, never buffered whole; the in-flight record counts the
    /// request against its endpoint until the body is done.
    Upstream {
        body: UpstreamBody,
        in_flight: InFlight,
        /// The cluster's `body_idle_timeout`: the most the upstream may stay silent
        /// between two frames of this body.
        idle_timeout: std::time::Duration,
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

    pub fn upstream(
        body: UpstreamBody,
        in_flight: InFlight,
        idle_timeout: std::time::Duration,
    ) -> Self {
        ProxyBody::Upstream {
            body,
            in_flight,
            idle_timeout,
        }
    }

    /// How long a wait for this body's next frame may last: the cluster's idle timeout for
    /// an upstream's body; a body made here never waits.
    pub fn idle_timeout(&self) -> std::time::Duration {
        match self {
            ProxyBody::Upstream { idle_timeout, .. } => *idle_timeout,
            ProxyBody::Full(_) => std::time::Duration::MAX,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
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
