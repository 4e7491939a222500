//! One of three endpoints killed under load: the share of requests that failed and the p99
//! latency, with nothing configured, with outlier detection only, and with retries and
//! outlier detection, each a `RESULT` line.
//!
//!   cargo bench --bench faults
//!
//! Everything on 127.0.0.1 in this process: three fault-injecting upstreams
//! (`testing::faults`), the proxy (two workers), and eight closed-loop HTTP/1.1 clients
//! sending `REQUESTS` GETs in all; endpoint `b` is killed (listener closed, open connections
//! dropped) once a third of them are answered. Bounded by that count and by a 60 s limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use membrane_proxy::testing::faults::FaultyUpstream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const REQUESTS: usize = 6000;
const CLIENTS: usize = 8;

struct Outcome {
    failed: usize,
    p99: Duration,
    p50: Duration,
}

async fn run(cluster: &str) -> Outcome {
    let ups = [
        FaultyUpstream::start("a").await,
        FaultyUpstream::start("b").await,
        FaultyUpstream::start("c").await,
    ];
    let yaml = format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 2\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, forward: {{cluster: c}}}}]}}]\nclusters:\n  - {{name: c, endpoints: ['{}', '{}', '{}'], request_timeout: 5s{cluster}}}\n",
        ups[0].addr, ups[1].addr, ups[2].addr
    );
    let (proxy, _) = membrane_proxy::testing::start_proxy(&yaml);
    let url: hyper::Uri = format!("http://{}/x", proxy.listener_addr("main").unwrap())
        .parse()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (url, next, answered) = (url.clone(), next.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let mut times = Vec::new();
            let mut failed = 0;
            while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                let req = http::Request::get(url.clone())
                    .header("host", "svc")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let t = Instant::now();
                let ok = match client.request(req).await {
                    Ok(r) => {
                        let status = r.status();
                        let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                        status == 200
                    }
                    Err(_) => false,
                };
                times.push(t.elapsed());
                answered.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed += 1;
                }
            }
            (times, failed)
        }));
    }
    while answered.load(Ordering::Relaxed) < REQUESTS / 3 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ups[1].kill();
    let mut times = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (ts, f) = t.await.unwrap();
        times.extend(ts);
        failed += f;
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    proxy.shutdown().await;
    Outcome {
        failed,
        p99: at(0.99),
        p50: at(0.50),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let configs = [
        ("none", ""),
        (
            "outlier",
            ", outlier_detection: {consecutive_gateway_errors: 3}",
        ),
        (
            "retries_outlier",
            ", retries: {max_retries: 2}, outlier_detection: {consecutive_gateway_errors: 3}",
        ),
    ];
    for (label, cluster) in configs {
        let o = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), run(cluster))
                .await
                .expect("the load finished within 60 s")
        });
        println!(
            "RESULT fault_failed_share{{config=\"{label}\"}} {:.4}  ({} of {REQUESTS} failed)",
            o.failed as f64 / REQUESTS as f64,
            o.failed
        );
        println!(
            "RESULT fault_p99_ms{{config=\"{label}\"}} {:.2}  (p50 {:.2} ms)",
            o.p99.as_secs_f64() * 1e3,
            o.p50.as_secs_f64() * 1e3
        );
    }
}
