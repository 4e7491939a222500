//! Idle upstream connections, one pool per worker thread.
//!
//! Each worker runs a single-threaded runtime and a task never leaves the thread it started
//! on, so a thread-local pool needs no lock: checkout and return are a hash lookup and a
//! `Vec` push or pop. Connections are keyed by cluster (its reload-stable id), endpoint and
//! protocol, so two clusters never share a connection.

pub use super::cluster::PoolKey;
use super::h1::H1Conn;
use crate::body::RequestBody;
use hyper::client::conn::{http1, http2};
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Most idle HTTP/1.1 connections kept per key and worker; more are closed.
const MAX_IDLE_PER_KEY: usize = 256;

pub enum Sender {
    /// Membrane's own HTTP/1.1 client connection: one request at a time. Boxed, so that the
    /// response body that owns it during a request stays small to move.
    Http1(Box<H1Conn>),
    /// hyper's HTTP/2 client: shared by concurrent requests.
    Http2(http2::SendRequest<RequestBody>),
    /// hyper's HTTP/1.1 client over TLS: one request at a time.
    Tls1(http1::SendRequest<RequestBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
            Sender::Tls1(s) => s.is_closed(),
        }
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<FxHashMap<PoolKey, Vec<Idle>>> = RefCell::new(FxHashMap::default());
}

/// Takes an idle connection for `key`, dropping any that closed or idled past `max_idle`.
/// An HTTP/2 connection is shared: it stays in the pool and a clone is handed out.
pub fn checkout(key: &PoolKey, max_idle: Duration) -> Option<Sender> {
    IDLE.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.get_mut(key)?;
        let now = Instant::now();
        while let Some(idle) = list.pop() {
            if idle.sender.is_closed() || now.duration_since(idle.since) > max_idle {
                continue;
            }
            if let Sender::Http2(s) = &idle.sender {
                let shared = Sender::Http2(s.clone());
                list.push(Idle {
                    sender: idle.sender,
                    since: now,
                });
                return Some(shared);
            }
            return Some(idle.sender);
        }
        None
    })
    .ok()
    .flatten()
}

/// Puts a connection back once its exchange is complete.
pub fn checkin(key: PoolKey, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    let _ = IDLE.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_KEY {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    });
}

/// Gives back an HTTP/1.1 connection whose response has been read to its end (the hand-back
/// Membrane's own client's bodies are given, so that they need not know the pool).
pub fn checkin_http1(key: PoolKey, conn: Box<H1Conn>) {
    checkin(key, Sender::Http1(conn));
}

/// Registers a new HTTP/2 connection so later requests on this worker share it.
pub fn share_http2(key: PoolKey, sender: &http2::SendRequest<RequestBody>) {
    checkin(key, Sender::Http2(sender.clone()));
}
