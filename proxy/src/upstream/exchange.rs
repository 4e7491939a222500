//! One request over one of a cluster's connections, whatever its protocol: Membrane's own
//! HTTP/1.1 client on plain TCP, hyper's HTTP/1.1 over TLS, hyper's HTTP/2, and hyper's
//! HTTP/1.1 for a protocol switch. This is the one place that decides whether a failed
//! attempt is tried again (and where outlier detection will see each attempt).
//!
//! Retryability travels on the failure (`Retry`, as pingora's `RetryType`): an attempt that
//! failed before anything an upstream could act on left this proxy may be made once more,
//! on a fresh connection, when the connection it failed on came from the pool (an upstream
//! may close an idle connection just as it is taken). Anything else is never retried here.
//!
//! Future size matters on the plain HTTP/1.1 path (each level of `async fn` holds the one
//! below inline and is moved by value, see "Futures and atomics" in ARCHITECTURE.md): that
//! client's exchange is held inline; opening a connection and the paths through hyper, whose
//! futures are several KiB, are boxed.

use super::cluster::{Cluster, PoolKey};
use super::h1::{self, ExchangeError};
use super::pool::{self, Sender};
use super::tls_http1::PooledBody;
use super::{Head, Outbound, UpstreamBody, UpstreamError, connect};
use crate::body::RequestBody;
use crate::h1::H1Error;
use http_body::Body;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use std::net::SocketAddr;

/// Whether a failed attempt may be made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The upstream may have acted on the request (it was sent, part of a body went, or a
    /// response began): never again.
    Never,
    /// Nothing an upstream could act on left: the connection was found closed before any
    /// byte came back, or refused the request unsent. Worth one more try on a fresh one.
    OnFreshConnection,
}

/// A failed attempt: the error, whether it may be retried, and the request when it was
/// handed back unsent (hyper's clients do).
struct Failure {
    error: UpstreamError,
    retry: Retry,
    unsent: Option<Request<RequestBody>>,
}

impl Failure {
    fn new(error: UpstreamError, retry: Retry) -> Self {
        Self {
            error,
            retry,
            unsent: None,
        }
    }
}

/// Sends `out` to the endpoint `key` names and returns the response head with its body.
pub(super) async fn exchange(
    cluster: &Cluster,
    key: PoolKey,
    out: Outbound<'_>,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let addr = key.addr;
    if out.upgrade {
        return Box::pin(upgrade(cluster, addr, out)).await;
    }
    let Outbound {
        parts, body, fwd, ..
    } = out;
    // Membrane's HTTP/1.1 client writes the head from the borrowed parts, with the
    // forwarding headers, and owns only the body; hyper's clients take a whole request,
    // made on their first attempt.
    let mut body = (!body.is_end_stream()).then_some(body);
    let mut parts = Some(parts);
    let mut unsent: Option<Request<RequestBody>> = None;
    for attempt in 0..2 {
        let pooled = if attempt == 0 {
            pool::checkout(&key, cluster.pool_idle_timeout)
        } else {
            None
        };
        let reused = pooled.is_some();
        let sender = match pooled {
            Some(s) => s,
            None => Box::pin(connect::open(cluster, key)).await?,
        };
        // Each arm answers, or goes round once more; no `Result` of the attempt is built and
        // moved (with a failure that may hold a whole request, it is hundreds of bytes, and
        // the plain HTTP/1.1 path is measured in instructions).
        match sender {
            Sender::Http1(conn) => {
                let Some(head) = parts.as_ref().map(Head::get) else {
                    break;
                };
                match h1::exchange(conn, key, pool::checkin_http1, head, &fwd, body.take()).await {
                    Ok(r) => return Ok(r.map(UpstreamBody::Http1)),
                    Err(f) if reused && f.retryable => {
                        tracing::debug!(%addr, error = %f.error, "a pooled connection failed before the request went out; trying a new one");
                    }
                    Err(f) => return Err(from_h1(addr, f.error)),
                }
            }
            hyper_sender => {
                let req = match unsent.take() {
                    Some(r) => r,
                    None => {
                        let Some(head) = parts.take() else { break };
                        let mut req =
                            Request::from_parts(head.into_owned(), body.take().unwrap_or_default());
                        fwd.apply(req.headers_mut());
                        req
                    }
                };
                match Box::pin(through_hyper(hyper_sender, key, req)).await {
                    Ok(resp) => return Ok(resp),
                    Err(f) if reused && f.retry == Retry::OnFreshConnection => {
                        tracing::debug!(%addr, error = %f.error, "a pooled connection failed before the request went out; trying a new one");
                        unsent = f.unsent;
                    }
                    Err(f) => return Err(f.error),
                }
            }
        }
    }
    Err(UpstreamError::Reset {
        addr,
        reason: "no usable connection".into(),
    })
}

/// One attempt through hyper's HTTP/2 client, or its HTTP/1.1 client over TLS.
async fn through_hyper(
    sender: Sender,
    key: PoolKey,
    req: Request<RequestBody>,
) -> Result<Response<UpstreamBody>, Failure> {
    match sender {
        Sender::Http2(s) => http2(s, key.addr, req).await,
        Sender::Tls1(s) => tls_http1(s, key, req).await,
        Sender::Http1(_) => Err(Failure::new(
            UpstreamError::Reset {
                addr: key.addr,
                reason: "a plain HTTP/1.1 connection for a hyper request".into(),
            },
            Retry::Never,
        )),
    }
}

async fn http2(
    mut sender: http2::SendRequest<RequestBody>,
    addr: SocketAddr,
    req: Request<RequestBody>,
) -> Result<Response<UpstreamBody>, Failure> {
    if let Err(source) = sender.ready().await {
        let mut f = Failure::new(
            UpstreamError::Exchange { addr, source },
            Retry::OnFreshConnection,
        );
        f.unsent = Some(req);
        return Err(f);
    }
    match sender.try_send_request(req).await {
        Ok(resp) => Ok(resp.map(UpstreamBody::Hyper)),
        Err(mut e) => Err(unsent(addr, e.take_message(), e.into_error())),
    }
}

async fn tls_http1(
    mut sender: http1::SendRequest<RequestBody>,
    key: PoolKey,
    req: Request<RequestBody>,
) -> Result<Response<UpstreamBody>, Failure> {
    let addr = key.addr;
    if let Err(source) = sender.ready().await {
        let mut f = Failure::new(
            UpstreamError::Exchange { addr, source },
            Retry::OnFreshConnection,
        );
        f.unsent = Some(req);
        return Err(f);
    }
    match sender.try_send_request(req).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            Ok(Response::from_parts(
                parts,
                UpstreamBody::Tls1(PooledBody::new(body, key, sender)),
            ))
        }
        Err(mut e) => Err(unsent(addr, e.take_message(), e.into_error())),
    }
}

/// hyper's failed send: retryable when it hands the request back unsent.
fn unsent(addr: SocketAddr, msg: Option<Request<RequestBody>>, source: hyper::Error) -> Failure {
    let retry = if msg.is_some() {
        Retry::OnFreshConnection
    } else {
        Retry::Never
    };
    Failure {
        error: UpstreamError::Exchange { addr, source },
        retry,
        unsent: msg,
    }
}

/// A protocol switch, on a connection of its own that is never pooled nor retried.
async fn upgrade(
    cluster: &Cluster,
    addr: SocketAddr,
    out: Outbound<'_>,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let mut req = Request::from_parts(out.parts.into_owned(), out.body);
    out.fwd.apply(req.headers_mut());
    let mut sender = connect::open_upgrade(cluster, addr).await?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|source| UpstreamError::Exchange { addr, source })?;
    Ok(resp.map(UpstreamBody::Hyper))
}

fn from_h1(addr: SocketAddr, e: ExchangeError) -> UpstreamError {
    match e {
        ExchangeError::Message(H1Error::Protocol(reason)) => {
            UpstreamError::Protocol { addr, reason }
        }
        ExchangeError::RequestBody(e) => UpstreamError::RequestBody(e),
        ExchangeError::Message(e @ (H1Error::Io(_) | H1Error::ClosedBeforeResponse)) => {
            UpstreamError::Reset {
                addr,
                reason: e.to_string(),
            }
        }
    }
}
