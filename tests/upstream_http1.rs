//! Membrane's HTTP/1.1 upstream client against a raw, scripted upstream: framings, 1xx,
//! keep-alive and close, broken responses, and idle connections the upstream closed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use membrane_proxy::testing::start_proxy;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one request head (and a body of `content-length` bytes, if any); returns the path.
async fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let path = head.split(' ').nth(1)?.to_owned();
    if path == "/early" {
        // Answers before reading the body, as an upstream refusing a large upload does.
        return Some((path, Vec::new()));
    }
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    Some((path, body))
}

/// An upstream that answers each path with a canned byte string; `connections` counts
/// accepted connections.
async fn scripted() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                while let Some((path, body)) = read_request(&mut s).await {
                    let reply: Vec<u8> = match path.as_str() {
                        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-checksum: abc\r\n\r\n".to_vec(),
                        "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                        "/no-content" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
                        "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec(),
                        "/close" => b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye".to_vec(),
                        "/until-close" => b"HTTP/1.1 200 OK\r\n\r\nall of it".to_vec(),
                        "/garbage" => b"HTTP/1.1 2xx Whatever\r\n\r\n".to_vec(),
                        "/bad-length" => b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx".to_vec(),
                        "/truncated" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this".to_vec(),
                        "/echo" => {
                            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                            r.extend_from_slice(&body);
                            r
                        }
                        "/hang-up" => return,
                        "/early" => {
                            let _ = s
                                .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!")
                                .await;
                            // Keep the connection open without reading.
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            return;
                        }
                        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine".to_vec(),
                    };
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                    if matches!(path.as_str(), "/close" | "/until-close" | "/truncated") {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

async fn proxy_to(upstream: SocketAddr) -> (membrane_proxy::ProxyHandle, String) {
    let yaml = format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, forward: {{cluster: c}}}}]}}]\nclusters: [{{name: c, endpoints: ['{upstream}'], request_timeout: 5s}}]\n"
    );
    let (proxy, _) = start_proxy(&yaml);
    let url = format!("http://{}", proxy.listener_addr("main").unwrap());
    (proxy, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_framings_pass_through() {
    let (up, _) = scripted().await;
    let (_proxy, url) = proxy_to(up).await;
    let c = client_h1();

    // Chunked, with an extension and trailers (which hyper sends on only to a client that
    // said `TE: trailers`).
    let resp = c
        .request(
            Request::get(format!("{url}/chunked"))
                .header("host", "x")
                .header("te", "trailers")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    assert_eq!(collected.to_bytes(), "hello, world");
    assert_eq!(trailers.unwrap()["x-checksum"], "abc");

    assert_eq!(
        get(&c, &format!("{url}/continue"), "x", &[]).await.text(),
        "ok"
    );
    let r = get(&c, &format!("{url}/no-content"), "x", &[]).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (204, 0));
    let head = Request::head(format!("{url}/head"))
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(&c, head).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 0));
    assert_eq!(r.headers["content-length"], "100");
    assert_eq!(
        get(&c, &format!("{url}/close"), "x", &[]).await.text(),
        "bye"
    );
    assert_eq!(
        get(&c, &format!("{url}/until-close"), "x", &[])
            .await
            .text(),
        "all of it"
    );
    // A request body with a length and one without (sent chunked) both arrive whole.
    let post = Request::post(format!("{url}/echo"))
        .header("host", "x")
        .body(Full::new(Bytes::from("payload")))
        .unwrap();
    assert_eq!(send(&c, post).await.text(), "payload");
    assert_eq!(
        get(&c, &format!("{url}/plain"), "x", &[]).await.text(),
        "fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_is_reused_and_close_is_not() {
    let (up, conns) = scripted().await;
    let (_proxy, url) = proxy_to(up).await;
    let c = client_h1();
    for _ in 0..5 {
        assert_eq!(
            get(&c, &format!("{url}/plain"), "x", &[]).await.text(),
            "fine"
        );
    }
    assert_eq!(
        conns.load(Ordering::Relaxed),
        1,
        "five requests, one upstream connection"
    );
    assert_eq!(
        get(&c, &format!("{url}/close"), "x", &[]).await.text(),
        "bye"
    );
    assert_eq!(
        get(&c, &format!("{url}/plain"), "x", &[]).await.text(),
        "fine"
    );
    assert_eq!(
        conns.load(Ordering::Relaxed),
        2,
        "`Connection: close` was honoured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_responses_are_502_with_a_reason() {
    let (up, _) = scripted().await;
    let (_proxy, url) = proxy_to(up).await;
    let c = client_h1();
    for (path, code) in [
        ("/garbage", "upstream_protocol_error"),
        ("/bad-length", "upstream_protocol_error"),
        ("/hang-up", "upstream_reset"),
    ] {
        let r = get(&c, &format!("{url}{path}"), "x", &[]).await;
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert_eq!(r.json()["error"], code, "{path}");
    }
    // A body cut short after the head was sent: the client sees the exchange fail (the head
    // may or may not have reached it before the connection was aborted).
    let cut = c
        .request(
            Request::get(format!("{url}/truncated"))
                .header("host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    match cut {
        Err(_) => {}
        Ok(resp) => assert!(
            resp.into_body().collect().await.is_err(),
            "a truncated body looked complete"
        ),
    }
    assert_eq!(
        get(&c, &format!("{url}/plain"), "x", &[]).await.text(),
        "fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_closed_by_the_upstream_is_replaced() {
    // An upstream that serves one request per connection, then closes it while idle,
    // without saying `Connection: close`.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let closes = closed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let closes = closes.clone();
            tokio::spawn(async move {
                if read_request(&mut s).await.is_some() {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
                        .await;
                }
                drop(s);
                closes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    let (_proxy, url) = proxy_to(up).await;
    let c = client_h1();
    for i in 0..5 {
        let r = get(&c, &format!("{url}/"), "x", &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        // The next request finds the pooled connection closed by the upstream.
        let closed = &closed;
        eventually(
            "the upstream closed the connection",
            Duration::from_secs(10),
            || async move { closed.load(std::sync::atomic::Ordering::Relaxed) > i },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_arrives_while_the_body_is_still_being_sent() {
    let (up, _) = scripted().await;
    let (_proxy, url) = proxy_to(up).await;
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    // A raw client, so that its own writes cannot hide the answer: it keeps sending a
    // 64 MiB body from one task while the test reads the response in another.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let total: usize = 64 << 20;
    let writer = tokio::spawn(async move {
        let head = format!("POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n");
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..total / chunk.len() {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let started = std::time::Instant::now();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !head.ends_with(b"\r\n\r\n") {
            if rd.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer while the body was being sent");
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    writer.abort();
    let c = client_h1();
    assert_eq!(
        get(&c, &format!("{url}/plain"), "x", &[]).await.text(),
        "fine"
    );
}
