//! The admin listener: `/metrics`, `/ready`, `/live`, `/config`. It runs on the control
//! thread, apart from the workers, so a slow scrape never delays traffic.

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the admin endpoints report besides the snapshot.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub state: Arc<ArcSwap<Snapshot>>,
    pub config_path: PathBuf,
    pub draining: AtomicBool,
    /// False until the first complete configuration is in place (xDS mode).
    pub ready: AtomicBool,
    /// What the xDS client reports (versions, last ACK, NACK reasons), shown on `/config`.
    pub status: Mutex<Option<serde_json::Value>>,
    /// The last refused reload, cleared by the next good one.
    pub last_error: Mutex<Option<String>>,
}

pub async fn serve(listener: tokio::net::TcpListener, admin: Arc<AdminState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(respond(&admin, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(admin: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    // Envoy's name; `SIGUSR1` does the same (nginx's). The one change the admin listener
    // takes: it asks for nothing but a reopen of the files already named.
    if req.uri().path() == "/reopen_logs" {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        }
        crate::access_log::reopen();
        return text(
            StatusCode::OK,
            "access logs reopen before their next line\n",
        );
    }
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let snap = admin.state.load();
            admin.metrics.set_cert_expiry(&snap.certificates(), now);
            for p in snap.providers.values() {
                if let Some(age) = p.keys.age(now as u64) {
                    p.keys.metrics.age.set(age as i64);
                }
            }
            use crate::metrics::exposition;
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let text = admin.metrics.encode();
            let (body, kind) = if exposition::wants_openmetrics(accept) {
                (text, exposition::OPENMETRICS)
            } else {
                (exposition::classic(&text), exposition::CLASSIC)
            };
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
            r
        }
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => {
            if admin.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !admin.ready.load(Ordering::Relaxed) {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for the first configuration\n",
                )
            } else if admin
                .state
                .load()
                .providers
                .values()
                .any(|p| p.keys.is_remote() && p.keys.current().keys.is_empty())
            {
                // Tokens for such a provider would all get 401 until its keys arrive.
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for a JWT provider's key set\n",
                )
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        "/config" => {
            let snap = admin.state.load();
            let last_error = admin
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            let body = serde_json::json!({
                "generation": snap.generation,
                "version": snap.version,
                "source": admin.config_path.display().to_string(),
                "last_reload_error": last_error,
                "xds": admin.status.lock().ok().and_then(|s| s.clone()),
                "clusters": clusters_now(&snap),
                "config": snap.source,
            });
            let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "admin endpoints: /metrics /ready /live /config\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Each cluster's state now: its endpoints (in the rotation, held down by health checks,
/// ejected), open connections and what its circuit breakers hold.
fn clusters_now(snap: &Snapshot) -> serde_json::Value {
    use crate::upstream::breaker::Limit;
    let mut out = serde_json::Map::new();
    for (name, c) in snap.clusters.iter() {
        let endpoints: Vec<serde_json::Value> = c
            .endpoints
            .iter()
            .map(|e| {
                serde_json::json!({
                    "address": e.addr.to_string(),
                    "available": e.health.available(),
                    "health_check_down": e.health.is_checked_down(),
                    "ejected": e.health.is_ejected(),
                })
            })
            .collect();
        let held = &c.shared.breakers;
        out.insert(
            name.to_string(),
            serde_json::json!({
                "endpoints": endpoints,
                "open_connections": c.shared.open_connections.load(std::sync::atomic::Ordering::Relaxed),
                "requests": held.held(Limit::Requests),
                "pending": held.held(Limit::Pending),
                "retries": held.held(Limit::Retries),
            }),
        );
    }
    serde_json::Value::Object(out)
}
