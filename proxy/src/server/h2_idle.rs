//! The idle timeout of a downstream HTTP/2 connection: closed once it has had no open
//! stream for the listener's `idle_timeout`. hyper's HTTP/2 server has no such timeout (its
//! keep-alive pings find dead peers, not idle ones), so a client could hold a connection
//! and its file descriptor forever after its preface.
//!
//! A stream counts as open from the moment its request reaches the service until its
//! response body is dropped (sent to its end, or reset). Assumption: a request body still
//! arriving after its response has ended is not counted; hyper's server ends such a stream.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
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
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
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

/// A response body that keeps its stream counted as open until it is dropped.
pub struct Tracked<B> {
    body: B,
    _open: Open,
}

impl<B> Tracked<B> {
    pub fn new(body: B, open: Open) -> Self {
        Self { body, _open: open }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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
        drop(s2);
        // Idle from the last stream's end, not from the connection's start.
        assert!(a.idle_for().is_some_and(|d| d < Duration::from_millis(20)));
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
