//! Sending to a cluster that configures retries, outlier detection or circuit breakers.
//! Each attempt goes to an endpoint in the rotation (another one than before when the
//! cluster has one), is bounded by its per-try timeout within the route's, and its result
//! is counted by outlier detection; a failure the policy names is tried again after a
//! jittered backoff (or the response's `Retry-After`) while the route's timeout, the
//! cluster's retry budget and its retry breaker allow.
//!
//! Cost: the plain path (`upstream::send`) is measured per instruction, and this one is
//! held to within 5% of it. So the loop below is not boxed and holds little besides the
//! plain path's exchange future (pinned where it is made): the request's head and
//! forwarding headers stay in its `Outbound`, lent to each attempt, and what is kept
//! between attempts (the policy's counters, the breaker slots, the body) is a small
//! `Attempts` that the decisions between attempts work on synchronously.

use super::breaker::{Held, Limit};
use super::cluster::{Cluster, Outlier, PoolKey, Resilience, SuccessRate};
use super::health::AttemptResult;
use super::health::now_ms;
use super::retry::{AttemptFailure, RetryPolicy, retry_after};
use super::trail::{Earlier, Trail};
use super::{Bound, Head, InFlight, Outbound, UpstreamBody, UpstreamError, exchange};
use crate::body::{RequestBody, RequestBodyError};
use crate::deadline::Deadline;
use crate::h1::H1Error;
use bytes::Bytes;
use http::Response;
use http_body::Body;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

type Sent = (Response<UpstreamBody>, InFlight, usize);

pub(super) async fn send(
    cluster: &Arc<Cluster>,
    r: &Resilience,
    mut out: Outbound<'_>,
    mut deadline: Option<&mut Deadline>,
    at: std::time::Instant,
    mut trail: Option<&mut Trail>,
) -> Result<Sent, UpstreamError> {
    let mut a = Attempts::start(cluster, r, &mut out, at)?;
    if a.body_to_read() {
        Box::pin(a.read_body()).await?;
    }
    let mut started = at;
    loop {
        let (key, ep, in_flight) = a.pick(cluster)?;
        let timeout = a.try_timeout();
        // The head is lent to each attempt when there may be another (Membrane's HTTP/1.1
        // client only reads it), and given to a sole attempt. The request's own future
        // holds `out`: nothing of it is moved here but the body.
        let parts = match a.policy {
            Some(_) => Head::Lent(out.parts.get()),
            None => std::mem::replace(&mut out.parts, Head::Owned(no_head())),
        };
        let mut attempt = Outbound {
            parts,
            body: a.body.take(),
            fwd: out.fwd.clone(),
            timeout,
            upgrade: out.upgrade,
        };
        if a.retries > 0 {
            // Each attempt is a client span of its own: the upstream's parent is this one.
            if let Some(h) = attempt.fwd.trace.as_mut() {
                membrane_telemetry::context::for_attempt(h, a.retries);
            }
            started = std::time::Instant::now();
            if let Some(t) = trail.as_deref_mut() {
                t.last_start = Some(started);
            }
        }
        let mut bound = Bound::new(deadline.as_deref_mut(), timeout);
        let sent = {
            // Pinned where it is made, as on the plain path.
            let mut f = std::pin::pin!(exchange::exchange(cluster, key, attempt));
            std::future::poll_fn(|cx| bound.poll_within(f.as_mut(), cx)).await
        };
        bound.end();
        let ended = std::time::Instant::now();
        cluster.metrics.attempt_duration.observe(ended - started);
        // A response that is not retried goes straight back (no moves on the way).
        let sent = match sent {
            Some(Ok(resp)) if a.settles(cluster, ep, resp.status().as_u16()) => {
                return Ok((resp, in_flight, ep));
            }
            other => other,
        };
        let method = &out.parts.get().method;
        let (wait, outcome) = match a.judge(cluster, ep, key.addr, timeout, sent, method, in_flight)
        {
            Next::Done(result) => return result,
            Next::Retry { wait, outcome } => (wait, outcome),
        };
        if let Some(t) = trail.as_deref_mut() {
            t.earlier.push(Earlier {
                start: started,
                end: ended,
                endpoint: ep,
                outcome,
            });
        }
        if !wait.is_zero() {
            Box::pin(tokio::time::sleep(wait)).await;
        }
    }
}

/// What comes after an attempt. (Returned once per failed attempt, never boxed: the
/// answer goes straight on to the caller.)
#[allow(clippy::large_enum_variant)]
enum Next {
    Done(Result<Sent, UpstreamError>),
    /// Another attempt, after `wait`; the failed one ended with `outcome` (its status, or
    /// its failure's code), for its span.
    Retry {
        wait: Duration,
        outcome: Result<u16, &'static str>,
    },
}

/// A request's attempts: what is kept between them (the head and the forwarding headers
/// stay in the request's `Outbound`, which the loop lends from).
struct Attempts<'a> {
    r: &'a Resilience,
    /// The retry policy, unless there is none or the request switches protocols (its
    /// connection is its own, and never tried twice).
    policy: Option<&'a RetryPolicy>,
    /// The request's place under the cluster's active-requests breaker.
    _request: Held<'a>,
    /// A retry's place under the retries breaker, taken at the first retry.
    retry: Option<Held<'a>>,
    /// The route's timeout, and when it ends.
    route: Duration,
    end: Instant,
    /// Endpoints tried (by index, the first 64).
    tried: u64,
    retries: u32,
    body: Sendable,
}

impl<'a> Attempts<'a> {
    fn start(
        cluster: &'a Arc<Cluster>,
        r: &'a Resilience,
        out: &mut Outbound<'_>,
        at: std::time::Instant,
    ) -> Result<Self, UpstreamError> {
        let (route, upgrade) = (out.timeout, out.upgrade);
        let limit = r.breakers.max_requests;
        let request = Held::take(&cluster.shared, Limit::Requests, limit)
            .ok_or_else(|| cluster.overflow(Limit::Requests, limit))?;
        // The caller's clock reading (tokio's clock is std's but when tests pause it).
        let now = Instant::from_std(at);
        let policy = r.retry.as_ref().filter(|_| !upgrade);
        let body = match policy {
            Some(p) => {
                cluster.shared.budget.deposit(at);
                Sendable::new(std::mem::take(&mut out.body), p)
            }
            None => Sendable::Once(Some(std::mem::take(&mut out.body))),
        };
        Ok(Attempts {
            r,
            policy,
            _request: request,
            retry: None,
            route,
            end: now + route,
            tried: 0,
            retries: 0,
            body,
        })
    }

    fn body_to_read(&self) -> bool {
        matches!(self.body, Sendable::ToRead(_))
    }

    /// Reads a small body whole (within the route's timeout), to send it again.
    async fn read_body(&mut self) -> Result<(), UpstreamError> {
        let Sendable::ToRead(body) = std::mem::replace(&mut self.body, Sendable::Once(None)) else {
            return Ok(());
        };
        self.body = match tokio::time::timeout_at(self.end, body.collect()).await {
            Ok(Ok(all)) => Sendable::Replay(all.to_bytes()),
            Ok(Err(e)) => return Err(UpstreamError::RequestBody(e)),
            Err(_) => {
                return Err(UpstreamError::RequestBody(RequestBodyError::Native(
                    H1Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request body did not arrive within the route's timeout",
                    )),
                )));
            }
        };
        Ok(())
    }

    /// The endpoint for the next attempt, and the attempt's share of its load.
    fn pick(
        &mut self,
        cluster: &Arc<Cluster>,
    ) -> Result<(PoolKey, usize, InFlight), UpstreamError> {
        let ep = cluster
            .pick_available(self.tried)
            .ok_or_else(|| UpstreamError::NoEndpoint(cluster.name.clone()))?;
        if ep < 64 {
            self.tried |= 1 << ep;
        }
        let key = PoolKey {
            cluster: cluster.shared.id,
            addr: cluster.endpoints[ep].addr,
            protocol: cluster.protocol,
            tls: cluster.tls_fingerprint,
        };
        Ok((key, ep, InFlight::start(cluster, ep)))
    }

    /// The next attempt's timeout: its per-try timeout within what is left of the
    /// route's (the first attempt has all of it, without reading the clock).
    fn try_timeout(&self) -> Duration {
        let left = if self.retries == 0 {
            self.route
        } else {
            self.end.saturating_duration_since(Instant::now())
        };
        match self.policy.and_then(|p| p.per_try_timeout) {
            Some(t) => t.min(left),
            None => left,
        }
    }

    /// Counts a response for outlier detection; whether it is the request's answer (the
    /// policy does not retry its status).
    fn settles(&self, cluster: &Cluster, ep: usize, status: u16) -> bool {
        self.outlier(cluster, ep, AttemptResult::of_status(status));
        !self.policy.is_some_and(|p| p.retries_status(status))
    }

    /// Counts a failed attempt (a response already counted by `settles`) and decides
    /// what comes next.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &mut self,
        cluster: &'a Cluster,
        ep: usize,
        addr: SocketAddr,
        timeout: Duration,
        sent: Option<Result<Response<UpstreamBody>, UpstreamError>>,
        method: &http::Method,
        in_flight: InFlight,
    ) -> Next {
        let (failure, tried) = match sent {
            Some(Ok(resp)) => {
                let status = resp.status().as_u16();
                (AttemptFailure::Status(status), Tried::Response(resp))
            }
            Some(Err(e)) => {
                let f = AttemptFailure::of(&e);
                if f.is_upstream_failure() {
                    self.outlier(cluster, ep, AttemptResult::GatewayError { status: false });
                }
                (f, Tried::Failed(e))
            }
            None => {
                self.outlier(cluster, ep, AttemptResult::GatewayError { status: false });
                let e = UpstreamError::Timeout {
                    addr,
                    after: timeout,
                };
                (AttemptFailure::PerTryTimeout, Tried::Failed(e))
            }
        };
        match self.again(cluster, failure, method, &tried) {
            Some(wait) => {
                tracing::debug!(cluster = %cluster.name, %addr, ?failure, retry = self.retries, ?wait, "retrying");
                let outcome = match &tried {
                    Tried::Response(r) => Ok(r.status().as_u16()),
                    Tried::Failed(e) => Err(e.status_and_code().1),
                };
                Next::Retry { wait, outcome }
            }
            None => Next::Done(tried.into_result(in_flight, ep)),
        }
    }

    /// Whether a failed attempt is tried again, and after how long: the policy names the
    /// failure, the body can be sent again, and the route's timeout, the retry budget and
    /// the retries breaker leave room.
    #[cold]
    fn again(
        &mut self,
        cluster: &'a Cluster,
        failure: AttemptFailure,
        method: &http::Method,
        tried: &Tried,
    ) -> Option<Duration> {
        let p = self.policy?;
        if self.retries >= p.max_retries || !self.body.again() || !p.allows(failure, method) {
            return None;
        }
        let now = Instant::now();
        let wait = wait_before(p, self.retries + 1, tried);
        if now + wait >= self.end {
            return None;
        }
        // The budget counts on std's clock, as deposits do.
        let budget = &cluster.shared.budget;
        if !budget.withdraw(
            std::time::Instant::now(),
            p.budget_ratio,
            p.budget_min_per_second,
        ) {
            cluster.metrics.budget_exhausted.inc();
            return None;
        }
        // One retry slot is held for the rest of the request's attempts.
        if self.retry.is_none() {
            let Some(h) = Held::take(&cluster.shared, Limit::Retries, self.r.breakers.max_retries)
            else {
                cluster.metrics.overflowed(Limit::Retries.breaker());
                return None;
            };
            self.retry = Some(h);
        }
        self.retries += 1;
        cluster.metrics.retries.inc();
        Some(wait)
    }

    /// Counts an attempt's result for outlier detection, ejecting the endpoint when a
    /// rule trips and the cluster may lose one more.
    fn outlier(&self, cluster: &Cluster, ep: usize, result: AttemptResult) {
        let Some(o) = &self.r.outlier else { return };
        let health = &cluster.endpoints[ep].health;
        if health.record(result, &o.limits) {
            eject(cluster, o, ep);
        }
        if let Some(sr) = &o.success_rate {
            health.count_rate(result == AttemptResult::Success);
            let now = now_ms();
            if now >= cluster.shared.rate_interval_end.load(Ordering::Relaxed) {
                success_rate(cluster, o, sr, now);
            }
        }
    }
}

/// An empty head, left in the request's place when its own goes to a sole attempt (every
/// request of a cluster without a retry policy; no allocation).
fn no_head() -> http::request::Parts {
    http::Request::new(()).into_parts().0
}

/// What a failed attempt left: a response the policy retries on, or an error.
#[allow(clippy::large_enum_variant)]
enum Tried {
    Response(Response<UpstreamBody>),
    Failed(UpstreamError),
}

impl Tried {
    fn into_result(self, in_flight: InFlight, ep: usize) -> Result<Sent, UpstreamError> {
        match self {
            Tried::Response(r) => Ok((r, in_flight, ep)),
            Tried::Failed(e) => Err(e),
        }
    }
}

/// The wait before retry `n`: the backoff, or longer when the response asks for it.
fn wait_before(p: &RetryPolicy, n: u32, tried: &Tried) -> Duration {
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

/// The success-rate rule at the end of an interval (run by the first attempt after it, so
/// no timer runs for it): endpoints with enough attempts are compared, and those below the
/// mean by more than the factor's standard deviations are ejected (within the cluster's
/// ejection cap).
#[cold]
fn success_rate(cluster: &Cluster, o: &Outlier, sr: &SuccessRate, now: u64) {
    let end = &cluster.shared.rate_interval_end;
    let was = end.load(Ordering::Relaxed);
    // One attempt ends the interval; the others go on.
    if now < was
        || end
            .compare_exchange(
                was,
                now + sr.interval_ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
    {
        return;
    }
    let rates: Vec<(usize, f64)> = cluster
        .endpoints
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let (ok, total) = e.health.take_rate();
            (total >= sr.request_volume).then(|| (i, f64::from(ok) / f64::from(total)))
        })
        .collect();
    // The first interval only starts the count.
    if was == 0 || rates.len() < sr.minimum_hosts {
        return;
    }
    let n = rates.len() as f64;
    let mean = rates.iter().map(|r| r.1).sum::<f64>() / n;
    let variance = rates.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / n;
    let floor = mean - sr.stdev_factor * variance.sqrt();
    for &(i, rate) in rates.iter().filter(|r| r.1 < floor) {
        tracing::info!(cluster = %cluster.name, endpoint = %cluster.endpoints[i].addr, rate, mean, "success rate below the cluster's");
        eject(cluster, o, i);
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

/// The request body as attempts take it: kept whole to be sent again, to be read whole
/// first, or sent once.
enum Sendable {
    Replay(Bytes),
    ToRead(RequestBody),
    Once(Option<RequestBody>),
}

impl Sendable {
    /// A body that may be sent again: none at all, or a small one of known length (read
    /// whole before the first attempt); any other goes once.
    fn new(body: RequestBody, p: &RetryPolicy) -> Self {
        if body.is_end_stream() {
            return Sendable::Replay(Bytes::new());
        }
        let small = body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= p.body_limit as u64);
        if small {
            Sendable::ToRead(body)
        } else {
            Sendable::Once(Some(body))
        }
    }

    /// Whether there is a body for another attempt.
    fn again(&self) -> bool {
        match self {
            Sendable::Replay(_) => true,
            Sendable::ToRead(_) => false,
            Sendable::Once(b) => b.is_some(),
        }
    }

    fn take(&mut self) -> RequestBody {
        match self {
            Sendable::Replay(d) if d.is_empty() => RequestBody::Empty,
            Sendable::Replay(d) => RequestBody::Buffered(Some(d.clone())),
            // Read before the first attempt (`Attempts::read_body`).
            Sendable::ToRead(_) => match std::mem::replace(self, Sendable::Once(None)) {
                Sendable::ToRead(b) => b,
                _ => RequestBody::Empty,
            },
            Sendable::Once(b) => b.take().unwrap_or_default(),
        }
    }
}
