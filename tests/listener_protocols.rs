//! A listener fixed to HTTP/1.1 or to HTTP/2 (prior knowledge) serves that protocol and
//! refuses the other; `auto` serves both (see routing.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use membrane_proxy::testing::{Upstream, start_proxy};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_protocol_listeners() {
    let up = Upstream::start("a").await;
    let listener = |name: &str, protocol: &str| {
        format!(
            "  - name: {name}\n    address: 127.0.0.1:0\n    protocol: {protocol}\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, forward: {{cluster: c}}}}]}}]\n"
        )
    };
    let yaml = format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\nlisteners:\n{}{}clusters: [{{name: c, endpoints: ['{}']}}]\n",
        listener("one", "http1"),
        listener("two", "http2"),
        up.addr
    );
    let (proxy, _) = start_proxy(&yaml);
    let one = proxy.listener_addr("one").unwrap();
    let two = proxy.listener_addr("two").unwrap();
    let req = |addr: std::net::SocketAddr| {
        Request::get(format!("http://{addr}/"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    let r = send(&client_h1(), req(one)).await;
    assert_eq!(r.json()["version"], "HTTP/1.1");
    let r = send_h2(two, req(two)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["upstream"], "a");

    // The other protocol gets no answer: an HTTP/2 preface on the HTTP/1.1 listener is a
    // malformed request, and an HTTP/1.1 request on the HTTP/2 listener a broken preface.
    let wrong = tokio::time::timeout(Duration::from_secs(5), client_h2().request(req(one)))
        .await
        .expect("no answer at all");
    assert!(wrong.is_err(), "an HTTP/1.1 listener answered HTTP/2");
    let wrong = tokio::time::timeout(Duration::from_secs(5), client_h1().request(req(two)))
        .await
        .expect("no answer at all");
    assert!(wrong.is_err(), "an HTTP/2 listener answered HTTP/1.1");
}

/// An HTTP/2 connection with no open stream is closed after the listener's `idle_timeout`
/// (hyper alone would keep it forever); a stream that stays open longer than that keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_and_a_busy_one_is_not() {
    let up = Upstream::start("a").await;
    let yaml = format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\nlisteners:\n  - name: two\n    address: 127.0.0.1:0\n    protocol: http2\n    limits: {{idle_timeout: 400ms}}\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, forward: {{cluster: c}}}}]}}]\nclusters: [{{name: c, endpoints: ['{}']}}]\n",
        up.addr
    );
    let (proxy, _) = start_proxy(&yaml);
    let addr = proxy.listener_addr("two").unwrap();
    let open = || async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        (sender, tokio::spawn(conn), std::time::Instant::now())
    };
    let get = |path: &str| {
        Request::get(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    // Idle after one exchange: closed by the proxy, not before the timeout.
    let (mut sender, conn, _) = open().await;
    let r = sender.send_request(get("/")).await.unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    let idle_from = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection was kept");
    assert!(
        idle_from.elapsed() >= Duration::from_millis(300),
        "closed early: {:?}",
        idle_from.elapsed()
    );

    // A stream open for three timeouts keeps its connection; it closes once idle.
    let (mut sender, conn, start) = open().await;
    let r = sender.send_request(get("/delay/1200")).await;
    let r = r.expect("the open stream was cut by the idle timeout");
    assert_eq!(r.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(1200));
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap();
    assert!(!body.to_bytes().is_empty());
    // No GOAWAY came meanwhile: the connection still takes a new stream.
    let r = sender.send_request(get("/")).await;
    assert_eq!(r.expect("GOAWAY while a stream was open").status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "the connection was kept once idle");
    proxy.shutdown().await;
}
