//! Per-worker buffers, so that an idle HTTP/1.1 connection holds none.
//!
//! A keep-alive connection waiting for its next request used to keep an 8 KiB read buffer
//! and a 4 KiB write buffer (and the request path's future, now boxed per request): 25 kB
//! of RSS per idle connection, measured with 5,000 of them. Now:
//!
//! - The first read of each request head lands in this thread's landing buffer; only when
//!   bytes arrive is a read buffer allocated for the connection and the bytes copied in (a
//!   request head, a few hundred bytes). While it waits, the connection holds no buffer.
//! - A head's field positions are collected in this thread's list while it is parsed (a
//!   kilobyte per connection when each kept its own).
//! - Response heads and small bodies are written through a write buffer taken from this
//!   thread's pool for the response and given back after it.
//!
//! Each worker is one thread (a current-thread runtime), and neither buffer is borrowed
//! across an await, so a thread-local `RefCell` is enough.

use crate::h1::fields::FieldSpan;
use bytes::BytesMut;
use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// What a landing read takes at most (a head is read on in the connection's own buffer).
const LANDING: usize = 16 * 1024;
/// The read buffer a connection gets once bytes arrive.
pub const READ_BUF: usize = 8 * 1024;
/// Write buffers kept for reuse per worker, and the largest kept.
const POOLED: usize = 256;
const POOLED_MAX_CAPACITY: usize = 64 * 1024;
const WRITE_BUF: usize = 4 * 1024;

thread_local! {
    static LANDING_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; LANDING].into_boxed_slice());
    static FIELDS: RefCell<Vec<FieldSpan>> = RefCell::new(Vec::with_capacity(32));
    static WRITE_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Reads from `rd` into `rbuf`, which is empty and may have no capacity: the bytes land in
/// the worker's buffer first and are copied into `rbuf` once they are there. Ok(0) is the
/// end of the stream.
pub async fn read_landing<R: AsyncRead + Unpin>(
    rd: &mut R,
    rbuf: &mut BytesMut,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx: &mut Context<'_>| {
        LANDING_BUF.with(|landing| {
            let mut landing = landing.borrow_mut();
            let mut buf = ReadBuf::new(&mut landing[..]);
            match Pin::new(&mut *rd).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let got = buf.filled();
                    if !got.is_empty() {
                        rbuf.reserve(READ_BUF.max(got.len()));
                        rbuf.extend_from_slice(got);
                    }
                    Poll::Ready(Ok(got.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
}

/// Runs `parse` with this thread's field list (a head parse does not await, so nothing
/// else can hold it meanwhile).
pub fn with_fields<T>(parse: impl FnOnce(&mut Vec<FieldSpan>) -> T) -> T {
    FIELDS.with(|f| parse(&mut f.borrow_mut()))
}

/// A write buffer for one response.
pub fn take_write_buf() -> Vec<u8> {
    WRITE_POOL
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(WRITE_BUF))
}

/// Gives a write buffer back after its response.
pub fn give_write_buf(mut buf: Vec<u8>) {
    if buf.capacity() > POOLED_MAX_CAPACITY {
        return;
    }
    buf.clear();
    WRITE_POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED {
            p.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_landing_read_fills_an_empty_buffer_and_sees_the_end() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut rbuf = BytesMut::new();
        assert_eq!(read_landing(&mut b, &mut rbuf).await.unwrap(), 16);
        assert_eq!(&rbuf[..], b"GET / HTTP/1.1\r\n");
        assert!(rbuf.capacity() >= READ_BUF);
        drop(a);
        let mut empty = BytesMut::new();
        assert_eq!(read_landing(&mut b, &mut empty).await.unwrap(), 0);
        assert_eq!(empty.capacity(), 0, "nothing is allocated for no bytes");
    }

    #[test]
    fn write_buffers_are_reused_and_oversized_ones_dropped() {
        let mut w = take_write_buf();
        w.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let ptr = w.as_ptr();
        give_write_buf(w);
        let again = take_write_buf();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the same allocation comes back");
        give_write_buf(Vec::with_capacity(POOLED_MAX_CAPACITY + 1));
        assert!(take_write_buf().capacity() <= POOLED_MAX_CAPACITY);
    }
}
