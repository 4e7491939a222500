//! Sending to a cluster that configures retries, outlier detection or circuit breakers.
//! Each attempt goes to an endpoint in the rotation (another one than before when the
//! cluster has one), is bounded by its per-try timeout within the route's, and its result
//! is counted by outlier detection; a failure the policy names is tried again after a
//! jittered backoff (or the response's `Retry-After`) while the route's timeout, the
//! cluster's retry budget and its retry breaker allow.
//!
//! Clusters without any of these take the plain path (`upstream::send`), whose cost is
//! measured per instruction; this one is boxed there and may spend more.

use super::breaker::{Held, Limit};
use super::cluster::{Cluster, Outlier, PoolKey, Resilience};
use super::health::AttemptResult;
use super::retry::{AttemptFailure, RetryPolicy, retry_after};
use super::{InFlight, Outbound, UpstreamBody, UpstreamError, exchange};
use crate::body::{RequestBody, RequestBodyError};
use crate::h1::H1Error;
use bytes::Bytes;
use http::Response;
use http::request::Parts;
use http_body::Body;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

type Sent = (Response<UpstreamBody>, InFlight, SocketAddr);

pub(super) async fn send(
    cluster: &Arc<Cluster>,
    r: &Resilience,
    out: Outbound<'_>,
) -> Result<Sent, UpstreamError> {
    let limit = r.breakers.max_requests;
    let _request = Held::take(&cluster.shared, Limit::Requests, limit)
        .ok_or_else(|| cluster.overflow(Limit::Requests, limit))?;
    let deadline = Instant::now() + out.timeout;
    let Outbound {
        parts,
        body,
        fwd,
        upgrade,
        ..
    } = out;
    // A protocol switch is never tried twice (its connection is its own).
    let policy = r.retry.as_ref().filter(|_| !upgrade);
    let mut body = match policy {
        Some(p) => {
            cluster.shared.budget.deposit();
            Sendable::new(body, p, deadline).await?
        }
        None => Sendable::Once(Some(body)),
    };
    let mut head = Some(parts);
    let mut tried: u64 = 0;
    let mut retries = 0u32;
    let mut _retry: Option<Held> = None;
    loop {
        let ep = cluster
            .pick_available(tried)
            .ok_or_else(|| UpstreamError::NoEndpoint(cluster.name.clone()))?;
        if ep < 64 {
            tried |= 1 << ep;
        }
        let addr = cluster.endpoints[ep].addr;
        let key = PoolKey {
            cluster: cluster.shared.id,
            addr,
            protocol: cluster.protocol,
            tls: cluster.tls_fingerprint,
        };
        let in_flight = InFlight::start(cluster, ep);
        let began = Instant::now();
        let try_end = match policy.and_then(|p| p.per_try_timeout) {
            Some(t) => (began + t).min(deadline),
            None => deadline,
        };
        // The head is copied while another attempt may follow; the last one takes it.
        let parts = match (policy, &head) {
            (Some(_), Some(h)) if body.replayable() => copy_head(h),
            _ => head
                .take()
                .ok_or_else(|| UpstreamError::NoEndpoint(cluster.name.clone()))?,
        };
        let method = parts.method.clone();
        let attempt = Outbound {
            parts,
            body: body.take(),
            fwd: fwd.clone(),
            timeout: try_end - began,
            upgrade,
        };
        let (failure, tried_out) =
            match tokio::time::timeout_at(try_end, exchange::exchange(cluster, key, attempt)).await
            {
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    outlier(cluster, r, ep, AttemptResult::of_status(status));
                    if !policy.is_some_and(|p| p.retries_status(status)) {
                        return Ok((resp, in_flight, addr));
                    }
                    (AttemptFailure::Status(status), Tried::Response(resp))
                }
                Ok(Err(e)) => {
                    let f = AttemptFailure::of(&e);
                    if f.is_upstream_failure() {
                        outlier(
                            cluster,
                            r,
                            ep,
                            AttemptResult::GatewayError { status: false },
                        );
                    }
                    (f, Tried::Failed(e))
                }
                Err(_) => {
                    outlier(
                        cluster,
                        r,
                        ep,
                        AttemptResult::GatewayError { status: false },
                    );
                    let e = UpstreamError::Timeout {
                        addr,
                        after: try_end - began,
                    };
                    (AttemptFailure::PerTryTimeout, Tried::Failed(e))
                }
            };
        let wait = policy.and_then(|p| {
            let again = retries < p.max_retries
                && body.again()
                && head.is_some()
                && p.allows(failure, &method);
            again.then(|| wait_before(p, retries + 1, &tried_out))
        });
        let Some(wait) = wait.filter(|w| Instant::now() + *w < deadline) else {
            return tried_out.into_result(in_flight, addr);
        };
        let Some(p) = policy else {
            return tried_out.into_result(in_flight, addr);
        };
        if !cluster
            .shared
            .budget
            .withdraw(p.budget_ratio, p.budget_min_per_second)
        {
            cluster.metrics.budget_exhausted.inc();
            return tried_out.into_result(in_flight, addr);
        }
        // One retry slot is held for the rest of the request's attempts.
        if _retry.is_none() {
            match Held::take(&cluster.shared, Limit::Retries, r.breakers.max_retries) {
                Some(h) => _retry = Some(h),
                None => {
                    cluster.metrics.overflowed(Limit::Retries.breaker());
                    return tried_out.into_result(in_flight, addr);
                }
            }
        }
        retries += 1;
        cluster.metrics.retries.inc();
        tracing::debug!(cluster = %cluster.name, %addr, ?failure, retry = retries, ?wait, "retrying");
        drop(tried_out);
        drop(in_flight);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// What a failed attempt left: a response the policy retries on, or an error. (Held once
/// per attempt, on the resilient path only: its size is not worth a box.)
#[allow(clippy::large_enum_variant)]
enum Tried {
    Response(Response<UpstreamBody>),
    Failed(UpstreamError),
}

impl Tried {
    fn into_result(self, in_flight: InFlight, addr: SocketAddr) -> Result<Sent, UpstreamError> {
        match self {
            Tried::Response(r) => Ok((r, in_flight, addr)),
            Tried::Failed(e) => Err(e),
        }
    }
}

/// The wait before retry `n`: the backoff, or longer when the response asks for it.
fn wait_before(p: &RetryPolicy, n: u32, tried: &Tried) -> std::time::Duration {
    let backoff = p.backoff(n);
    match tried {
        Tried::Response(r) => {
            // Membrane's HTTP/1.1 client keeps the fields as bytes: a map is made for the
            // rare response that is retried.
            let asked = match r.body() {
                UpstreamBody::Http1(b) => retry_after(&b.header_map()),
                _ => retry_after(r.headers()),
            };
            asked.map_or(backoff, |d| d.max(backoff))
        }
        Tried::Failed(_) => backoff,
    }
}

/// Counts an attempt's result for outlier detection, ejecting the endpoint when a rule
/// trips and the cluster may lose one more.
fn outlier(cluster: &Cluster, r: &Resilience, ep: usize, result: AttemptResult) {
    let Some(o) = &r.outlier else { return };
    if cluster.endpoints[ep].health.record(result, &o.limits) {
        eject(cluster, o, ep);
    }
}

#[cold]
fn eject(cluster: &Cluster, o: &Outlier, ep: usize) {
    let n = cluster.endpoints.len();
    let out = cluster
        .endpoints
        .iter()
        .filter(|e| e.health.is_ejected())
        .count();
    // One endpoint may always go; more only within the share.
    let max = (n * o.max_ejected_percent as usize / 100).max(1);
    if out >= max {
        return;
    }
    let e = &cluster.endpoints[ep];
    if e.health.eject(o.limits.base_ejection, o.max_ejection) {
        cluster.metrics.ejections.inc();
        tracing::info!(cluster = %cluster.name, endpoint = %e.addr, "endpoint ejected by outlier detection");
    }
}

/// The request body as attempts take it: kept whole to be sent again, or sent once.
enum Sendable {
    Replay(Bytes),
    Once(Option<RequestBody>),
}

impl Sendable {
    /// Reads a small body of known length whole (within the route's timeout), so that it
    /// can be sent again; any other goes once.
    async fn new(
        body: RequestBody,
        p: &RetryPolicy,
        deadline: Instant,
    ) -> Result<Self, UpstreamError> {
        if body.is_end_stream() {
            return Ok(Sendable::Replay(Bytes::new()));
        }
        let small = body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= p.body_limit as u64);
        if !small {
            return Ok(Sendable::Once(Some(body)));
        }
        match tokio::time::timeout_at(deadline, body.collect()).await {
            Ok(Ok(all)) => Ok(Sendable::Replay(all.to_bytes())),
            Ok(Err(e)) => Err(UpstreamError::RequestBody(e)),
            Err(_) => Err(UpstreamError::RequestBody(RequestBodyError::Native(
                H1Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body did not arrive within the route's timeout",
                )),
            ))),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, Sendable::Replay(_))
    }

    /// Whether there is a body for another attempt.
    fn again(&self) -> bool {
        match self {
            Sendable::Replay(_) => true,
            Sendable::Once(b) => b.is_some(),
        }
    }

    fn take(&mut self) -> RequestBody {
        match self {
            Sendable::Replay(d) if d.is_empty() => RequestBody::Empty,
            Sendable::Replay(d) => RequestBody::Buffered(Some(d.clone())),
            Sendable::Once(b) => b.take().unwrap_or_default(),
        }
    }
}

/// A copy of a request head for one attempt (extensions are not carried: nothing on the
/// way upstream reads them but a protocol switch, which is never retried).
fn copy_head(p: &Parts) -> Parts {
    let mut r = http::Request::new(());
    *r.method_mut() = p.method.clone();
    *r.uri_mut() = p.uri.clone();
    *r.version_mut() = p.version;
    *r.headers_mut() = p.headers.clone();
    r.into_parts().0
}
