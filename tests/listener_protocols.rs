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
