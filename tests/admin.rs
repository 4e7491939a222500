//! The admin endpoints: `/metrics` parsed and counted, `/ready`, `/live`, `/config`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use membrane_proxy::testing::{Upstream, start_proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let up = Upstream::start("a").await;
    let yaml = format!(
        r#"
admin: {{address: "127.0.0.1:0"}}
workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: v
        domains: [known.test]
        routes:
          - {{name: dead, match: {{path: {{prefix: /dead}}}}, forward: {{cluster: dead}}}}
          - {{name: app, forward: {{cluster: app}}}}
clusters:
  - {{name: app, endpoints: ["{up}"]}}
  - {{name: dead, endpoints: ["127.0.0.1:{closed}"]}}
"#,
        up = up.addr,
        closed = closed_port()
    );
    let (proxy, _) = start_proxy(&yaml);
    let url = format!("http://{}", proxy.listener_addr("main").unwrap());
    let admin = format!("http://{}", proxy.admin_addr());
    let c = client_h1();
    for _ in 0..3 {
        assert_eq!(
            get(&c, &format!("{url}/"), "known.test", &[]).await.status,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            get(&c, &format!("{url}/status/503"), "known.test", &[])
                .await
                .status,
            503
        );
    }
    assert_eq!(
        get(&c, &format!("{url}/dead"), "known.test", &[])
            .await
            .status,
        502
    );
    assert_eq!(
        get(&c, &format!("{url}/"), "other.test", &[]).await.status,
        404
    );

    let text = get(
        &c,
        &format!("{admin}/metrics"),
        "admin",
        &[("accept", "application/openmetrics-text; version=1.0.0")],
    )
    .await
    .text();
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    let m = parse_metrics(&text);
    let req = |route: &str, cluster: &str, class: &str| {
        let k = format!(
            "membrane_requests_total{{listener=\"main\",route=\"{route}\",cluster=\"{cluster}\",status_class=\"{class}\"}}"
        );
        *m.get(&k).unwrap_or_else(|| panic!("missing {k}\n{text}"))
    };
    assert_eq!(req("app", "app", "2xx"), 3.0);
    assert_eq!(req("app", "app", "5xx"), 2.0);
    assert_eq!(req("dead", "dead", "5xx"), 1.0);
    assert_eq!(req("", "", "4xx"), 1.0);
    // Latency by listener, route and cluster; the listener's is their sum.
    let by_listener: f64 = m
        .iter()
        .filter(|(k, _)| {
            k.starts_with("membrane_request_duration_seconds_count{listener=\"main\",")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(by_listener, 7.0);
    assert_eq!(
        m["membrane_request_duration_seconds_count{listener=\"main\",route=\"app\",cluster=\"app\"}"],
        5.0
    );
    assert_eq!(
        m["membrane_upstream_request_duration_seconds_count{cluster=\"app\"}"],
        5.0
    );
    assert_eq!(
        m["membrane_upstream_connect_failures_total{cluster=\"dead\",reason=\"refused\"}"],
        1.0
    );
    assert_eq!(m["membrane_config_reloads_total{result=\"ok\"}"], 1.0);
    assert_eq!(m["membrane_config_generation"], 1.0);
    assert!(m["membrane_downstream_connections_total{listener=\"main\"}"] >= 1.0);
    assert!(m.contains_key("membrane_downstream_connections_active{listener=\"main\"}"));
    // Pooled: five requests to `app` kept their upstream connections open for reuse. One per
    // worker that served them at most, and each downstream connection is on one worker: the
    // client's pool may open a second connection when a request starts before the first
    // connection is back in its pool, and that one may land on the other worker.
    let upstream = m["membrane_upstream_connections_active{cluster=\"app\"}"];
    let downstream = m["membrane_downstream_connections_total{listener=\"main\"}"];
    assert!(
        upstream >= 1.0 && upstream <= downstream.min(2.0),
        "{upstream} upstream connections for {downstream} downstream ones"
    );
    // Bounded labels: no series names a path or a request id.
    assert!(!text.contains("/status/503") && !text.contains("other.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_live_and_config() {
    let yaml = "admin: {address: '127.0.0.1:0'}\nworkers: 1\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n";
    let (proxy, path) = start_proxy(yaml);
    let admin = format!("http://{}", proxy.admin_addr());
    let c = client_h1();
    assert_eq!(
        get(&c, &format!("{admin}/live"), "a", &[]).await.status,
        200
    );
    assert_eq!(
        get(&c, &format!("{admin}/ready"), "a", &[]).await.status,
        200
    );
    let cfg = get(&c, &format!("{admin}/config"), "a", &[]).await.json();
    assert_eq!(cfg["generation"], 1);
    assert_eq!(cfg["version"].as_str().unwrap().len(), 16);
    assert_eq!(cfg["source"], path.display().to_string());
    assert_eq!(cfg["config"]["listeners"][0]["name"], "main");
    assert_eq!(cfg["config"]["listeners"][0]["protocol"], "auto");
    assert_eq!(
        get(&c, &format!("{admin}/nope"), "a", &[]).await.status,
        404
    );
}

/// A listener counts the bytes it read from clients and wrote to them, exactly, over
/// HTTP/1.1 (request body and head, response head and body, through an upstream) and over
/// HTTP/2; the admin listener's own traffic is not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_count_the_bytes_clients_sent_and_were_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start("bytes").await;
    let yaml = format!(
        r#"
admin: {{address: "127.0.0.1:0"}}
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: app, forward: {{cluster: app}}}}]}}]
  - name: h2
    address: 127.0.0.1:0
    protocol: http2
    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: ok, direct_response: {{status: 200, body: twelve bytes}}}}]}}]
clusters: [{{name: app, endpoints: ["{}"]}}]
"#,
        up.addr
    );
    let (proxy, _) = start_proxy(&yaml);
    let addr = proxy.listener_addr("main").unwrap();
    let admin = proxy.admin_addr();
    let body = vec![b'b'; 3000];
    let mut request =
        b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3000\r\nConnection: close\r\n\r\n"
            .to_vec();
    request.extend_from_slice(&body);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&request).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_end(&mut reply),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let series =
        |name: &str, l: &str| format!("membrane_downstream_{name}_bytes_total{{listener=\"{l}\"}}");
    let counted =
        |text: &str, name: &str, l: &str| parse_metrics(text).get(&series(name, l)).copied();
    // The connection is closed once the client has read everything: the counts are final.
    let scrape = || async {
        get(
            &client_h1(),
            &format!("http://{admin}/metrics"),
            "admin",
            &[],
        )
        .await
        .text()
    };
    let mut text = scrape().await;
    for _ in 0..100 {
        if counted(&text, "sent", "main") == Some(reply.len() as f64) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        text = scrape().await;
    }
    assert_eq!(
        counted(&text, "sent", "main"),
        Some(reply.len() as f64),
        "{text}"
    );
    assert_eq!(
        counted(&text, "received", "main"),
        Some(request.len() as f64),
        "{text}"
    );
    // HTTP/2: the preface, SETTINGS and HEADERS frames both ways, and the body.
    let reply = send_h2(
        proxy.listener_addr("h2").unwrap(),
        http::Request::get("http://a.test/")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let text = scrape().await;
    let (rx, tx) = (
        counted(&text, "received", "h2").unwrap(),
        counted(&text, "sent", "h2").unwrap(),
    );
    assert!(
        rx >= 24.0 + 9.0,
        "at least the preface and a SETTINGS frame: {rx}"
    );
    assert!(
        tx >= 12.0 + 9.0 + 9.0,
        "at least the body and two frame heads: {tx}"
    );
}

/// Clusters count the bytes their connections wrote and read: exactly what a raw upstream
/// received (the request head Membrane wrote and the body) and what it answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_count_the_bytes_sent_to_and_received_from_upstreams() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    // Reads one request (head, then a 3000-byte body), answers, and reports what it read.
    let (read_tx, read_rx) = tokio::sync::oneshot::channel::<usize>();
    tokio::spawn(async move {
        let (mut s, _) = up.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended early");
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
                && got.len() >= end + 4 + 3000
            {
                break;
            }
        }
        s.write_all(ANSWER).await.unwrap();
        let _ = read_tx.send(got.len());
        // Held open: the connection goes back to the pool.
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    });
    let yaml = format!(
        r#"
admin: {{address: "127.0.0.1:0"}}
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: app, forward: {{cluster: app}}}}]}}]
clusters: [{{name: app, endpoints: ["{up_addr}"]}}]
"#
    );
    let (proxy, _) = start_proxy(&yaml);
    let addr = proxy.listener_addr("main").unwrap();
    let admin = proxy.admin_addr();
    let reply = send(
        &client_h1(),
        http::Request::post(format!("http://{addr}/upload"))
            .header("host", "a.test")
            .body(Full::new(Bytes::from(vec![b'b'; 3000])))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello");
    let read = read_rx.await.unwrap();
    // One cluster: the families' sums are its series.
    assert_eq!(
        metric_sum(admin, "membrane_upstream_sent_bytes_total").await,
        read as f64
    );
    assert_eq!(
        metric_sum(admin, "membrane_upstream_received_bytes_total").await,
        ANSWER.len() as f64
    );
}
