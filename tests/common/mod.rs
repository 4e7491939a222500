//! Clients and small helpers shared by the end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod etcd;
pub mod nginx;
pub mod otlp;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// True in CI (`CI=true`, which `.ci/run` sets, as most CI systems do).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A tool or file a test needs is missing: in CI that is a failure (a test that cannot
/// check must not pass), elsewhere the test is skipped and says so.
pub fn missing(what: &str) {
    assert!(!in_ci(), "{what}, and CI=true: this test must run in CI");
    eprintln!("SKIPPED: {what}");
}

pub fn client_h1() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn client_h2() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Reply {
    collect(client.request(req).await.expect("request failed")).await
}

async fn collect(resp: http::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body failed").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Waits until `up` has answered at least `n` requests (a request is counted when it
/// arrives, so this also says a slow request is in flight).
pub async fn served_at_least(up: &membrane_proxy::testing::Upstream, n: usize) {
    eventually(
        &format!("{} to have served {n} requests", up.name),
        Duration::from_secs(5),
        || {
            let got = up.served();
            async move { got >= n }
        },
    )
    .await;
}

/// GET `url` with a Host header and extra headers.
pub async fn get(client: &TestClient, url: &str, host: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::get(url).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(client, b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Awaits `f` for at most 10 s: a step that never ends fails the test with its name instead
/// of holding the whole run.
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 10 s"))
}

/// Polls `f` until it returns true or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The sum of every series of metric `name` on the admin listener at `admin`.
pub async fn metric_sum(admin: std::net::SocketAddr, name: &str) -> f64 {
    let text = get(
        &client_h1(),
        &format!("http://{admin}/metrics"),
        "admin",
        &[],
    )
    .await
    .text();
    parse_metrics(&text)
        .iter()
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum()
}

/// Parses the OpenMetrics text into `series → value` (series as written, labels included).
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A port on 127.0.0.1 with nothing listening on it, for an address a test must name before
/// anything listens there (xDS specs, the binary's `--admin`, a refused upstream).
///
/// Taken below the kernel's ephemeral range: a port freed after `bind(…:0)` can be handed at
/// once to another test's outgoing connection or `bind(…:0)`, and the listener meant for it
/// then fails to bind (seen as an xDS gateway that never became ready). Ports below the range
/// are never handed out that way; tests of one binary take distinct ones (a counter), and the
/// process id spreads binaries apart. Falls back to `bind(…:0)` if the range starts too low.
pub fn closed_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FLOOR: u32 = 10_000;
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = low.saturating_sub(FLOOR);
    if span >= 1_000 {
        let base = std::process::id().wrapping_mul(7_919);
        for _ in 0..span {
            let port = FLOOR + base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            let port = u16::try_from(port).unwrap();
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Sends one request over a fresh HTTP/2 (prior knowledge) connection to `addr`, whatever
/// authority its URI names: the way to reach a virtual host over HTTP/2 in a test.
pub async fn send_h2(addr: std::net::SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    collect(sender.send_request(req).await.expect("h2 request failed")).await
}

/// Sends the proxy's and control server's logs to the test's captured output, which is
/// shown when a test fails. `RUST_LOG` picks what is logged; `info` by default.
pub fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(filter)
        .try_init();
}

/// A reply read off the wire by [`raw`].
pub struct RawReply {
    pub status: u16,
    /// The status line and header fields, as text.
    pub head: String,
    pub body: String,
}

impl RawReply {
    /// The first value of a header field (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// Sends `request` byte for byte (no client library tidies its target or fields) and reads
/// until the connection closes: the request should say `Connection: close`.
pub async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> RawReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    RawReply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `GET target` with one Host field and `Connection: close`, as raw bytes.
pub fn raw_get(target: &str, host: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Reads a response head byte by byte (nothing of the body is taken), up to its blank line.
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).await.unwrap(),
            1,
            "closed before the head ended"
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}
