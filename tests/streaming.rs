//! A 100 MiB body each way streams through the proxy without being held in memory.
//! Alone in its own test binary, so that the process's peak memory is this test's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use membrane_proxy::testing::{Repeat, Upstream, start_proxy};

const SIZE: u64 = 100 * 1024 * 1024;

/// Peak resident memory of this process, in KiB (Linux).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_each_way_with_bounded_memory() {
    let up = Upstream::start("a").await;
    let yaml = format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, forward: {{cluster: c}}}}]}}]\nclusters: [{{name: c, endpoints: ['{}'], request_timeout: 60s}}]\n",
        up.addr
    );
    let (proxy, _) = start_proxy(&yaml);
    let url = format!("http://{}", proxy.listener_addr("main").unwrap());
    let client: Client<_, Repeat> = Client::builder(TokioExecutor::new()).build_http();
    let before = peak_rss_kib();

    // Upload: the body is made on the fly and counted by the upstream.
    let req = Request::post(format!("{url}/sink"))
        .header("host", "x")
        .body(Repeat::new(SIZE))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["received"], SIZE);

    // Download: counted frame by frame here, never collected.
    let req = Request::get(format!("{url}/stream/{SIZE}"))
        .header("host", "x")
        .body(Repeat::new(0))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(got, SIZE);

    let grew_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        grew_mib < 40,
        "peak memory grew by {grew_mib} MiB while streaming 2 x 100 MiB"
    );
}
