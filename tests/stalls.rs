//! Stalled transfers end: a client that stops reading a response (HTTP/1.1, and HTTP/2 with
//! its flow control) is cut off after the listener's `send_timeout`, an upstream that stops
//! sending a body after the cluster's `body_idle_timeout`; either way the upstream
//! connection the response held is let go, so stalled downloads cannot use up a cluster's
//! `max_connections`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use membrane_proxy::testing::{Pausable, Upstream, start_proxy};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"admin: {{address: '127.0.0.1:0'}}
workers: 1
listeners:
  - name: edge
    address: 127.0.0.1:0
    limits: {{send_timeout: 300ms}}
    virtual_hosts:
      - name: v
        domains: ['*']
        routes: [{{name: all, forward: {{cluster: c}}}}]
clusters:
  - {{name: c, endpoints: ['{upstream}'], body_idle_timeout: 300ms, max_connections: 4}}
"#
    )
}

async fn upstream_connections(proxy: &membrane_proxy::ProxyHandle) -> f64 {
    let url = format!("http://{}/metrics", proxy.admin_addr());
    let m = parse_metrics(&get(&client_h1(), &url, "admin", &[]).await.text());
    m.get("membrane_upstream_connections_active{cluster=\"c\"}")
        .copied()
        .unwrap_or(0.0)
}

async fn until_upstream_released(proxy: &membrane_proxy::ProxyHandle, what: &str) {
    eventually(what, Duration::from_secs(10), || async {
        upstream_connections(proxy).await == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_stops_reading_is_cut_off_and_its_upstream_let_go() {
    let up = Upstream::start("up").await;
    let (proxy, _) = start_proxy(&config(up.addr));
    let addr = proxy.listener_addr("edge").unwrap();
    // Four stalled downloads: as many as the cluster's connection limit.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /stream/200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 1024];
        s.read_exact(&mut first).await.unwrap();
        assert!(first.starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    served_at_least(&up, 4).await;
    // The clients read nothing more; within a few send timeouts the proxy gives up.
    until_upstream_released(
        &proxy,
        "the stalled downloads' upstream connections to close",
    )
    .await;
    // The cluster serves others again (it would say 503 upstream_overflow otherwise).
    let r = get(&client_h1(), &format!("http://{addr}/ok"), "x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // What a stalled client still gets is a closed connection, short of the body.
    let mut s = held.pop().unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(rest.len() < 200_000_000, "the whole body came through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_with_open_windows_that_never_reads_is_cut_off() {
    let up = Upstream::start("up").await;
    let (proxy, _) = start_proxy(&config(up.addr));
    let addr = proxy.listener_addr("edge").unwrap();
    let (io, paused) = Pausable::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    // Windows as large as HTTP/2 allows: the proxy may send as much as it likes.
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(i32::MAX as u32)
            .initial_connection_window_size(i32::MAX as u32)
            .handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let req = http::Request::get("http://x/stream/200000000")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        bodies.push(resp.into_body());
    }
    paused.store(true, Ordering::Relaxed);
    let stalled_at = Instant::now();
    until_upstream_released(&proxy, "the stalled streams' upstream connections to close").await;
    assert!(stalled_at.elapsed() < Duration::from_secs(5));
    let r = get(&client_h1(), &format!("http://{addr}/ok"), "x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    conn.abort();
}

/// An upstream that sends a head and the first part of a body, then nothing.
async fn stalling_upstream() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                    .await;
                let _ = s.write_all(&[b'x'; 1000]).await;
                // Holds the connection open, silent, until the proxy closes it.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stops_sending_a_body_is_cut_off_on_both_protocols() {
    let up = stalling_upstream().await;
    let (proxy, _) = start_proxy(&config(up));
    let addr = proxy.listener_addr("edge").unwrap();

    // HTTP/1.1: the head and the part that came, then the connection closes.
    let started = Instant::now();
    let r = raw(addr, &raw_get("/x", "x")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1000);
    assert!(started.elapsed() < Duration::from_secs(5));

    // HTTP/2: the stream is reset.
    let req = http::Request::get(format!("http://{addr}/x"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client_h2().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let started = Instant::now();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the proxy ended the stream");
    assert!(body.is_err(), "the stream ended as if the body were whole");
    assert!(started.elapsed() < Duration::from_secs(5));
    until_upstream_released(&proxy, "the stalled upstream connections to close").await;
}
