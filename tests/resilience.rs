//! Retries, their budget, outlier detection, circuit breakers and health checks, against
//! fault-injecting upstreams on 127.0.0.1 (`testing::faults`). Timing is by events (an
//! upstream's counters, a gauge) and the proxy's own timers, never by sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use membrane_proxy::testing::faults::{Fault, FaultyUpstream};
use membrane_proxy::testing::start_proxy;
use std::time::Duration;

/// A proxy with one listener routing everything to cluster `c`, whose extra settings are
/// `cluster` (YAML flow-mapping entries).
fn proxy(endpoints: &[&FaultyUpstream], cluster: &str) -> (membrane_proxy::ProxyHandle, String) {
    let eps: Vec<String> = endpoints.iter().map(|u| format!("'{}'", u.addr)).collect();
    let yaml = format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 2\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, forward: {{cluster: c}}}}]}}]\nclusters:\n  - {{name: c, endpoints: [{}], request_timeout: 5s, {cluster}}}\n",
        eps.join(", ")
    );
    let (p, _) = start_proxy(&yaml);
    let url = format!("http://{}", p.listener_addr("main").unwrap());
    (p, url)
}

async fn metric(p: &membrane_proxy::ProxyHandle, name: &str) -> f64 {
    metric_sum(p.admin_addr(), name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_endpoints_under_load_fails_no_request() {
    let ups = [
        FaultyUpstream::start("a").await,
        FaultyUpstream::start("b").await,
        FaultyUpstream::start("c").await,
    ];
    let (p, url) = proxy(
        &[&ups[0], &ups[1], &ups[2]],
        "retries: {max_retries: 2}, outlier_detection: {consecutive_gateway_errors: 3, base_ejection_time: 60s}",
    );
    // Eight clients, 600 requests; endpoint b is killed once 150 have been answered.
    let total = 600;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (url, done) = (url.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let c = client_h1();
            let mut statuses = Vec::new();
            while done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                statuses.push(get(&c, &format!("{url}/x"), "svc", &[]).await.status);
            }
            statuses
        }));
    }
    eventually("150 answered", Duration::from_secs(20), || async {
        ups.iter().map(|u| u.answered_200()).sum::<usize>() >= 150
    })
    .await;
    let b_before = ups[1].received();
    ups[1].stop().await;
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    assert_eq!(statuses.len(), total);
    let failed: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert_eq!(metric(&p, "membrane_upstream_ejections_total").await, 1.0);
    // Ejected within its threshold of failed attempts (plus those already on their way
    // from the other clients): connections refused, or pooled ones found dead.
    let refused = metric(&p, "membrane_upstream_connect_failures_total").await;
    assert!(
        refused <= 3.0 + 8.0,
        "{refused} failed connects before the ejection"
    );
    let retries = metric(&p, "membrane_upstream_retries_total").await;
    assert!(retries >= 1.0, "the failed attempts were retried");
    assert!(
        ups[0].answered_200() + ups[2].answered_200() >= total - b_before,
        "a and c took b's share"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_a_flaky_endpoint_are_capped_by_the_budget() {
    let up = FaultyUpstream::start("flaky").await;
    up.set(Fault::EveryOther503);
    // 20% of requests plus one per second (ten in the window).
    let (p, url) = proxy(
        &[&up],
        "retries: {max_retries: 3, backoff_base: 1ms, backoff_max: 2ms, budget: {ratio: 0.2, min_per_second: 1}}",
    );
    let c = client_h1();
    let n = 200;
    let mut ok = 0;
    for _ in 0..n {
        if get(&c, &format!("{url}/x"), "svc", &[]).await.status == 200 {
            ok += 1;
        }
    }
    let retries = metric(&p, "membrane_upstream_retries_total").await as usize;
    let exhausted = metric(&p, "membrane_upstream_retry_budget_exhausted_total").await;
    // Every retry reached the upstream: it saw each request once plus each retry.
    assert_eq!(up.received(), n + retries);
    assert!(retries <= n / 5 + 10, "{retries} retries over the budget");
    assert!(
        retries >= n / 5,
        "{retries} retries: the budget was not used"
    );
    assert!(exhausted >= 1.0, "the budget never ran out");
    // Without a budget every 503 would be retried into a 200; with it, only some are.
    assert!(ok > n / 2 && ok < n, "{ok} of {n} succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_is_cut_by_the_per_try_timeout_and_the_next_answers() {
    let slow = FaultyUpstream::start("slow").await;
    let fast = FaultyUpstream::start("fast").await;
    slow.set(Fault::Hang);
    let (_p, url) = proxy(
        &[&slow, &fast],
        "retries: {per_try_timeout: 200ms, retry_on: [per_try_timeout, connect_failure]}",
    );
    let c = client_h1();
    for _ in 0..4 {
        let r = get(&c, &format!("{url}/x"), "svc", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["x-upstream"], "fast");
    }
    assert!(
        slow.received() >= 1,
        "round robin sent some first tries to the slow one"
    );
    slow.release();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_bodies_are_replayed_and_non_idempotent_requests_are_not_retried() {
    let bad = FaultyUpstream::start("bad").await;
    let good = FaultyUpstream::start("good").await;
    bad.set(Fault::Status(503));
    let (p, url) = proxy(&[&bad, &good], "retries: {body_limit: 16}");
    let c = client_h1();
    let send = |method: &'static str, body: &'static str| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let req = Request::builder()
                .method(method)
                .uri(format!("{url}/x"))
                .header("host", "svc")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            send(&c, req).await
        }
    };
    // PUT is idempotent: a 503 goes to the other endpoint with the same body.
    for _ in 0..2 {
        let r = send("PUT", "hello").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hello");
    }
    // POST is not: whoever it landed on answers.
    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(send("POST", "x").await.status);
    }
    assert!(posts.iter().any(|s| *s == 503), "{posts:?}");
    // A body over the limit is sent once.
    let before = metric(&p, "membrane_upstream_retries_total").await;
    let mut big = Vec::new();
    for _ in 0..4 {
        big.push(send("PUT", "more than sixteen bytes").await.status);
    }
    assert!(big.iter().any(|s| *s == 503), "{big:?}");
    assert_eq!(metric(&p, "membrane_upstream_retries_total").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_longer_than_the_route_allows_is_not_waited_for() {
    let up = FaultyUpstream::start("busy").await;
    up.set(Fault::Status(503));
    up.set_retry_after(30);
    let (p, url) = proxy(&[&up], "retries: {}");
    let r = get(&client_h1(), &format!("{url}/x"), "svc", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "30");
    assert_eq!(up.received(), 1);
    assert_eq!(metric(&p, "membrane_upstream_retries_total").await, 0.0);
    // One second is within the route's five: honoured, then retried.
    up.set_retry_after(1);
    let r = get(&client_h1(), &format!("{url}/x"), "svc", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(up.received(), 1 + 3, "the first try and two retries");
    assert_eq!(metric(&p, "membrane_upstream_retries_total").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_an_endpoint_out_and_bring_it_back() {
    let a = FaultyUpstream::start("a").await;
    let b = FaultyUpstream::start("b").await;
    let (p, url) = proxy(
        &[&a, &b],
        "health_check: {http_path: /healthz, interval: 50ms, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2}",
    );
    let c = client_h1();
    eventually("checks run", Duration::from_secs(10), || async {
        a.checks() >= 2 && b.checks() >= 2
    })
    .await;
    b.set_healthy(false);
    eventually("b is down", Duration::from_secs(10), || async {
        metric(&p, "membrane_upstream_endpoints_down").await == 1.0
    })
    .await;
    let config = get(
        &c,
        &format!("http://{}/config", p.admin_addr()),
        "admin",
        &[],
    )
    .await
    .json();
    let eps = &config["clusters"]["c"]["endpoints"];
    assert_eq!(eps[1]["address"], b.addr.to_string());
    assert_eq!(eps[1]["health_check_down"], true, "{eps}");
    assert_eq!(eps[0]["available"], true, "{eps}");
    let b_served = b.received();
    for _ in 0..20 {
        let r = get(&c, &format!("{url}/x"), "svc", &[]).await;
        assert_eq!(r.headers["x-upstream"], "a");
    }
    assert_eq!(b.received(), b_served);
    b.set_healthy(true);
    eventually("b is back", Duration::from_secs(10), || async {
        metric(&p, "membrane_upstream_endpoints_down").await == 0.0
    })
    .await;
    for _ in 0..20 {
        get(&c, &format!("{url}/x"), "svc", &[]).await;
    }
    assert!(b.received() >= b_served + 5, "b takes traffic again");
    // One prober per endpoint for the whole gateway, not one per worker (two here): at a
    // 50 ms interval with 10% jitter, two probers would double the count.
    let (a0, t0) = (a.checks(), std::time::Instant::now());
    eventually("more checks", Duration::from_secs(10), || async {
        a.checks() >= a0 + 10
    })
    .await;
    let per_interval = 10.0 / (t0.elapsed().as_secs_f64() / 0.05);
    assert!(per_interval < 1.5, "{per_interval} checks per interval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_breaker_answers_503_at_once() {
    let up = FaultyUpstream::start("held").await;
    up.set(Fault::Hang);
    let (p, url) = proxy(&[&up], "circuit_breakers: {max_requests: 2}");
    let mut held = Vec::new();
    for _ in 0..2 {
        let url = url.clone();
        held.push(tokio::spawn(async move {
            get(&client_h1(), &format!("{url}/x"), "svc", &[])
                .await
                .status
        }));
    }
    eventually("two requests held", Duration::from_secs(10), || async {
        up.hanging() == 2
    })
    .await;
    let r = get(&client_h1(), &format!("{url}/x"), "svc", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "upstream_overflow");
    assert_eq!(up.received(), 2);
    let text = get(
        &client_h1(),
        &format!("http://{}/metrics", p.admin_addr()),
        "admin",
        &[],
    )
    .await
    .text();
    assert!(
        text.contains(r#"membrane_upstream_overflow_total{cluster="c",breaker="requests"} 1"#),
        "{text}"
    );
    up.release();
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_endpoint_comes_back_by_itself() {
    let a = FaultyUpstream::start("a").await;
    let b = FaultyUpstream::start("b").await;
    b.set(Fault::Status(500));
    let (p, url) = proxy(
        &[&a, &b],
        "outlier_detection: {consecutive_5xx: 2, base_ejection_time: 300ms}",
    );
    let c = client_h1();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(get(&c, &format!("{url}/x"), "svc", &[]).await.status);
    }
    // Two 500s eject b; the rest goes to a.
    assert_eq!(
        statuses.iter().filter(|s| **s == 500).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(metric(&p, "membrane_upstream_ejections_total").await, 1.0);
    b.set(Fault::Answer);
    let b_then = b.received();
    eventually("b is back", Duration::from_secs(10), || async {
        get(&c, &format!("{url}/x"), "svc", &[]).await;
        b.received() > b_then
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_more_often_than_its_peers_is_ejected_by_its_success_rate() {
    let mut ups = Vec::new();
    for i in 0..5 {
        ups.push(FaultyUpstream::start(&format!("u{i}")).await);
    }
    // The consecutive rules are off: only the success rate can eject.
    let refs: Vec<&FaultyUpstream> = ups.iter().collect();
    let (p, url) = proxy(
        &refs,
        "outlier_detection: {consecutive_5xx: 0, consecutive_gateway_errors: 0, success_rate: {minimum_hosts: 5, request_volume: 10, interval: 50ms}}",
    );
    let c = client_h1();
    // All healthy: equal rates, no ejection (bounded by count).
    for _ in 0..300 {
        assert_eq!(get(&c, &format!("{url}/x"), "svc", &[]).await.status, 200);
    }
    assert_eq!(metric(&p, "membrane_upstream_ejections_total").await, 0.0);

    // One answers 503 every other time: a rate of 0.5 against 1.0 for its peers, below
    // the mean by more than 1.9 deviations. Bounded: at most 3000 requests.
    ups[4].set(Fault::EveryOther503);
    let mut sent = 0;
    while metric(&p, "membrane_upstream_ejections_total").await == 0.0 {
        assert!(sent < 3000, "no ejection after {sent} requests");
        for _ in 0..20 {
            get(&c, &format!("{url}/x"), "svc", &[]).await;
        }
        sent += 20;
    }
    assert_eq!(metric(&p, "membrane_upstream_ejections_total").await, 1.0);
    // It is out (for the base ejection time, 30 s): every request is answered by the rest.
    let before = ups[4].received();
    for _ in 0..50 {
        assert_eq!(get(&c, &format!("{url}/x"), "svc", &[]).await.status, 200);
    }
    assert_eq!(
        ups[4].received(),
        before,
        "the ejected endpoint got traffic"
    );
}

#[test]
fn a_retried_4xx_is_refused_with_its_field() {
    let path = membrane_proxy::testing::write_config(
        "listeners: []\nclusters:\n  - name: c\n    endpoints: ['127.0.0.1:1']\n    retries: {retry_on: [connect_failure, 404]}\n",
    );
    let err = membrane_proxy::start(membrane_proxy::StartOptions::file(path, false))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("clusters[0].retries.retry_on[1]"), "{err}");
    assert!(err.contains("a retried status must be a 5xx"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_zone_takes_the_traffic_and_other_localities_take_over_when_it_is_down() {
    let zone = FaultyUpstream::start("zone").await;
    let region = FaultyUpstream::start("region").await;
    let far = FaultyUpstream::start("far").await;
    let yaml = format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 2\nlocality: {{region: eu, zone: eu-1a}}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, forward: {{cluster: c}}}}]}}]\nclusters:\n  - name: c\n    endpoints: []\n    localities:\n      - {{region: us, zone: us-1a, endpoints: ['{}']}}\n      - {{region: eu, zone: eu-1b, endpoints: ['{}']}}\n      - {{region: eu, zone: eu-1a, endpoints: ['{}']}}\n    health_check: {{http_path: /healthz, interval: 50ms, healthy_threshold: 1, unhealthy_threshold: 1}}\n",
        far.addr, region.addr, zone.addr
    );
    let (p, _) = start_proxy(&yaml);
    let url = format!("http://{}/x", p.listener_addr("main").unwrap());
    let c = client_h1();
    let served_by = |n: usize| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let mut by = std::collections::BTreeMap::new();
            for _ in 0..n {
                let r = get(&c, &url, "svc", &[]).await;
                assert_eq!(r.status, 200);
                *by.entry(r.headers["x-upstream"].to_str().unwrap().to_owned())
                    .or_insert(0) += 1;
            }
            by
        }
    };
    let down = |n: f64| {
        let p = &p;
        async move { metric(p, "membrane_upstream_endpoints_down").await == n }
    };
    // All healthy: the gateway's own zone takes everything.
    assert_eq!(served_by(20).await, [("zone".to_owned(), 20)].into());
    // Its zone down: the other zone of its region.
    zone.set_healthy(false);
    eventually("zone down", Duration::from_secs(10), || down(1.0)).await;
    assert_eq!(served_by(20).await, [("region".to_owned(), 20)].into());
    // The whole region down: the other region takes over.
    region.set_healthy(false);
    eventually("region down", Duration::from_secs(10), || down(2.0)).await;
    assert_eq!(served_by(20).await, [("far".to_owned(), 20)].into());
    // Back: traffic returns to the zone.
    zone.set_healthy(true);
    region.set_healthy(true);
    eventually("all up", Duration::from_secs(10), || down(0.0)).await;
    assert_eq!(served_by(20).await, [("zone".to_owned(), 20)].into());
}
