//! Header fields that policy and the upstream must read alike: names with `_`, the
//! forwarding family, method and path overrides, gateway-owned identity fields, duplicate
//! credentials, `h2c` upgrades; and what error bodies tell outside clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use membrane_policy::jwt::{Alg, Signer};
use membrane_proxy::testing::{Upstream, start_proxy};
use serde_json::{Value, json};
use std::net::SocketAddr;

fn config(upstream: SocketAddr, listener_extra: &str, jwks: &str) -> String {
    format!(
        r#"admin: {{address: '127.0.0.1:0'}}
workers: 1
jwt_providers:
  - name: idp
    jwks: {{inline: '{jwks}'}}
    require_exp: false
    forward_claims: [{{claim: sub, header: x-user}}]
  - name: hdr
    jwks: {{inline: '{jwks}'}}
    require_exp: false
    from: {{header: x-token}}
  - name: jar
    jwks: {{inline: '{jwks}'}}
    require_exp: false
    from: {{cookie: session}}
listeners:
  - name: edge
    address: 127.0.0.1:0
{listener_extra}
    authorization:
      default: allow
      rules:
        - {{name: alice-only, action: deny, paths: [{{prefix: /alice}}], headers: [{{name: x-user, present: false}}]}}
        - {{name: no-role-admin, action: deny, paths: [{{prefix: /role}}], headers: [{{name: x-membrane-role, present: false}}]}}
    virtual_hosts:
      - name: v
        domains: ['*']
        routes:
          - {{name: alice, match: {{path: {{prefix: /alice}}}}, jwt: {{provider: idp, required: false}}, forward: {{cluster: c}}}}
          - {{name: hdr, match: {{path: {{prefix: /hdr}}}}, jwt: {{provider: hdr}}, forward: {{cluster: c}}}}
          - {{name: jar, match: {{path: {{prefix: /jar}}}}, jwt: {{provider: jar}}, forward: {{cluster: c}}}}
          - {{name: all, forward: {{cluster: c}}}}
clusters:
  - {{name: c, endpoints: ['{upstream}']}}
  - {{name: dead, endpoints: ['127.0.0.1:{dead}']}}
"#,
        dead = closed_port()
    )
}

fn request(target: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n");
    for (n, v) in fields {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// The header fields the echoing upstream received.
fn echoed(r: &RawReply) -> serde_json::Map<String, Value> {
    let v: Value =
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body));
    v["headers"].as_object().unwrap().clone()
}

fn error_code(r: &RawReply) -> String {
    let v: Value =
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body));
    v["error"].as_str().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscores_forwarding_family_and_overrides_never_reach_the_upstream() {
    let up = Upstream::start("up").await;
    let idp = Signer::generate(Alg::ES256, "k").unwrap();
    let (proxy, _) = start_proxy(&config(up.addr, "", &idp.jwks()));
    let addr = proxy.listener_addr("edge").unwrap();
    let r = raw(
        addr,
        &request(
            "/x",
            &[
                ("x_membrane_sub", "admin"),
                ("X_Forwarded_For", "6.6.6.6"),
                ("x_user", "alice"),
                ("forwarded", "for=6.6.6.6;host=admin.test;proto=https"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-host", "admin.test"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "443"),
                ("x-forwarded-prefix", "/admin"),
                ("x-real-ip", "6.6.6.6"),
                ("true-client-ip", "6.6.6.6"),
                ("x-client-ip", "6.6.6.6"),
                ("x-http-method-override", "DELETE"),
                ("x-method-override", "DELETE"),
                ("x-original-url", "/admin"),
                ("x-rewrite-url", "/admin"),
                (
                    "x-forwarded-client-cert",
                    "By=spiffe://evil;URI=spiffe://evil",
                ),
                ("x-membrane-role", "admin"),
                ("x-keep", "yes"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let h = echoed(&r);
    for gone in [
        "x_membrane_sub",
        "x_forwarded_for",
        "x_user",
        "forwarded",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "x-http-method-override",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-client-cert",
        "x-membrane-role",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream: {h:?}");
    }
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-keep"], "yes");

    // A rule about the dash spelling cannot be walked around with the underscore one, and
    // forged gateway fields are gone before policy: both paths stay denied.
    for (target, field) in [
        ("/alice", ("x_user", "alice")),
        ("/alice", ("x-user", "alice")),
        ("/role", ("x-membrane-role", "admin")),
        ("/role", ("x_membrane_role", "admin")),
    ] {
        let r = raw(addr, &request(target, &[field])).await;
        assert_eq!(r.status, 403, "{target} with {field:?}: {}", r.body);
    }
    // The verified token's `sub` is the only `x-user` there is.
    let token = idp.sign(&json!({"sub": "alice"}));
    let r = raw(
        addr,
        &request(
            "/alice",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-user", "mallory"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echoed(&r)["x-user"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_settings_reject_or_allow_underscores_and_trust_hops() {
    let up = Upstream::start("up").await;
    let idp = Signer::generate(Alg::ES256, "k").unwrap();
    let reject = "    normalization: {headers_with_underscores: reject}";
    let (proxy, _) = start_proxy(&config(up.addr, reject, &idp.jwks()));
    let addr = proxy.listener_addr("edge").unwrap();
    let r = raw(addr, &request("/x", &[("x_user", "alice")])).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(error_code(&r), "invalid_header");
    assert!(r.body.contains("x_user"), "{}", r.body);
    drop(proxy);

    let trusting = "    normalization: {headers_with_underscores: allow}\n    trusted_hops: 1";
    let (proxy, _) = start_proxy(&config(up.addr, trusting, &idp.jwks()));
    let addr = proxy.listener_addr("edge").unwrap();
    let r = raw(
        addr,
        &request(
            "/x",
            &[
                ("x_app", "1"),
                ("x-forwarded-for", "6.6.6.6, 10.0.0.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "api.test"),
                ("x-original-url", "/admin"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let h = echoed(&r);
    assert_eq!(h["x_app"], "1");
    // One trusted hop: its address is kept, the client's claim before it is not.
    assert_eq!(h["x-forwarded-for"], "10.0.0.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "api.test");
    assert!(!h.contains_key("x-original-url"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_one_credential_is_refused() {
    let up = Upstream::start("up").await;
    let idp = Signer::generate(Alg::ES256, "k").unwrap();
    let (proxy, _) = start_proxy(&config(up.addr, "", &idp.jwks()));
    let addr = proxy.listener_addr("edge").unwrap();
    let token = idp.sign(&json!({"sub": "alice"}));
    let bearer = format!("Bearer {token}");
    // On any route: RFC 9110 allows one Authorization field.
    for target in ["/x", "/alice"] {
        let r = raw(
            addr,
            &request(
                target,
                &[
                    ("authorization", &bearer),
                    ("authorization", "Bearer forged"),
                ],
            ),
        )
        .await;
        assert_eq!(r.status, 400, "{target}: {}", r.body);
        assert!(r.body.contains("Authorization"), "{}", r.body);
    }
    // A provider's own header or cookie, twice.
    let r = raw(
        addr,
        &request("/hdr", &[("x-token", &token), ("x-token", "forged")]),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = raw(
        addr,
        &request(
            "/jar",
            &[("cookie", &format!("session={token}; session=forged"))],
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    // Once each: accepted.
    let r = raw(addr, &request("/hdr", &[("x-token", &token)])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = raw(
        addr,
        &request("/jar", &[("cookie", &format!("a=1; session={token}"))]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_never_passed_on_and_websocket_still_is() {
    // The test upstream answers 101 to any request that carries `Upgrade`.
    let up = Upstream::start("up").await;
    let idp = Signer::generate(Alg::ES256, "k").unwrap();
    let (proxy, _) = start_proxy(&config(up.addr, "", &idp.jwks()));
    let addr = proxy.listener_addr("edge").unwrap();
    for upgrade in ["h2c", "H2C", "foo, h2c"] {
        let r = raw(
            addr,
            &request(
                "/x",
                &[
                    ("connection", "Upgrade, HTTP2-Settings"),
                    ("upgrade", upgrade),
                    ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
                ],
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{upgrade}: {}", r.head);
        let h = echoed(&r);
        for gone in ["upgrade", "http2-settings", "connection"] {
            assert!(!h.contains_key(gone), "{upgrade}: {gone} passed: {h:?}");
        }
    }
    // `h2c` is refused in the config too.
    let bad = "    upgrades: [websocket, h2c]";
    let path = membrane_proxy::testing::write_config(&config(up.addr, bad, &idp.jwks()));
    let e = membrane_proxy::start(membrane_proxy::StartOptions::file(path, false))
        .err()
        .expect("h2c refused");
    assert!(e.to_string().contains("upgrades[1]"), "{e}");

    // WebSocket, offered after h2c, still switches, and only to WebSocket.
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await.to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_are_refused_and_error_bodies_keep_upstream_addresses_inside() {
    let up = Upstream::start("up").await;
    let idp = Signer::generate(Alg::ES256, "k").unwrap();
    let yaml = config(up.addr, "", &idp.jwks()).replace(
        "          - {name: all, forward: {cluster: c}}",
        "          - {name: dead, match: {path: {prefix: /dead}}, forward: {cluster: dead}}\n          - {name: all, forward: {cluster: c}}",
    );
    let (proxy, _) = start_proxy(&yaml);
    let addr = proxy.listener_addr("edge").unwrap();
    let r = raw(addr, &request("/public#/../admin", &[])).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("fragment"), "{}", r.body);

    let r = raw(addr, &request("/dead", &[])).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(error_code(&r), "upstream_connect_refused");
    assert!(!r.body.contains("127.0.0.1"), "{}", r.body);
    assert!(!r.body.contains("dead"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_rules_decide_on_must_be_unambiguous() {
    let up = Upstream::start("up").await;
    let idp = Signer::generate(Alg::ES256, "k").unwrap();
    let yaml = config(up.addr, "", &idp.jwks()).replace(
        "          - {name: all, forward: {cluster: c}}",
        "          - {name: tenant-a, match: {headers: [{name: x-tenant, exact: a}]}, direct_response: {status: 403, body: tenant a is closed}}\n          - {name: all, forward: {cluster: c}}",
    );
    let (proxy, _) = start_proxy(&yaml);
    let addr = proxy.listener_addr("edge").unwrap();
    // One value: the route decides as written.
    let r = raw(addr, &request("/x", &[("x-tenant", "a")])).await;
    assert_eq!(r.status, 403, "{}", r.body);
    // Two: a route reading the first (`b`) would forward what an upstream reading the last
    // (`a`) takes for tenant a. Refused.
    let r = raw(
        addr,
        &request("/x", &[("x-tenant", "b"), ("x-tenant", "a")]),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(error_code(&r), "invalid_header");
    assert!(r.body.contains("x-tenant"), "{}", r.body);
    // A header no route or rule looks at may repeat.
    let r = raw(addr, &request("/x", &[("x-other", "1"), ("x-other", "2")])).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A lower-case method is not the upper-case one a rule names.
    let r = raw(
        addr,
        b"get /x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("lower-case"), "{}", r.body);

    // Path parameters: refused by default, forwarded when the listener keeps them.
    let r = raw(addr, &request("/admin;jsessionid=1", &[])).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(error_code(&r), "invalid_path");
    drop(proxy);
    let keep = "    normalization: {path_parameters: keep}";
    let (proxy, _) = start_proxy(&config(up.addr, keep, &idp.jwks()));
    let addr = proxy.listener_addr("edge").unwrap();
    let r = raw(addr, &request("/x;v=1", &[])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = raw(addr, &request("/x/..;/admin", &[])).await;
    assert_eq!(r.status, 400, "{}", r.body);
}
