//! The control API over HTTPS+JSON, on its own listener (`--api`), with the control server's
//! own certificate (the one ADS uses) when it is the cells' CA, in plaintext with
//! `--insecure`. Three calls, each a POST of a JSON body with `Authorization: Bearer
//! <operator token>`:
//!
//! - `/v1/change` `{"request": {"action": "apply"|"delete"|"promote", ...}, "revision":
//!   N?, "dry_run": bool}` → an [`Outcome`](super::Outcome), with its status as the
//!   HTTP status;
//! - `/v1/get` `{"kind": K?, "name": N?}` → a [`Listing`](super::Listing);
//! - `/v1/audit` a [`Filter`](super::audit::Filter) → the records.
//!
//! Bodies are at most 1 MiB; everything else is refused with a JSON `{"errors": [...]}`.

use super::audit::Filter;
use super::scope::{self, CredentialError, Operator};
use super::{Manager, Request};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

const MAX_BODY: usize = 1 << 20;

/// The TLS configuration as it is now (it changes when the certificate is renewed).
pub type TlsNow = Arc<RwLock<Arc<rustls::ServerConfig>>>;

#[derive(Deserialize)]
struct ChangeBody {
    request: Request,
    #[serde(default)]
    revision: Option<i64>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize, Default)]
struct GetBody {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

type Response = hyper::Response<Full<Bytes>>;

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let text = serde_json::to_vec(body).unwrap_or_default();
    let mut r = hyper::Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &serde_json::json!({ "errors": [message.into()] }))
}

/// Serves the API; the bound address.
pub async fn serve(
    addr: SocketAddr,
    manager: Arc<Manager>,
    tls: Option<TlsNow>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "control API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let manager = manager.clone();
            let tls = tls.as_ref().map(|t| match t.read() {
                Ok(c) => c.clone(),
                Err(p) => p.into_inner().clone(),
            });
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let manager = manager.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&manager, req, peer).await) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                    Some(config) => {
                        // The ADS listener's configuration, speaking HTTP/1.1.
                        let mut config = (*config).clone();
                        config.alpn_protocols = vec![b"http/1.1".to_vec()];
                        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(stream)) => {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "control API: TLS handshake failed");
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "control API: TLS handshake timed out")
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(bound)
}

async fn authenticate(
    manager: &Manager,
    req: &hyper::Request<hyper::body::Incoming>,
) -> Result<Operator, CredentialError> {
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(CredentialError::Missing)?;
    scope::authenticate(&manager.store, token.trim()).await
}

async fn handle(
    manager: &Manager,
    req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response {
    if req.method() != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the control API takes POST /v1/change, /v1/get, /v1/audit",
        );
    }
    let op = match authenticate(manager, &req).await {
        Ok(op) => op,
        Err(CredentialError::Store(e)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
        Err(e) => {
            tracing::warn!(%peer, path = req.uri().path(), reason = %e, "control API: refused a request without a valid credential");
            return error(StatusCode::UNAUTHORIZED, e.to_string());
        }
    };
    let path = req.uri().path().to_owned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body could not be read (at most {MAX_BODY} bytes): {e}"),
            );
        }
    };
    match path.as_str() {
        "/v1/change" => {
            let b: ChangeBody = match serde_json::from_slice(&body) {
                Ok(b) => b,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body: {e}")),
            };
            let out = manager.change(&op, &b.request, b.revision, b.dry_run).await;
            tracing::info!(operator = %op.name, status = out.status, accepted = out.accepted, dry_run = b.dry_run, revision = out.revision, "control API change");
            let status = StatusCode::from_u16(out.status).unwrap_or(StatusCode::OK);
            json(status, &out)
        }
        "/v1/get" => {
            let b: GetBody = match serde_json::from_slice(&body) {
                Ok(b) => b,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body: {e}")),
            };
            if let Some(k) = &b.kind
                && !super::is_kind(k)
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown kind `{k}`; valid kinds: {}",
                        crate::spec::load::KINDS
                    ),
                );
            }
            match manager
                .get(&op.scope, b.kind.as_deref(), b.name.as_deref())
                .await
            {
                Ok(l) => json(StatusCode::OK, &l),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        "/v1/audit" => {
            let f: Filter = match serde_json::from_slice(&body) {
                Ok(f) => f,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body: {e}")),
            };
            match manager.audit_records(&op, &f).await {
                Ok(r) => json(StatusCode::OK, &r),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "the control API takes POST /v1/change, /v1/get, /v1/audit",
        ),
    }
}
