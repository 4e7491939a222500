//! Routing, both HTTP versions on both sides, forwarding headers, load balancing and Upgrade
//! pass-through, all over real sockets on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use membrane_proxy::testing::{Upstream, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Env {
    _proxy: membrane_proxy::ProxyHandle,
    a: Upstream,
    b: Upstream,
    url: String,
}

async fn env() -> Env {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let yaml = format!(
        r#"
admin: {{address: "127.0.0.1:0"}}
workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: api
        domains: [api.example.com]
        routes:
          - name: users-me
            match: {{path: {{exact: /users/me}}}}
            forward: {{cluster: b}}
          - name: users-id
            match: {{path: {{regex: "/users/[0-9]+"}}, methods: [GET]}}
            forward: {{cluster: a}}
          - name: v1
            match: {{path: {{prefix: /v1/}}}}
            forward: {{cluster: a, prefix_rewrite: /internal/}}
          - name: canary
            match: {{headers: [{{name: x-canary, exact: "1"}}]}}
            forward: {{cluster: b}}
          - name: api-default
            forward: {{cluster: a}}
      - name: wild
        domains: ["*.example.com"]
        routes:
          - name: wild
            forward: {{cluster: b}}
      - name: lb
        domains: [rr.test, lr.test]
        routes:
          - name: rr
            match: {{headers: [{{name: host, exact: rr.test}}]}}
            forward: {{cluster: rr}}
          - name: lr
            forward: {{cluster: lr}}
      - name: fallback
        domains: ["*"]
        routes:
          - name: old
            match: {{path: {{prefix: /old}}}}
            redirect: {{host: new.example.com, path: /new, status: 308}}
          - name: teapot
            match: {{path: {{exact: /teapot}}, methods: [POST]}}
            direct_response: {{status: 418, body: "short and stout"}}
          - name: h2up
            match: {{path: {{prefix: /h2}}}}
            forward: {{cluster: h2}}
          - name: ws
            match: {{path: {{prefix: /ws}}}}
            forward: {{cluster: a}}
clusters:
  - {{name: a, endpoints: ["{a}"]}}
  - {{name: b, endpoints: ["{b}"]}}
  - {{name: h2, endpoints: ["{a}"], protocol: http2}}
  - {{name: rr, endpoints: ["{a}", "{b}"], lb: round_robin}}
  - {{name: lr, endpoints: ["{a}", "{b}"], lb: least_request}}
"#,
        a = a.addr,
        b = b.addr
    );
    let (proxy, _) = start_proxy(&yaml);
    let url = format!("http://{}", proxy.listener_addr("main").unwrap());
    Env {
        _proxy: proxy,
        a,
        b,
        url,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_matrix() {
    let e = env().await;
    let c = client_h1();
    // (host, path, headers) → upstream that answers and the URI it sees
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        ("api.example.com", "/users/me", &[], "b", "/users/me"),
        ("api.example.com", "/users/42", &[], "a", "/users/42"),
        (
            "API.Example.com:80",
            "/users/42?x=1",
            &[],
            "a",
            "/users/42?x=1",
        ),
        ("api.example.com", "/users/4x", &[], "a", "/users/4x"),
        (
            "api.example.com",
            "/v1/orders?id=3",
            &[],
            "a",
            "/internal/orders?id=3",
        ),
        (
            "api.example.com",
            "/other",
            &[("x-canary", "1")],
            "b",
            "/other",
        ),
        (
            "api.example.com",
            "/other",
            &[("x-canary", "0")],
            "a",
            "/other",
        ),
        ("www.example.com", "/anything", &[], "b", "/anything"),
        ("deep.www.example.com", "/", &[], "b", "/"),
        ("example.org", "/h2/x", &[], "a", "/h2/x"),
    ];
    for (host, path, headers, want_up, want_uri) in cases {
        let r = get(&c, &format!("{}{path}", e.url), host, headers).await;
        assert_eq!(r.status, 200, "{host}{path}: {}", r.text());
        let j = r.json();
        assert_eq!(j["upstream"], *want_up, "{host}{path}");
        assert_eq!(
            j["uri"]
                .as_str()
                .unwrap()
                .rsplit_once("://")
                .map_or(j["uri"].as_str().unwrap(), |(_, rest)| &rest
                    [rest.find('/').unwrap()..]),
            *want_uri,
            "{host}{path}"
        );
    }
    // A method condition that does not hold falls through to the next route.
    let post = Request::post(format!("{}/users/42", e.url))
        .header("host", "api.example.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(&c, post).await;
    assert_eq!(r.json()["upstream"], "a");
    assert_eq!(r.json()["method"], "POST");

    let r = get(&c, &format!("{}/old/page?q=1", e.url), "example.org", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "http://new.example.com/new?q=1");

    let post = Request::post(format!("{}/teapot", e.url))
        .header("host", "example.org")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(&c, post).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "short and stout");
    // GET /teapot matches no route of the fallback host.
    let r = get(&c, &format!("{}/teapot", e.url), "example.org", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no_route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_http_versions_in_and_out() {
    let e = env().await;
    let addr: std::net::SocketAddr = e.url.trim_start_matches("http://").parse().unwrap();
    let h1 = client_h1();
    let empty = || Full::new(Bytes::new());
    // (path on api.example.com / example.org, upstream version)
    for (host, path, want_version) in [
        ("api.example.com", "/users/42", "HTTP/1.1"),
        ("example.org", "/h2/x", "HTTP/2.0"),
    ] {
        let r1 = get(&h1, &format!("{}{path}", e.url), host, &[]).await;
        let port = addr.port();
        let req = Request::get(format!("http://{host}:{port}{path}"))
            .body(empty())
            .unwrap();
        let r2 = send_h2(addr, req).await;
        for (r, into) in [(r1, "h1"), (r2, "h2")] {
            let what = format!("{into} in, {want_version} out, {host}{path}");
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            let j = r.json();
            assert_eq!(j["version"], want_version, "{what}");
            if want_version == "HTTP/1.1" {
                assert!(
                    j["headers"]["host"].as_str().unwrap().starts_with(host),
                    "{what}: {j}"
                );
                assert_eq!(j["uri"], path, "{what}");
            } else {
                assert!(
                    j["uri"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("http://{host}")),
                    "{what}: {j}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_added_and_hop_by_hop_removed() {
    let e = env().await;
    let c = client_h1();
    let r = get(
        &c,
        &format!("{}/users/me", e.url),
        "api.example.com",
        &[
            ("x-request-id", "req-123"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-forwarded-proto", "https"),
            ("connection", "x-secret"),
            ("x-secret", "hop"),
            ("te", "trailers"),
            ("keep-alive", "timeout=5"),
            ("via", "1.1 edge"),
        ],
    )
    .await;
    let h = &r.json()["headers"];
    assert_eq!(h["x-request-id"], "req-123");
    // No hop in front is trusted (`trusted_hops: 0`): the client's own list is dropped.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["via"], "1.1 edge, 1.1 membrane");
    assert!(h.get("x-secret").is_none(), "{h}");
    assert!(h.get("te").is_none(), "{h}");
    assert!(h.get("keep-alive").is_none(), "{h}");
    assert!(r.headers.get("via").is_none(), "responses get no Via");
    // Without an incoming id, one is made: a UUID.
    let r = get(&c, &format!("{}/users/me", e.url), "api.example.com", &[]).await;
    let id = r.json()["headers"]["x-request-id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_least_request() {
    let e = env().await;
    let c = client_h1();
    for _ in 0..10 {
        assert_eq!(
            get(&c, &format!("{}/", e.url), "rr.test", &[]).await.status,
            200
        );
    }
    assert_eq!((e.a.served(), e.b.served()), (5, 5));

    // While one endpoint holds a slow request, least-request sends everything to the other.
    let before = (e.a.served(), e.b.served());
    let slow_url = format!("{}/delay/1500", e.url);
    let c2 = c.clone();
    let slow = tokio::spawn(async move { get(&c2, &slow_url, "lr.test", &[]).await.json() });
    eventually(
        "the slow request reached an upstream",
        std::time::Duration::from_secs(5),
        || {
            let n = e.a.served() + e.b.served();
            async move { n > before.0 + before.1 }
        },
    )
    .await;
    let busy = if e.a.served() > before.0 { "a" } else { "b" };
    // One connection for all six, so each request is read only after the one before it is
    // done: a request counts as in flight until its response body is dropped, which can be
    // just after the client has its last byte. On a second connection (a pool may open
    // one), on the other worker, the next request could see that one still counted, tie the
    // two endpoints, and go either way (seen once in 150 runs under CPU load).
    let addr = e.url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..6 {
        sender.ready().await.unwrap();
        let req = http::Request::get("/")
            .header("host", "lr.test")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let r = sender.send_request(req).await.unwrap();
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap();
        assert_ne!(json["upstream"], busy);
    }
    assert_eq!(slow.await.unwrap()["upstream"], busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_passes_through_and_echoes() {
    let e = env().await;
    let addr = e.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: example.org\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"over the tunnel"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
}
