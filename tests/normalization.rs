//! What policy decides on is what the upstream receives: path normalization, policy after a
//! rewrite, one canonical authority, in front of a real nginx (which normalizes paths itself
//! before it picks a location, as most upstreams do).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::nginx::{Nginx, seen};
use common::*;
use membrane_proxy::testing::start_proxy;
use std::net::SocketAddr;

fn config(upstream: SocketAddr, extra_listener: &str) -> String {
    format!(
        r#"admin: {{address: '127.0.0.1:0'}}
workers: 1
listeners:
  - name: edge
    address: 127.0.0.1:0
{extra_listener}
    authorization:
      default: allow
      rules:
        - {{name: no-admin, action: deny, paths: [{{prefix: /admin}}]}}
        - {{name: no-admin-host, action: deny, hosts: [admin.test]}}
    virtual_hosts:
      - name: v
        domains: ['*']
        routes:
          - {{name: api, match: {{path: {{prefix: /api/}}}}, forward: {{cluster: ng, prefix_rewrite: /}}}}
          - {{name: apix, match: {{path: {{prefix: /apix}}}}, forward: {{cluster: ng, prefix_rewrite: /}}}}
          - {{name: all, forward: {{cluster: ng}}}}
clusters: [{{name: ng, endpoints: ['{upstream}']}}]
"#
    )
}

/// Percent-decoding, as nginx does for `$uri`.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_denied_path_reaches_the_upstream() {
    logs();
    let Some(ng) = Nginx::start() else { return };
    let (proxy, _) = start_proxy(&config(ng.addr, ""));
    let addr = proxy.listener_addr("edge").unwrap();

    // Sanity: nginx itself serves `/admin` for every one of these spellings.
    for target in ["/x/../admin", "//admin", "/./admin", "/%61dmin"] {
        let r = raw(ng.addr, &raw_get(target, "x")).await;
        assert_eq!(r.body, "ADMIN\n", "nginx for {target}");
    }

    // Through Membrane: each is the denied `/admin` (403), or refused as malformed (400).
    for target in [
        "/admin",
        "/x/../admin",
        "//admin",
        "/./admin",
        "/%61dmin",
        "/%61%64%6d%69%6e",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/.%2e/admin",
        "/public/..%2fadmin",
        "/public/..%5cadmin",
        "/public/..\\admin",
        "/public/..;/admin",
        "/public/%2e%2e;/admin",
        "/admin%2f",
        "/admin%00",
        "/admin/",
        "/admin/../admin",
        "///admin",
        "/.//admin",
        "/a/b/../../admin",
        "/../admin",
        "/admin#/public",
        "http://x/../admin",
        "http://x//admin",
        "/apix/../admin",
    ] {
        let r = raw(addr, &raw_get(target, "x")).await;
        assert!(
            r.status == 403 || r.status == 400,
            "{target}: {} {}",
            r.status,
            r.body
        );
        assert!(!r.body.contains("ADMIN"), "{target} reached /admin");
        if r.status == 400 {
            let code = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["error"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(
                code == "invalid_path" || code == "bad_request",
                "{target}: {code}"
            );
        }
    }

    // Allowed paths reach nginx in the normal form policy saw: nginx has nothing left to
    // normalize (its decoded `$uri` is the decoded target it received).
    for (target, normal) in [
        ("/public/./x", "/public/x"),
        ("/public//x", "/public/x"),
        ("/x/../public", "/public"),
        ("/%70ublic", "/public"),
        ("/public/a%3fb", "/public/a%3Fb"),
        ("/public/caf\u{e9}", "/public/caf%C3%A9"),
        ("/public?q=/../admin", "/public?q=/../admin"),
        ("http://x/public/../ok", "/ok"),
    ] {
        let r = raw(addr, &raw_get(target, "x")).await;
        assert_eq!(r.status, 200, "{target}: {}", r.body);
        let (uri, request_uri, _) = seen(&r.body).unwrap();
        assert_eq!(request_uri, normal, "{target}");
        let path = request_uri.split('?').next().unwrap();
        assert_eq!(uri, decode(path), "{target}: nginx normalized further");
    }
}

/// Random paths built from the pieces that matter: whatever Membrane lets through, nginx
/// receives in a form it does not change any further, so the two agree on the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membrane_and_nginx_agree_on_every_path_that_passes() {
    let Some(ng) = Nginx::start() else { return };
    let (proxy, _) = start_proxy(&config(ng.addr, ""));
    let addr = proxy.listener_addr("edge").unwrap();
    let pieces = [
        "/", "//", ".", "..", "%2e", "%2E", "a", "%61", "%2f", "%5c", "\\", ";", "%41", "~", "%7e",
        "%00", "%", "b/", "%c3%a9", "%3f", "%23", "admin", "%25", "+", "public",
    ];
    let mut rng = fastrand::Rng::with_seed(11);
    let mut passed = 0;
    for _ in 0..400 {
        let mut target = String::from("/");
        for _ in 0..rng.usize(1..8) {
            target.push_str(pieces[rng.usize(0..pieces.len())]);
        }
        let r = raw(addr, &raw_get(&target, "x")).await;
        match r.status {
            200 => {
                passed += 1;
                let (uri, request_uri, _) = seen(&r.body)
                    .unwrap_or_else(|| panic!("{target}: not nginx's echo: {}", r.body));
                assert_eq!(uri, decode(&request_uri), "{target}");
                assert!(!uri.starts_with("/admin"), "{target} reached {uri}");
            }
            400 | 403 => {}
            s => panic!("{target}: unexpected {s} {}", r.body),
        }
    }
    assert!(passed > 50, "only {passed} of 400 random paths passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_never_reaches_a_denied_upstream_path() {
    let Some(ng) = Nginx::start() else { return };
    let (proxy, _) = start_proxy(&config(ng.addr, ""));
    let addr = proxy.listener_addr("edge").unwrap();
    // `/api/` → `/`: `/api/admin` would be `/admin` upstream.
    for target in [
        "/api/admin",
        "/api//admin",
        "/api/./admin",
        "/apixadmin",
        "/apix/admin",
    ] {
        let r = raw(addr, &raw_get(target, "x")).await;
        assert_eq!(r.status, 403, "{target}: {}", r.body);
        assert_eq!(r.json_field("error"), "forbidden", "{target}");
    }
    let r = raw(addr, &raw_get("/api/users?x=1", "x")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen(&r.body).unwrap().1, "/users?x=1");
    // The prefix without its slash, rewritten to `/`: no `//` reaches the upstream.
    let r = raw(addr, &raw_get("/apix/users", "x")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen(&r.body).unwrap().1, "/users");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_deny_listener_allows_by_the_public_path_before_its_rewrite() {
    let Some(ng) = Nginx::start() else { return };
    let yaml = format!(
        r#"admin: {{address: '127.0.0.1:0'}}
workers: 1
listeners:
  - name: edge
    address: 127.0.0.1:0
    authorization:
      default: deny
      rules:
        - {{name: orders, action: allow, paths: [{{prefix: /orders/}}]}}
        - {{name: no-internal, action: deny, paths: [{{prefix: /internal}}]}}
    virtual_hosts:
      - name: v
        domains: ['*']
        routes:
          - {{name: orders, match: {{path: {{prefix: /orders/}}}}, forward: {{cluster: ng, prefix_rewrite: /}}}}
clusters: [{{name: ng, endpoints: ['{}']}}]
"#,
        ng.addr
    );
    let (proxy, _) = start_proxy(&yaml);
    let addr = proxy.listener_addr("edge").unwrap();
    let r = raw(addr, &raw_get("/orders/7", "x")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen(&r.body).unwrap().1, "/7");
    let r = raw(addr, &raw_get("/orders/internal/keys", "x")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("no-internal"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_canonical_authority_for_routing_policy_and_the_upstream() {
    let Some(ng) = Nginx::start() else { return };
    let (proxy, _) = start_proxy(&config(ng.addr, ""));
    let addr = proxy.listener_addr("edge").unwrap();

    // Every spelling of the denied host is that host.
    for host in [
        "admin.test",
        "ADMIN.test",
        "admin.test.",
        "admin.test.:80",
        "Admin.Test:080",
    ] {
        let r = raw(addr, &raw_get("/public", host)).await;
        assert_eq!(r.status, 403, "{host}: {}", r.body);
    }
    // The absolute-form target's authority wins over Host, for policy and upstream alike.
    let r = raw(addr, &raw_get("http://admin.test/public", "public.test")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = raw(
        addr,
        &raw_get("http://Public.Test.:80/public", "admin.test"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen(&r.body).unwrap().2, "public.test");
    // The upstream gets the canonical Host, port kept when it is not the default.
    let r = raw(addr, &raw_get("/public", "Public.Test.:8080")).await;
    assert_eq!(r.status, 200);
    assert_eq!(seen(&r.body).unwrap().2, "public.test");

    // Two Host fields, or a host that is not one: 400 naming the host.
    for req in [
        "GET /public HTTP/1.1\r\nHost: public.test\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
        "GET /public HTTP/1.1\r\nHost: admin.test\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
        "GET /public HTTP/1.1\r\nHost: evil@admin.test\r\nConnection: close\r\n\r\n",
        "GET /public HTTP/1.1\r\nHost: admin.test..\r\nConnection: close\r\n\r\n",
        "GET /public HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        "GET /public HTTP/1.1\r\nHost: admin.test:99999\r\nConnection: close\r\n\r\n",
        "GET /public HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw(addr, req.as_bytes()).await;
        assert_eq!(r.status, 400, "{req:?}: {}", r.body);
        assert_eq!(r.json_field("error"), "invalid_host", "{req:?}");
    }

    // HTTP/2: `:authority` and a Host field that disagree are refused; agreeing ones pass
    // and the upstream gets one Host.
    let req = http::Request::get("http://public.test/public")
        .header("host", "admin.test")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = send_h2(addr, req).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let req = http::Request::get("http://ADMIN.test.:80/public")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send_h2(addr, req).await.status, 403);
    let req = http::Request::get("http://public.test/x/../public/%61")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = send_h2(addr, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, request_uri, host) = seen(&r.text()).unwrap();
    assert_eq!(
        (request_uri.as_str(), host.as_str()),
        ("/public/a", "public.test")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slash_actions_are_per_listener() {
    let Some(ng) = Nginx::start() else { return };
    let keep = "    normalization: {escaped_slashes: keep}";
    let (proxy, _) = start_proxy(&config(ng.addr, keep));
    let addr = proxy.listener_addr("edge").unwrap();
    let r = raw(addr, &raw_get("/public/a%2fb", "x")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen(&r.body).unwrap().1, "/public/a%2Fb");
    drop(proxy);

    let unescape = "    normalization: {escaped_slashes: unescape}";
    let (proxy, _) = start_proxy(&config(ng.addr, unescape));
    let addr = proxy.listener_addr("edge").unwrap();
    let r = raw(addr, &raw_get("/public/..%2fadmin", "x")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = raw(addr, &raw_get("/public/a%2fb", "x")).await;
    assert_eq!(seen(&r.body).unwrap().1, "/public/a/b");
}

trait JsonField {
    fn json_field(&self, name: &str) -> String;
}

impl JsonField for RawReply {
    fn json_field(&self, name: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body));
        v[name].as_str().unwrap_or("").to_owned()
    }
}
