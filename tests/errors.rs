//! The error table: each failure gets its status, a stable code and the request id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use membrane_proxy::testing::{Upstream, start_proxy};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Env {
    _proxy: membrane_proxy::ProxyHandle,
    _up: Upstream,
    url: String,
    addr: std::net::SocketAddr,
}

async fn env() -> Env {
    let up = Upstream::start("a").await;
    // An upstream that accepts and closes at once, before any response.
    let rude = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rude_addr = rude.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in rude.incoming().take(100) {
            drop(s);
        }
    });
    let yaml = format!(
        r#"
admin: {{address: "127.0.0.1:0"}}
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    limits: {{max_request_header_bytes: 2048, max_request_headers: 20}}
    virtual_hosts:
      - name: known
        domains: [known.test]
        routes:
          - {{name: refused, match: {{path: {{prefix: /refused}}}}, forward: {{cluster: refused}}}}
          - {{name: slow, match: {{path: {{prefix: /slow/}}}}, forward: {{cluster: ok, timeout: 200ms, prefix_rewrite: /}}}}
          - {{name: empty, match: {{path: {{prefix: /empty}}}}, forward: {{cluster: empty}}}}
          - {{name: limited, match: {{path: {{prefix: /limited/}}}}, forward: {{cluster: limited, prefix_rewrite: /}}}}
          - {{name: reset, match: {{path: {{prefix: /reset}}}}, forward: {{cluster: rude}}}}
          - {{name: ok, forward: {{cluster: ok}}}}
clusters:
  - {{name: ok, endpoints: ["{up}"]}}
  - {{name: refused, endpoints: ["127.0.0.1:{closed}"]}}
  - {{name: empty, endpoints: []}}
  - {{name: limited, endpoints: ["{up}"], max_connections: 1}}
  - {{name: rude, endpoints: ["{rude_addr}"]}}
"#,
        up = up.addr,
        closed = closed_port(),
    );
    let (proxy, _) = start_proxy(&yaml);
    let addr = proxy.listener_addr("main").unwrap();
    Env {
        _proxy: proxy,
        _up: up,
        url: format!("http://{addr}"),
        addr,
    }
}

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let j = r.json();
    assert_eq!(j["error"], code, "{j}");
    assert!(!j["message"].as_str().unwrap().is_empty(), "{j}");
    let id = j["request_id"].as_str().unwrap();
    assert_eq!(r.headers["x-request-id"], id);
    assert_eq!(r.headers["content-type"], "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_has_its_status_and_code() {
    let e = env().await;
    let c = client_h1();
    let url = |p: &str| format!("{}{p}", e.url);
    assert_error(
        &get(&c, &url("/"), "unknown.test", &[]).await,
        404,
        "no_route",
    );
    let r = get(&c, &url("/refused"), "known.test", &[]).await;
    assert_error(&r, 502, "upstream_connect_refused");
    let r = get(
        &c,
        &url("/slow/delay/2000"),
        "known.test",
        &[("x-request-id", "slow-1")],
    )
    .await;
    assert_error(&r, 504, "upstream_timeout");
    assert_eq!(r.json()["request_id"], "slow-1");
    assert_error(
        &get(&c, &url("/empty"), "known.test", &[]).await,
        503,
        "no_endpoint",
    );
    assert_error(
        &get(&c, &url("/reset"), "known.test", &[]).await,
        502,
        "upstream_reset",
    );

    let big = "v".repeat(3000);
    let r = get(&c, &url("/"), "known.test", &[("x-big", &big)]).await;
    assert_error(&r, 431, "headers_too_large");
    let many: Vec<(String, String)> = (0..25).map(|i| (format!("x-h{i}"), "1".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = get(&c, &url("/"), "known.test", &many).await;
    assert_error(&r, 431, "too_many_headers");
    // Still serving after all that.
    assert_eq!(get(&c, &url("/"), "known.test", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_gives_503_overflow() {
    let e = env().await;
    let c = client_h1();
    let slow = {
        let (c, url) = (c.clone(), format!("{}/limited/delay/800", e.url));
        tokio::spawn(async move { get(&c, &url, "known.test", &[]).await.status })
    };
    let up = &e._up;
    served_at_least(up, 1).await;
    let mut saw_overflow = false;
    for _ in 0..100 {
        // A new client each time: a fresh downstream connection, so the request cannot
        // queue behind the slow one and needs an upstream connection of its own.
        let r = get(
            &client_h1(),
            &format!("{}/limited/", e.url),
            "known.test",
            &[],
        )
        .await;
        if r.status == 503 {
            assert_error(&r, 503, "upstream_overflow");
            saw_overflow = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        saw_overflow,
        "a second connection to a cluster limited to one was allowed"
    );
    assert_eq!(slow.await.unwrap(), 200);
}

async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_huge_headers_431() {
    let e = env().await;
    let r = raw(e.addr, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw(
        e.addr,
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // HTTP/1.1 without Host: our own 400, with a reason.
    let r = raw(e.addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.contains("\"error\":\"invalid_host\"") && r.contains("no Host header"),
        "{r}"
    );
    // Far past hyper's buffer: hyper answers 431 itself and closes.
    let mut req = b"GET / HTTP/1.1\r\nHost: known.test\r\nX-Huge: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 200 * 1024));
    req.extend_from_slice(b"\r\n\r\n");
    let r = raw(e.addr, &req).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    // A request line of binary junk does not hurt the next client.
    let _ = raw(e.addr, &[0u8, 159, 146, 150, 13, 10, 13, 10]).await;
    let c = client_h1();
    assert_eq!(
        get(&c, &format!("{}/", e.url), "known.test", &[])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let up = Upstream::start("a").await;
    let yaml = format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n    limits: {{header_read_timeout: 300ms}}\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, forward: {{cluster: c}}}}]}}]\nclusters: [{{name: c, endpoints: ['{}']}}]\n",
        up.addr
    );
    let (proxy, _) = start_proxy(&yaml);
    let addr = proxy.listener_addr("main").unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    cut_off_at_the_header_read_timeout(s, "the slow client").await;
}

/// Asserts the proxy closes `s` once its 300 ms header-read timeout has passed (from 250 ms
/// on: the connection was opened a little before this clock starts) and within 5 s.
async fn cut_off_at_the_header_read_timeout(mut s: tokio::net::TcpStream, what: &str) {
    let mut buf = Vec::new();
    let start = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "{what}: never disconnected");
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{what}: cut off early, {:?}",
        start.elapsed()
    );
}

/// A connection that sends nothing at all is held no longer than the header-read timeout,
/// whatever the listener's protocol: HTTP/2 ones too, though hyper itself waits for a
/// preface without a limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_cut_off_on_every_protocol() {
    let listener = |name: &str| {
        format!(
            "  - name: {name}\n    address: 127.0.0.1:0\n    protocol: {name}\n    limits: {{header_read_timeout: 300ms}}\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, direct_response: {{status: 200}}}}]}}]\n"
        )
    };
    let yaml = format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\nlisteners:\n{}{}{}",
        listener("auto"),
        listener("http1"),
        listener("http2")
    );
    let (proxy, _) = start_proxy(&yaml);
    for name in ["auto", "http1", "http2"] {
        // Half of HTTP/2's preface, too, where it could be one (on `http1` it is a bad
        // request line, answered 400 at once).
        let partial: &[u8] = if name == "http1" {
            b""
        } else {
            b"PRI * HTTP/2.0\r\n"
        };
        for sent in [&b""[..], partial] {
            let addr = proxy.listener_addr(name).unwrap();
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(sent).await.unwrap();
            cut_off_at_the_header_read_timeout(s, &format!("{name} {sent:?}")).await;
        }
    }
}
