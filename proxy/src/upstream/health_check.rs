//! Active health checks: one prober per endpoint for the whole gateway (not one per worker),
//! all on one thread of their own. A prober connects (TCP check) or sends
//! `GET <http_path>` over HTTP/1.1 (HTTP check) every `interval` plus jitter; after
//! `unhealthy_threshold` failures in a row the endpoint leaves the rotation, after
//! `healthy_threshold` passes in a row it comes back. Endpoints start in the rotation (a
//! new gateway serves at once; the first check runs as the prober starts).
//!
//! Each activated generation starts the probers of its checked clusters afresh and numbers
//! them: a prober whose number is no longer its endpoint's stops at its next wake-up, and so
//! does one whose endpoint is no longer in any generation. What an endpoint's checks found
//! is kept across generations in its `EndpointHealth`.

use super::health::EndpointHealth;
use super::metrics::ClusterMetrics;
use crate::config::HealthCheckConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A cluster's check, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// The request bytes of an HTTP check; `None`: a TCP connect.
    pub request: Option<Vec<u8>>,
    /// Passing statuses; empty: any 2xx.
    pub expected: Vec<u16>,
    pub interval: Duration,
    pub jitter_percent: u32,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl CheckSpec {
    pub fn new(c: &HealthCheckConfig, host: &str) -> Self {
        Self {
            request: c.http_path.as_ref().map(|path| {
                format!(
                    "GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: membrane-health-check\r\nconnection: close\r\n\r\n"
                )
                .into_bytes()
            }),
            expected: c.expected_statuses.clone(),
            interval: c.interval.0,
            jitter_percent: c.jitter_percent,
            timeout: c.timeout.0,
            healthy_threshold: c.healthy_threshold.max(1),
            unhealthy_threshold: c.unhealthy_threshold.max(1),
        }
    }
}

/// A generation's probers for one cluster, started at activation. `spec: None` stops the
/// cluster's probers and brings back the endpoints they held down (the check was removed).
#[derive(Debug)]
pub struct Probers {
    pub spec: Option<Arc<CheckSpec>>,
    pub endpoints: Vec<(SocketAddr, Arc<EndpointHealth>)>,
    pub metrics: ClusterMetrics,
}

static NUMBER: AtomicU64 = AtomicU64::new(1);

impl Probers {
    /// Starts them (on the checks' thread, made on first use).
    pub fn start(self) -> std::io::Result<()> {
        let Some(spec) = self.spec else {
            for (_, h) in &self.endpoints {
                h.prober.store(0, Ordering::Relaxed);
                if h.set_checked_down(false) {
                    self.metrics.down.dec();
                }
            }
            return Ok(());
        };
        let rt = runtime()?;
        for (addr, h) in self.endpoints {
            let number = NUMBER.fetch_add(1, Ordering::Relaxed);
            h.prober.store(number, Ordering::Relaxed);
            rt.spawn(probe_loop(
                Arc::downgrade(&h),
                number,
                addr,
                spec.clone(),
                self.metrics.clone(),
            ));
        }
        Ok(())
    }
}

/// The checks' runtime: one current-thread runtime on a thread of its own.
fn runtime() -> std::io::Result<tokio::runtime::Handle> {
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    if let Some(h) = RT.get() {
        return Ok(h.clone());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("membrane-health".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    Ok(RT.get_or_init(|| handle).clone())
}

async fn probe_loop(
    weak: Weak<EndpointHealth>,
    number: u64,
    addr: SocketAddr,
    spec: Arc<CheckSpec>,
    metrics: ClusterMetrics,
) {
    let (mut passes, mut fails) = (0u32, 0u32);
    loop {
        let passed = check(addr, &spec).await;
        let Some(h) = weak.upgrade() else { return };
        if h.prober.load(Ordering::Relaxed) != number {
            return;
        }
        if passed {
            passes += 1;
            fails = 0;
            if passes >= spec.healthy_threshold && h.set_checked_down(false) {
                metrics.down.dec();
                tracing::info!(endpoint = %addr, "health checks pass again; endpoint back in rotation");
            }
        } else {
            metrics.check_failures.inc();
            fails += 1;
            passes = 0;
            if fails >= spec.unhealthy_threshold && h.set_checked_down(true) {
                metrics.down.inc();
                tracing::warn!(endpoint = %addr, "health checks failing; endpoint out of rotation");
            }
        }
        drop(h);
        let jitter = spec.interval.as_millis() as u64 * u64::from(spec.jitter_percent) / 100;
        tokio::time::sleep(spec.interval + Duration::from_millis(fastrand::u64(0..=jitter))).await;
    }
}

/// One check, bounded by the spec's timeout.
async fn check(addr: SocketAddr, spec: &CheckSpec) -> bool {
    let run = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let Some(req) = &spec.request else {
            return Some(true);
        };
        s.write_all(req).await.ok()?;
        let mut buf = Vec::with_capacity(512);
        loop {
            if s.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            // The status line is all a check needs; too many fields still carry one.
            match resp.parse(&buf) {
                Ok(_) | Err(httparse::Error::TooManyHeaders) if resp.code.is_some() => {
                    let code = resp.code?;
                    return Some(if spec.expected.is_empty() {
                        (200..300).contains(&code)
                    } else {
                        spec.expected.contains(&code)
                    });
                }
                Ok(_) if buf.len() < 8 * 1024 => {}
                _ => return Some(false),
            }
        }
    };
    matches!(
        tokio::time::timeout(spec.timeout, run).await,
        Ok(Some(true))
    )
}
