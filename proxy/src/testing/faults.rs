//! A fault-injecting upstream for resilience tests: a real HTTP/1.1 server on 127.0.0.1
//! whose behaviour a test switches while it serves (answer, fail with a status, fail every
//! other request, hang), that can be killed (listener closed and every open
//! connection dropped: new connections are refused) and started again on its address.
//! `/healthz` answers by a health switch of its own, so checks can fail while traffic
//! would not.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// What the upstream does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 200 with `x-upstream: <name>` and the request body echoed.
    Answer,
    /// Every request gets this status (and `retry-after` when `set_retry_after` says).
    Status(u16),
    /// Every other request gets 503, the others are answered.
    EveryOther503,
    /// The request is read and never answered until `release` (or `kill`, which resets
    /// the connection).
    Hang,
}

struct State {
    name: String,
    fault: Mutex<Fault>,
    healthy: AtomicBool,
    retry_after: AtomicU16,
    /// Requests received (health checks not counted).
    received: AtomicUsize,
    answered_200: AtomicUsize,
    hanging: AtomicUsize,
    checks: AtomicUsize,
    release: Notify,
    tasks: Mutex<Vec<AbortHandle>>,
}

pub struct FaultyUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl FaultyUpstream {
    pub async fn start(name: &str) -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(State {
            name: name.to_owned(),
            fault: Mutex::new(Fault::Answer),
            healthy: AtomicBool::new(true),
            retry_after: AtomicU16::new(0),
            received: AtomicUsize::new(0),
            answered_200: AtomicUsize::new(0),
            hanging: AtomicUsize::new(0),
            checks: AtomicUsize::new(0),
            release: Notify::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let addr = l.local_addr().unwrap();
        serve(l, state.clone());
        Self { addr, state }
    }

    pub fn set(&self, f: Fault) {
        *self.state.fault.lock().unwrap() = f;
    }

    /// Sends `retry-after: <secs>` with failure statuses (0: none).
    pub fn set_retry_after(&self, secs: u16) {
        self.state.retry_after.store(secs, Ordering::Relaxed);
    }

    pub fn set_healthy(&self, up: bool) {
        self.state.healthy.store(up, Ordering::Relaxed);
    }

    /// Requests received, health checks aside.
    pub fn received(&self) -> usize {
        self.state.received.load(Ordering::Relaxed)
    }

    pub fn answered_200(&self) -> usize {
        self.state.answered_200.load(Ordering::Relaxed)
    }

    /// Requests held by `Fault::Hang` now.
    pub fn hanging(&self) -> usize {
        self.state.hanging.load(Ordering::Relaxed)
    }

    pub fn checks(&self) -> usize {
        self.state.checks.load(Ordering::Relaxed)
    }

    /// Lets every hanging request go (answered 200).
    pub fn release(&self) {
        self.state.release.notify_waiters();
    }

    /// Closes the listener and drops every open connection: new connections are refused.
    pub fn kill(&self) {
        for t in self.state.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// [`kill`](Self::kill), and waits until the listener and every connection are gone
    /// (an aborted task ends at its next poll, which a loaded machine may delay: until
    /// then it may still answer).
    pub async fn stop(&self) {
        let tasks: Vec<_> = self.state.tasks.lock().unwrap().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        // Bounded: five seconds at most.
        for _ in 0..500 {
            if tasks.iter().all(|t| t.is_finished()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Listens again on the same address.
    pub async fn revive(&self) {
        let l = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        serve(l, self.state.clone());
    }
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(l: tokio::net::TcpListener, state: Arc<State>) {
    let s = state.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else {
                continue;
            };
            let st = s.clone();
            let conn = tokio::spawn(async move {
                let st2 = st.clone();
                let svc = service_fn(move |req| answer(st2.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            s.tasks.lock().unwrap().push(conn.abort_handle());
        }
    });
    state.tasks.lock().unwrap().push(accept.abort_handle());
}

async fn answer(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/healthz" {
        st.checks.fetch_add(1, Ordering::Relaxed);
        let status = if st.healthy.load(Ordering::Relaxed) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Ok(reply(&st, status, Bytes::new()));
    }
    let n = st.received.fetch_add(1, Ordering::Relaxed);
    let fault = *st.fault.lock().unwrap();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let status = match fault {
        Fault::Answer => StatusCode::OK,
        Fault::Status(s) => StatusCode::from_u16(s).unwrap(),
        Fault::EveryOther503 if n.is_multiple_of(2) => StatusCode::SERVICE_UNAVAILABLE,
        Fault::EveryOther503 => StatusCode::OK,
        Fault::Hang => {
            st.hanging.fetch_add(1, Ordering::Relaxed);
            st.release.notified().await;
            st.hanging.fetch_sub(1, Ordering::Relaxed);
            StatusCode::OK
        }
    };
    if status == StatusCode::OK {
        st.answered_200.fetch_add(1, Ordering::Relaxed);
    }
    Ok(reply(&st, status, body))
}

fn reply(st: &State, status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("x-upstream", st.name.parse().unwrap());
    let ra = st.retry_after.load(Ordering::Relaxed);
    if status.is_server_error() && ra > 0 {
        r.headers_mut().insert("retry-after", ra.into());
    }
    r
}
