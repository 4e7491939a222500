//! A request body on its way upstream, whichever server read it: hyper's (HTTP/2) or
//! Membrane's own HTTP/1.x loop (`reader`, over the connection's read side).

mod reader;

pub use reader::{BodyReader, ReadSide};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The body of a request on its way upstream: from hyper's server (HTTP/2, `auto`
/// listeners) or from Membrane's own HTTP/1.1 server.
#[derive(Default)]
pub enum RequestBody {
    Hyper(hyper::body::Incoming),
    Native(BodyReader),
    /// A body read whole beforehand, so that a retry can send it again.
    Buffered(Option<Bytes>),
    #[default]
    Empty,
}

/// Reading a request body from the client failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    Native(#[from] crate::h1::H1Error),
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
            RequestBody::Buffered(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(b) => b.is_end_stream(),
            RequestBody::Native(b) => b.is_end_stream(),
            RequestBody::Buffered(b) => b.is_none(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Hyper(b) => b.size_hint(),
            RequestBody::Native(b) => b.size_hint(),
            RequestBody::Buffered(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64))
            }
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
