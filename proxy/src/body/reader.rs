//! A request body read from a downstream HTTP/1.1 connection while the request is proxied.

use crate::h1::H1Error;
use crate::h1::framing::{Framing, Source, Step, poll_decode};
use crate::stream::DownRead;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use tokio::io::AsyncReadExt;

/// The reading side of a downstream connection while a request body is being read. The
/// connection loop takes it back once the exchange is over.
pub struct ReadSide {
    pub rd: DownRead,
    pub rbuf: BytesMut,
    pub framing: Framing,
}

impl Source for ReadSide {
    fn buf(&mut self) -> &mut BytesMut {
        &mut self.rbuf
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 * 1024);
        }
        // The read future holds nothing but its two borrows, so polling a fresh one each
        // time is the same as keeping one.
        let read = self.rd.read_buf(&mut self.rbuf);
        std::pin::pin!(read).poll(cx)
    }
}

/// The body handed to the proxy; shares the read side with the connection loop (the lock is
/// uncontended: one task per connection, or hyper's HTTP/2 body pipe while it streams).
pub struct BodyReader {
    pub side: Arc<Mutex<Option<ReadSide>>>,
}

impl BodyReader {
    fn lock(&self) -> MutexGuard<'_, Option<ReadSide>> {
        self.side.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Body for BodyReader {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let mut guard = self.lock();
        // The connection took its read side back: the exchange is over.
        let Some(side) = guard.as_mut() else {
            return Poll::Ready(Some(Err(H1Error::Protocol("the request is over"))));
        };
        // The framing is taken out for the call so the decoder can borrow the rest.
        let mut framing = std::mem::replace(&mut side.framing, Framing::Empty);
        let step = poll_decode(&mut framing, &mut *side, cx);
        side.framing = framing;
        match ready!(step) {
            Ok(Step::Frame(f)) => Poll::Ready(Some(Ok(f))),
            Ok(Step::End | Step::Closed) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lock()
            .as_ref()
            .is_none_or(|s| matches!(s.framing, Framing::Empty))
    }

    fn size_hint(&self) -> SizeHint {
        match self.lock().as_ref().map(|s| &s.framing) {
            None | Some(Framing::Empty) => SizeHint::with_exact(0),
            Some(Framing::Length(n)) => SizeHint::with_exact(*n),
            Some(_) => SizeHint::default(),
        }
    }
}
