//! The idle timeout of a downstream HTTP/2 connection: closed once it has had no open
//! stream for the listener's `idle_timeout`. hyper's HTTP/2 server has no such timeout (its
//! keep-alive pings find dead peers, not idle ones), so a client could hold a connection
//! and its file descriptor forever after its preface.
//!
//! A stream counts as open from the moment its request reaches the service until its
//! response body is dropped (sent to its end, or reset). Assumption: a request body still
//! arriving after its response has ended is not counted; hyper's server ends such a stream.
//!
//! Two more bounds live here, both on streamed response bodies:
//! - **The client stops reading** (`send_timeout`): hyper pulls a body's next frame only
//!   when flow control and its send buffer let it, so a client that opens streams and never
//!   reads leaves every body waiting with its upstream connection held. The connection
//!   counts the pulls of all its bodies and the bodies waiting to be pulled; when bodies
//!   wait and no body was pulled for a whole `send_timeout`, the connection is closed (as
//!   nginx's `send_timeout` closes a connection the client does not read). Counting costs
//!   two atomic additions per frame and no clock read; the check is one timer per
//!   connection, so a stall is seen between one and two timeouts after it begins.
//! - **The upstream stops sending** (the cluster's `body_idle_timeout`): a body that has
//!   had nothing for that long fails, and hyper resets the stream. Its timer is made only
//!   when the body first has to wait.

use crate::http::body::ProxyBody;
use crate::upstream::UpstreamBodyError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// One connection's open streams, and since when it has had none.
pub struct Activity {
    epoch: Instant,
    open: AtomicUsize,
    /// Milliseconds since `epoch` at which the last stream closed (0: the connection's start).
    idle_since_ms: AtomicU64,
    /// Bodies that handed hyper a frame and have not been asked for the next one yet.
    waiting: AtomicUsize,
    /// Every time hyper asked any body for a frame.
    pulls: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            pulls: AtomicU64::new(0),
        })
    }

    /// Resolves once bodies have waited for the client a whole `timeout` while none was
    /// pulled: the client has stopped reading.
    pub async fn stalled(&self, timeout: Duration) {
        let mut seen = self.pulls.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(timeout).await;
            let now = self.pulls.load(Ordering::Relaxed);
            if now == seen && self.waiting.load(Ordering::Relaxed) > 0 {
                return;
            }
            seen = now;
        }
    }

    /// Counts a stream as open until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self.clone())
    }

    /// How long the connection has had no open stream; `None` while one is open.
    fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(since))
    }

    /// Resolves once the connection has had no open stream for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let wait = match self.idle_for() {
                // A stream is open: look again after a whole timeout, the soonest it can end.
                None => timeout,
                Some(idle) if idle >= timeout => return,
                Some(idle) => timeout - idle,
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// An open stream; closes it when dropped.
pub struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        let a = &self.0;
        // The time first: a checker that sees no open stream then sees this one's end.
        let now = u64::try_from(a.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.fetch_max(now, Ordering::AcqRel);
        a.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its stream counted as open until it is dropped, counts its
/// pulls for the stall check, and gives up on an upstream that sends nothing for its idle
/// timeout.
pub struct Tracked {
    body: ProxyBody,
    open: Open,
    /// A frame was handed over and the next one not asked for yet.
    handed: bool,
    /// Made when the body first has to wait; re-armed after each frame.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since the idle timer was last armed.
    moved: bool,
}

impl Tracked {
    pub fn new(body: ProxyBody, open: Open) -> Self {
        Self {
            body,
            open,
            handed: false,
            idle: None,
            moved: false,
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let me = self.get_mut();
        let activity = &me.open.0;
        activity.pulls.fetch_add(1, Ordering::Relaxed);
        if me.handed {
            me.handed = false;
            activity.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        match Pin::new(&mut me.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                me.handed = true;
                me.moved = true;
                activity.waiting.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                let idle = me.body.idle_timeout();
                let timer = me.idle.get_or_insert_with(|| {
                    me.moved = false;
                    Box::pin(tokio::time::sleep(idle))
                });
                if std::mem::take(&mut me.moved) {
                    timer.as_mut().reset(tokio::time::Instant::now() + idle);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(UpstreamBodyError::Idle(idle)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.handed {
            self.open.0.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_only_while_no_stream_is_open() {
        let a = Activity::new();
        assert!(a.idle_for().is_some_and(|d| d < Duration::from_secs(1)));
        let s1 = a.open();
        let s2 = a.open();
        assert_eq!(a.idle_for(), None, "streams are open");
        drop(s1);
        assert_eq!(a.idle_for(), None, "one stream is still open");
        std::thread::sleep(Duration::from_millis(20));
        let before_end = Instant::now();
        drop(s2);
        let idle = a.idle_for().unwrap();
        // Idle from the last stream's end, not from the connection's start (20 ms before
        // it); the clock counts whole milliseconds.
        assert!(
            idle <= before_end.elapsed() + Duration::from_millis(1),
            "{idle:?}"
        );
    }

    #[test]
    fn idle_resolves_after_the_timeout() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let a = Activity::new();
        let start = Instant::now();
        rt.block_on(a.idle(Duration::from_millis(50)));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
