//! Every failure the request path can meet, and the one place that turns it into a response.

use super::body::ProxyBody;
use crate::upstream::UpstreamError;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches host `{host}` and path `{path}`")]
    NoRoute { host: String, path: String },
    #[error("{0}")]
    BadRequest(&'static str),
    /// Refused before routing: the request has no one canonical form (`normalize`).
    #[error(transparent)]
    Malformed(#[from] crate::normalize::NormalizeError),
    #[error("request headers take {size} bytes, over this listener's limit of {limit}")]
    HeadersTooLarge { size: usize, limit: usize },
    #[error("request has {count} headers, over this listener's limit of {limit}")]
    TooManyHeaders { count: usize, limit: usize },
    #[error("listener `{0}` is being removed; retry on another connection")]
    ListenerGone(String),
    #[error("an Upgrade request needs an HTTP/1.1 cluster; cluster `{0}` speaks HTTP/2")]
    UpgradeNeedsHttp1(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("{0}")]
    Unauthorized(crate::enforce::authn::AuthnError),
    #[error("denied by policy `{policy}`, rule `{rule}`")]
    Forbidden { policy: String, rule: String },
    #[error("rate limit reached; retry in {} s", .0.retry_after_secs)]
    RateLimited(membrane_policy::ratelimit::Verdict),
    #[error("the client certificate has been revoked")]
    PeerRevoked,
}

impl ProxyError {
    /// The status and the stable error code clients and dashboards can rely on. Exhaustive
    /// on purpose: a new error must be given its status here.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::NoRoute { .. } => (StatusCode::NOT_FOUND, "no_route"),
            ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ProxyError::Malformed(e) => (StatusCode::BAD_REQUEST, e.code()),
            ProxyError::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            ProxyError::TooManyHeaders { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too_many_headers",
            ),
            ProxyError::ListenerGone(_) => (StatusCode::SERVICE_UNAVAILABLE, "listener_draining"),
            ProxyError::UpgradeNeedsHttp1(_) => (StatusCode::BAD_GATEWAY, "upgrade_unsupported"),
            ProxyError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ProxyError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ProxyError::PeerRevoked => (StatusCode::FORBIDDEN, "peer_revoked"),
            ProxyError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ProxyError::Upstream(u) => u.status_and_code(),
        }
    }

    /// `{"error": code, "message": text, "request_id": id}` with the matching status.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<ProxyBody> {
        self.into_response_traced(request_id, None)
    }

    /// The same, with `"trace_id"` when the request is traced.
    pub fn into_response_traced(
        self,
        request_id: &HeaderValue,
        trace_id: Option<&membrane_telemetry::TraceId>,
    ) -> Response<ProxyBody> {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ProxyError::Upstream(u) => u.client_message().to_owned(),
            other => other.to_string(),
        };
        let mut body = serde_json::json!({
            "error": code,
            "message": message,
            "request_id": request_id.to_str().unwrap_or(""),
        });
        if let (Some(t), Some(o)) = (trace_id, body.as_object_mut()) {
            o.insert("trace_id".into(), t.hex().into());
        }
        let mut resp = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(super::headers::X_REQUEST_ID, request_id.clone());
        self.challenge_headers(h);
        if matches!(self, ProxyError::PeerRevoked) {
            resp.extensions_mut()
                .insert(crate::context::CloseConnection);
        }
        resp
    }

    /// `WWW-Authenticate` on 401 (RFC 6750 §3), `Retry-After` and the `RateLimit-*` fields
    /// on 429.
    fn challenge_headers(&self, h: &mut http::HeaderMap) {
        use crate::enforce::authn::AuthnError;
        match self {
            ProxyError::Unauthorized(AuthnError::Missing) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"membrane\""),
                );
            }
            ProxyError::Unauthorized(AuthnError::Invalid(e)) => {
                // The description is ours (no token bytes in it); quotes are kept out.
                let desc = e.to_string().replace(['"', '\\'], "'");
                let v = format!(
                    "Bearer realm=\"membrane\", error=\"invalid_token\", error_description=\"{desc}\""
                );
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ProxyError::RateLimited(v) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(v.retry_after_secs));
                h.insert("ratelimit-limit", HeaderValue::from(v.limit));
                h.insert("ratelimit-remaining", HeaderValue::from(v.remaining));
                h.insert("ratelimit-reset", HeaderValue::from(v.reset_secs));
            }
            _ => {}
        }
    }
}
