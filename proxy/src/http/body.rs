use crate::upstream::{InFlight, UpstreamBody, UpstreamBodyError};
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

/// The body of a request on its way upstream: from hyper's server (HTTP/2, `auto`
/// listeners) or from Membrane's own HTTP/1.1 server.
pub enum RequestBody {
    Hyper(hyper::body::Incoming),
    Native(crate::downstream::BodyReader),
    Empty,
}

/// Reading a request body from the client failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    Native(#[from] crate::upstream::h1::H1Error),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match self.get_mut() {
            RequestBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Native(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(b) => b.is_end_stream(),
            RequestBody::Native(b) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Hyper(b) => b.size_hint(),
            RequestBody::Native(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
