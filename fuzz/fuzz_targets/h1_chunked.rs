//! The HTTP/1 body decoder on chunked input, fed in pieces whose sizes come from the input:
//! no input may panic or loop, and the data it yields is never more than it was given.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use membrane_proxy::h1::framing::{Framing, Source, Step, poll_decode};
use std::task::{Context, Poll, Waker};

/// The input, handed over `piece` bytes at a time.
struct Pieces<'a> {
    buf: BytesMut,
    rest: &'a [u8],
    piece: usize,
}

impl Source for Pieces<'_> {
    fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    fn poll_fill(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let n = self.piece.min(self.rest.len());
        self.buf.extend_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Poll::Ready(Ok(n))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, body)) = data.split_first() else {
        return;
    };
    let mut src = Pieces {
        buf: BytesMut::new(),
        rest: body,
        piece: usize::from(piece % 64) + 1,
    };
    let mut framing = Framing::chunked();
    let mut cx = Context::from_waker(Waker::noop());
    let mut yielded = 0usize;
    // Every step consumes input or ends: a step count past the input's length is a loop.
    for _ in 0..=body.len() + 2 {
        match poll_decode(&mut framing, &mut src, &mut cx) {
            Poll::Ready(Ok(Step::Frame(f))) => {
                if let Some(d) = f.data_ref() {
                    yielded += d.len();
                }
                assert!(yielded <= body.len());
            }
            Poll::Ready(Ok(Step::End | Step::Closed)) | Poll::Ready(Err(_)) => return,
            Poll::Pending => return,
        }
    }
    panic!("the decoder did not finish within {} steps", body.len() + 2);
});
