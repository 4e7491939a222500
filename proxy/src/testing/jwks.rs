//! A JWKS server over HTTPS on 127.0.0.1 whose key set, or failure, the test sets, and which
//! counts the fetches it answers and notes when each arrived.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    body: Mutex<String>,
    failing: AtomicBool,
    fetches: AtomicUsize,
    /// When each fetch arrived.
    arrivals: Mutex<Vec<std::time::Instant>>,
    /// `Cache-Control: max-age` sent with the key set (0: none).
    max_age: AtomicUsize,
}

impl JwksServer {
    /// Serves `jwks` at any path, over TLS with this certificate.
    pub async fn start(cert: &Path, key: &Path, jwks: &str) -> Self {
        let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(super::tls::load_certs(cert), super::tls::load_key(key))
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            body: Mutex::new(jwks.to_owned()),
            failing: AtomicBool::new(false),
            fetches: AtomicUsize::new(0),
            arrivals: Mutex::new(Vec::new()),
            max_age: AtomicUsize::new(0),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // Noted at accept: every fetch opens a connection of its own, and the
                // handshake's time is not the fetcher's schedule.
                s.arrivals.lock().unwrap().push(std::time::Instant::now());
                let (s, acceptor) = (s.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(move |_req| {
                        let s = s.clone();
                        async move {
                            s.fetches.fetch_add(1, Ordering::Relaxed);
                            let mut r = if s.failing.load(Ordering::Relaxed) {
                                Response::new(Full::new(Bytes::from_static(b"unavailable")))
                            } else {
                                let body = s.body.lock().unwrap().clone();
                                Response::new(Full::new(Bytes::from(body)))
                            };
                            if s.failing.load(Ordering::Relaxed) {
                                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                            }
                            let age = s.max_age.load(Ordering::Relaxed);
                            if age > 0 {
                                r.headers_mut().insert(
                                    http::header::CACHE_CONTROL,
                                    format!("public, max-age={age}").parse().unwrap(),
                                );
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn set_jwks(&self, jwks: &str) {
        *self.state.body.lock().unwrap() = jwks.to_owned();
    }

    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::Relaxed);
    }

    pub fn set_max_age(&self, secs: usize) {
        self.state.max_age.store(secs, Ordering::Relaxed);
    }

    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::Relaxed)
    }

    /// When each fetch so far connected, oldest first.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.state.arrivals.lock().unwrap().clone()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
