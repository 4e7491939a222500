//! A drain (`ProxyHandle::shutdown`, what SIGTERM calls) lets requests in flight finish
//! (signals.rs) and closes every connection that has none: a keep-alive connection between
//! requests, and a connection that has not sent a byte yet — hyper's pool and browsers open
//! those ahead of need — on plain `auto`, `http1` and `http2` listeners and on TLS, whatever
//! phase it is in (handshake, protocol sniff, head read).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use membrane_proxy::testing::start_proxy;
use membrane_proxy::testing::tls::{Leaf, Pki};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough that waiting them out is unmistakable: the test allows a small part of it.
const HEAD_TIMEOUT_S: u64 = 60;

/// Reads until the proxy closes the connection (EOF or reset); what it sent before.
async fn closed_by_proxy(mut s: TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{what}: still open after the drain");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_the_connections_that_have_no_request_in_flight() {
    logs();
    let dir = std::env::temp_dir().join(format!("membrane-drain-{}", std::process::id()));
    let pki = Pki::new(&dir);
    let (cert, key) = pki.leaf("gw", &Leaf::new("gw").dns("gw.test"));
    let listener = |name: &str, extra: &str| {
        format!(
            "  - name: {name}\n    address: 127.0.0.1:0\n    limits: {{header_read_timeout: {HEAD_TIMEOUT_S}s}}\n{extra}    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, direct_response: {{status: 200, body: ok}}}}]}}]\n"
        )
    };
    let tls = format!(
        "    tls:\n      handshake_timeout: {HEAD_TIMEOUT_S}s\n      certificates: [{{cert: {}, key: {}}}]\n",
        cert.display(),
        key.display()
    );
    let yaml = format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 2\ndrain_timeout: {HEAD_TIMEOUT_S}s\nlisteners:\n{}{}{}{}",
        listener("auto", ""),
        listener("one", "    protocol: http1\n"),
        listener("two", "    protocol: http2\n"),
        listener("tls", &tls),
    );
    let (proxy, _) = start_proxy(&yaml);
    let addr = |name: &str| proxy.listener_addr(name).unwrap();

    // Silent connections, one per listener, each waiting in its first phase.
    let mut silent = Vec::new();
    for name in ["auto", "one", "two", "tls"] {
        silent.push((name, TcpStream::connect(addr(name)).await.unwrap()));
    }
    // A keep-alive connection after one full exchange, idle between requests.
    let mut idle = TcpStream::connect(addr("auto")).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    // Half a head, sent slowly: the drain does not wait for the rest either.
    let mut partial = TcpStream::connect(addr("one")).await.unwrap();
    partial.write_all(b"GET / HTTP/1.1\r\nho").await.unwrap();
    // Every connection has reached its worker and waits there.
    let admin = proxy.admin_addr();
    eventually(
        "six open connections",
        Duration::from_secs(10),
        || async move { metric_sum(admin, "membrane_downstream_connections_active").await == 6.0 },
    )
    .await;

    let drained = tokio::time::timeout(Duration::from_secs(15), proxy.shutdown()).await;
    assert!(
        drained.is_ok(),
        "the drain waited for connections with nothing in flight"
    );
    for (name, s) in silent {
        let sent = closed_by_proxy(s, name).await;
        assert!(sent.is_empty(), "{name}: sent {sent:?} to a silent client");
    }
    assert!(closed_by_proxy(idle, "idle keep-alive").await.is_empty());
    closed_by_proxy(partial, "partial head").await;
    let _ = std::fs::remove_dir_all(&dir);
}
