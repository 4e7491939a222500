//! `membrane explain`: the route, the authentication result, the authorization decision and
//! its rule, for a request that is never sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use membrane_policy::jwt::{Alg, Signer};
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
    let path = write_config(&format!(
        "admin: {{address: '127.0.0.1:0'}}\njwt_providers:\n  - {{name: idp, jwks: {{inline: '{}'}}}}\nlisteners:\n  - name: west\n    address: 127.0.0.1:8443\n    authorization:\n      default: deny\n      rules:\n        - {{name: no-admin, action: deny, paths: [{{prefix: /orders/admin}}]}}\n        - {{name: billing-reads, action: allow, peers: [{{cell: billing}}], claims: [{{claim: scope, contains: orders.read}}]}}\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n        routes: [{{name: orders, match: {{path: {{prefix: /orders}}}}, jwt: {{provider: idp}}, forward: {{cluster: c}}}}]\nclusters: [{{name: c, endpoints: ['127.0.0.1:9']}}]\n",
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
            "GET https://gw/orders/7",
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
            "GET https://gw/orders/admin/1",
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
        &["--request", "GET https://gw/orders/7", "--peer", peer],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("401 unauthorized"), "{out}");

    let (code, out) = explain(&path, &["--request", "GET https://gw/nothing"]);
    assert_eq!(code, 1);
    assert!(out.contains("404 no_route"), "{out}");

    let (code, out) = explain(&path, &["--request", "nonsense"]);
    assert_eq!(code, 2);
    assert!(out.contains("METHOD URL"), "{out}");
}
