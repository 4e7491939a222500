//! Fixtures for tests (feature `test-util`): real upstream servers on 127.0.0.1 and a helper
//! that starts the proxy from a YAML string. Nothing here is used by the proxy itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod faults;
pub mod jwks;
mod pausable;
pub mod tls;

pub use pausable::Pausable;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An upstream HTTP server (HTTP/1.1 and HTTP/2 prior knowledge on one port). What it does
/// depends on the path:
/// - `/sink`: reads the whole body, answers `{"received": <bytes>}`
/// - `/stream/<n>`: answers `n` bytes, streamed in 64 KiB chunks
/// - `/delay/<ms>`: waits, then echoes
/// - `/status/<code>`: answers with that status
/// - an `Upgrade` request: answers 101 and echoes bytes on the upgraded connection
/// - anything else: echoes the request as JSON (`upstream`, `method`, `uri`, `version`,
///   `headers`)
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    served: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, listener)
    }

    /// Serves on an address (say, one a test stopped an upstream on before).
    pub async fn start_at(name: &str, addr: SocketAddr) -> Upstream {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        Self::serve(name, listener)
    }

    fn serve(name: &str, listener: tokio::net::TcpListener) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let (n, s) = (name.to_owned(), served.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, s) = (n.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        s.fetch_add(1, Ordering::Relaxed);
                        respond(n.clone(), req)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            name: name.to_owned(),
            served,
            task,
        }
    }

    /// Requests this upstream has answered.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops accepting. Open connections are dropped with the runtime's tasks.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn respond(
    name: String,
    mut req: Request<Incoming>,
) -> Result<Response<BoxBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.headers().contains_key(header::UPGRADE) {
        let proto = req.headers()[header::UPGRADE].clone();
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = Response::new(full(""));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut().insert(header::UPGRADE, proto);
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
        return Ok(resp);
    }
    if path == "/sink" {
        let mut body = req.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                Err(_) => break,
            }
        }
        return Ok(json(serde_json::json!({ "received": n })));
    }
    if let Some(n) = path
        .strip_prefix("/stream/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        let body = Repeat::new(n);
        let mut resp = Response::new(BodyExt::boxed(body));
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(n));
        return Ok(resp);
    }
    if let Some(ms) = path
        .strip_prefix("/delay/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|n| n.parse::<u16>().ok())
    {
        let mut resp = Response::new(full(""));
        *resp.status_mut() = StatusCode::from_u16(code).unwrap();
        return Ok(resp);
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
            )
        })
        .collect();
    Ok(json(serde_json::json!({
        "upstream": name,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    })))
}

/// `left` bytes, produced on demand one chunk at a time: a large body that never exists in
/// memory as a whole.
pub struct Repeat {
    left: u64,
    chunk: Bytes,
}

impl Repeat {
    pub fn new(total: u64) -> Self {
        Repeat {
            left: total,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        let data = self.chunk.slice(..n as usize);
        std::task::Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

fn full(s: &'static str) -> BoxBody {
    BodyExt::boxed(Full::new(Bytes::from_static(s.as_bytes())))
}

fn json(v: serde_json::Value) -> Response<BoxBody> {
    let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from(v.to_string()))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A config file in a fresh temporary directory.
pub fn write_config(yaml: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "membrane-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("membrane.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Starts the proxy from YAML (no file watch); returns its handle and the file's path.
pub fn start_proxy(yaml: &str) -> (crate::ProxyHandle, PathBuf) {
    let path = write_config(yaml);
    let handle = crate::start(crate::StartOptions::file(path.clone(), false))
        .unwrap_or_else(|e| panic!("proxy did not start: {e}"));
    (handle, path)
}
