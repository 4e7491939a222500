//! `membrane explain`: the route, the authentication result, the authorization decision and
//! its rule, for a request that is never sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use membrane_policy::jwt::{Alg, Signer};
use membrane_proxy::testing::tls::{Leaf, Pki};
use membrane_proxy::testing::write_config;
use serde_json::json;
use std::process::Command;

fn explain(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_membrane"))
        .arg("explain")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn explain_shows_route_authn_and_the_deciding_rule() {
    let idp = Signer::generate(Alg::ES256, "k1").unwrap();
    let dir = std::env::temp_dir().join(format!("membrane-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new(&dir);
    let (cert, key) = pki.leaf("gw", &Leaf::new("gw").dns("gw"));
    let tls = format!(
        "    tls:\n      certificates: [{{cert: '{}', key: '{}'}}]\n      client_auth: require\n      trust_bundle: '{}'\n      trust_domains: [acme.internal]\n",
        cert.display(),
        key.display(),
        pki.bundle().display()
    );
    let path = write_config(&format!(
        "admin: {{address: '127.0.0.1:0'}}\njwt_providers:\n  - {{name: idp, jwks: {{inline: '{}'}}}}\nlisteners:\n  - name: west\n    address: 127.0.0.1:8443\n{tls}    authorization:\n      default: deny\n      rules:\n        - {{name: no-admin, action: deny, paths: [{{prefix: /orders/admin}}]}}\n        - {{name: billing-reads, action: allow, peers: [{{cell: billing}}], claims: [{{claim: scope, contains: orders.read}}]}}\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n        routes: [{{name: orders, match: {{path: {{prefix: /orders}}}}, jwt: {{provider: idp}}, forward: {{cluster: c}}}}]\nclusters: [{{name: c, endpoints: ['127.0.0.1:9']}}]\n",
        idp.jwks()
    ));
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = idp.sign(&json!({"sub": "svc-billing", "scope": "orders.read", "exp": exp}));
    let peer = "spiffe://acme.internal/org/acme/env/dev/cell/billing";

    let (code, out) = explain(
        &path,
        &[
            "--request",
            "GET https://gw:8443/orders/7",
            "--peer",
            peer,
            "--jwt",
            &token,
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("route     orders"), "{out}");
    assert!(out.contains("valid token, sub `svc-billing`"), "{out}");
    assert!(out.contains("allow by rule `billing-reads`"), "{out}");
    assert!(out.contains("forward to cluster `c`"), "{out}");

    let (code, out) = explain(
        &path,
        &[
            "--request",
            "GET https://gw:8443/orders/admin/1",
            "--peer",
            peer,
            "--jwt",
            &token,
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("deny by rule `no-admin`") && out.contains("403 forbidden"),
        "{out}"
    );

    let (code, out) = explain(
        &path,
        &["--request", "GET https://gw:8443/orders/7", "--peer", peer],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("401 unauthorized"), "{out}");

    let (code, out) = explain(
        &path,
        &["--request", "GET https://gw:8443/nothing", "--peer", peer],
    );
    assert_eq!(code, 1);
    assert!(out.contains("404 no_route"), "{out}");

    // Authentication failed: authorization is not reached, and says so.
    let (_, out) = explain(
        &path,
        &["--request", "GET https://gw:8443/orders/7", "--peer", peer],
    );
    assert!(out.contains("authz     not reached"), "{out}");

    // The request is explained as the gateway sees it: normalized first.
    let (code, out) = explain(
        &path,
        &[
            "--request",
            "GET https://GW.:8443/orders/x/../admin/%31",
            "--peer",
            peer,
            "--jwt",
            &token,
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("host `gw`, target `/orders/admin/1`") && out.contains("no-admin"),
        "{out}"
    );

    // What the handshake refuses is said as such, not as a 403.
    let (code, out) = explain(&path, &["--request", "GET https://gw:8443/orders/7"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refused in the TLS handshake")
            && out.contains("requires a client certificate"),
        "{out}"
    );
    let (code, out) = explain(
        &path,
        &[
            "--request",
            "GET https://gw:8443/orders/7",
            "--peer",
            "spiffe://other.internal/org/acme/env/dev/cell/billing",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refused in the TLS handshake") && out.contains("other.internal"),
        "{out}"
    );

    // An address no listener is on is an error, not another listener's answer.
    let (code, out) = explain(&path, &["--request", "GET https://gw:9999/orders/7"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no listener is on port 9999"), "{out}");

    let (code, out) = explain(&path, &["--request", "nonsense"]);
    assert_eq!(code, 2);
    assert!(out.contains("METHOD URL"), "{out}");
}

#[test]
fn explain_shows_what_the_cluster_does_about_failures() {
    let path = write_config(
        "listeners:\n  - name: main\n    address: 127.0.0.1:8080\n    virtual_hosts: [{name: v, domains: ['*'], routes: [{name: r, forward: {cluster: c}}]}]\nclusters:\n  - name: c\n    endpoints: ['127.0.0.1:9', '127.0.0.1:10']\n    retries: {max_retries: 3, per_try_timeout: 300ms, retry_on: [connect_failure, 503]}\n    outlier_detection: {consecutive_5xx: 4}\n    circuit_breakers: {max_requests: 100}\n    health_check: {http_path: /healthz, interval: 5s}\n",
    );
    let (code, text) = explain(&path, &["--request", "GET http://127.0.0.1:8080/x"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("retries   up to 3 on connect failure (any method), 503 (idempotent methods), backoff 25ms..250ms, per-try timeout 300ms"),
        "{text}"
    );
    assert!(
        text.contains("outliers  ejected after 4 5xx or 5 gateway errors in a row, for 30s"),
        "{text}"
    );
    assert!(text.contains("breakers  requests ≤ 100"), "{text}");
    assert!(
        text.contains(
            "checks    HTTP every 5s (+10% jitter), down after 3 failures, up after 2 passes"
        ),
        "{text}"
    );
}
