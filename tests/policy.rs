//! Policy through the proxy: JWT authentication (401 with a challenge), authorization (403
//! naming the rule, deny wins, dry-run counted but not enforced, peer identity over mTLS),
//! rate limits (429 with RateLimit fields), claims forwarded and forged identity headers
//! removed, every decision in the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use membrane_policy::jwt::{Alg, Signer};
use membrane_proxy::testing::tls::{Leaf, Pki, client_config, connect, get_over};
use membrane_proxy::testing::{Upstream, start_proxy};
use serde_json::json;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn config(jwks: &str, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"admin: {{address: '127.0.0.1:0'}}
workers: 2
jwt_providers:
  - name: idp
    issuer: https://idp.test
    audiences: [orders]
    jwks: {{inline: '{jwks}'}}
    forward_claims: [{{claim: sub, header: x-membrane-user}}]
listeners:
  - name: edge
    address: 127.0.0.1:0
    authorization:
      default: deny
      rules:
        - {{name: open-paths, action: allow, paths: [{{prefix: /public}}, {{prefix: /limited}}, {{prefix: /optional}}]}}
        - {{name: no-admin, action: deny, paths: [{{prefix: /orders/admin}}]}}
        - name: readers
          action: allow
          methods: [GET]
          paths: [{{glob: '/orders/**'}}, {{exact: /orders}}]
          claims: [{{claim: scope, contains: orders.read}}]
    virtual_hosts:
      - name: v
        domains: ['*']
        routes:
          - {{name: public, match: {{path: {{prefix: /public}}}}, forward: {{cluster: c}}}}
          - name: limited
            match: {{path: {{prefix: /limited}}}}
            rate_limit: {{requests: 2, per: 60s}}
            direct_response: {{status: 200, body: ok}}
          - name: optional
            match: {{path: {{prefix: /optional}}}}
            jwt: {{provider: idp, required: false}}
            forward: {{cluster: c}}
          - name: orders
            match: {{path: {{prefix: /orders}}}}
            jwt: {{provider: idp}}
            forward: {{cluster: c}}
  - name: shadow
    address: 127.0.0.1:0
    authorization:
      default: deny
      mode: dry_run
    virtual_hosts:
      - name: v
        domains: ['*']
        routes: [{{name: all, forward: {{cluster: c}}}}]
clusters: [{{name: c, endpoints: ['{upstream}']}}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_authz_and_rate_limits_through_the_proxy() {
    let idp = Signer::generate(Alg::RS256, "k1").unwrap();
    let up = Upstream::start("up").await;
    let (proxy, _) = start_proxy(&config(&idp.jwks(), up.addr));
    let base = format!("http://{}", proxy.listener_addr("edge").unwrap());
    let c = client_h1();
    let token = |scope: &str, exp: u64| {
        idp.sign(
            &json!({"iss": "https://idp.test", "aud": "orders", "sub": "alice",
                         "scope": scope, "exp": exp, "iat": now()}),
        )
    };
    let good = format!("Bearer {}", token("orders.read", now() + 600));

    // No token: 401 with a bare challenge.
    let r = get(&c, &format!("{base}/orders/7"), "x", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"membrane\"");

    // Expired, and signed by someone else: 401 invalid_token with a description.
    let expired = format!("Bearer {}", token("orders.read", now() - 3600));
    let r = get(
        &c,
        &format!("{base}/orders/7"),
        "x",
        &[("authorization", &expired)],
    )
    .await;
    assert_eq!(r.status, 401);
    let challenge = r.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("error=\"invalid_token\"") && challenge.contains("expired"),
        "{challenge}"
    );
    let mallory = Signer::generate(Alg::RS256, "k1").unwrap();
    let forged = format!(
        "Bearer {}",
        mallory.sign(
            &json!({"iss": "https://idp.test", "aud": "orders", "sub": "alice",
                             "scope": "orders.read", "exp": now() + 600})
        )
    );
    let r = get(
        &c,
        &format!("{base}/orders/7"),
        "x",
        &[("authorization", &forged)],
    )
    .await;
    assert_eq!(r.status, 401);

    // A good token: allowed by `readers`; claims forwarded, forged identity headers gone.
    let r = get(
        &c,
        &format!("{base}/orders/7"),
        "x",
        &[
            ("authorization", &good),
            ("x-membrane-user", "mallory"),
            ("x-membrane-role", "admin"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["headers"]["x-membrane-user"], "alice");
    assert!(echo["headers"].get("x-membrane-role").is_none(), "{echo}");
    // Again: answered from the token cache.
    assert_eq!(
        get(
            &c,
            &format!("{base}/orders/7"),
            "x",
            &[("authorization", &good)]
        )
        .await
        .status,
        200
    );

    // Deny wins over the allow rule; without the scope the default denies.
    let r = get(
        &c,
        &format!("{base}/orders/admin/x"),
        "x",
        &[("authorization", &good)],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");
    assert!(
        r.json()["message"].as_str().unwrap().contains("no-admin"),
        "{}",
        r.text()
    );
    let no_scope = format!("Bearer {}", token("profile", now() + 600));
    let r = get(
        &c,
        &format!("{base}/orders/7"),
        "x",
        &[("authorization", &no_scope)],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.json()["message"].as_str().unwrap().contains("default"));

    // Optional authentication: no token passes (and forged headers still go).
    let r = get(
        &c,
        &format!("{base}/optional"),
        "x",
        &[("x-membrane-user", "mallory")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["headers"].get("x-membrane-user").is_none());
    let r = get(
        &c,
        &format!("{base}/optional"),
        "x",
        &[("authorization", &expired)],
    )
    .await;
    assert_eq!(
        r.status, 401,
        "a bad token is refused even where one is optional"
    );

    // Rate limit: 2 per minute per client address.
    for remaining in ["1", "0"] {
        let r = get(&c, &format!("{base}/limited"), "x", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["ratelimit-limit"], "2");
        assert_eq!(r.headers["ratelimit-remaining"], remaining);
    }
    let r = get(&c, &format!("{base}/limited"), "x", &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "rate_limited");
    assert_eq!(r.headers["ratelimit-limit"], "2");
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert!(r.headers.contains_key("ratelimit-reset"));

    // Dry run: the default would deny; the request passes and is counted.
    let shadow = format!("http://{}", proxy.listener_addr("shadow").unwrap());
    assert_eq!(get(&c, &format!("{shadow}/x"), "x", &[]).await.status, 200);

    let m = parse_metrics(
        &get(
            &c,
            &format!("http://{}/metrics", proxy.admin_addr()),
            "a",
            &[],
        )
        .await
        .text(),
    );
    let d = |policy: &str, rule: &str, decision: &str, mode: &str| {
        m.get(&format!(
            "membrane_authz_decisions_total{{policy=\"{policy}\",rule=\"{rule}\",decision=\"{decision}\",mode=\"{mode}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    assert_eq!(d("edge", "no-admin", "deny", "enforce"), 1.0);
    assert_eq!(d("edge", "readers", "allow", "enforce"), 2.0);
    assert_eq!(d("edge", "default", "deny", "enforce"), 1.0);
    assert_eq!(d("shadow", "default", "deny", "dry_run"), 1.0);
    let j = |result: &str| {
        m.get(&format!(
            "membrane_jwt_validations_total{{provider=\"idp\",result=\"{result}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    assert_eq!(j("missing"), 1.0);
    assert_eq!(j("expired"), 2.0);
    assert_eq!(j("signature"), 1.0);
    assert!(
        j("verified") >= 2.0 && j("cached") >= 1.0,
        "{} {}",
        j("verified"),
        j("cached")
    );
    assert_eq!(
        m["membrane_rate_limit_checks_total{listener=\"edge\",route=\"limited\",result=\"limited\"}"],
        1.0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inter_cell_listener_denies_by_default_and_allows_by_peer_cell() {
    let dir = std::env::temp_dir().join(format!("membrane-policy-peer-{}", std::process::id()));
    let pki = Pki::new(&dir);
    let gw = pki.leaf("gw", &Leaf::new("gw").dns("gw.test"));
    let billing = pki.leaf(
        "billing",
        &Leaf::new("b").spiffe("spiffe://acme.internal/org/acme/env/dev/cell/billing"),
    );
    let orders = pki.leaf(
        "orders",
        &Leaf::new("o").spiffe("spiffe://acme.internal/org/acme/env/dev/cell/orders"),
    );
    let up = Upstream::start("up").await;
    let (proxy, _) = start_proxy(&format!(
        "admin: {{address: '127.0.0.1:0'}}\nlisteners:\n  - name: west\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{{cert: {}, key: {}}}]\n      client_auth: require\n      trust_bundle: {}\n    authorization:\n      rules:\n        - {{name: billing-may-call, action: allow, peers: [{{cell: billing}}], methods: [GET]}}\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: all, forward: {{cluster: c}}}}]}}]\nclusters: [{{name: c, endpoints: ['{}']}}]\n",
        gw.0.display(),
        gw.1.display(),
        pki.bundle().display(),
        up.addr
    ));
    let addr = proxy.listener_addr("west").unwrap();
    let bundle = pki.bundle();
    let call = |client: (std::path::PathBuf, std::path::PathBuf)| {
        let bundle = bundle.clone();
        async move {
            let cfg = client_config(
                &bundle,
                Some((&client.0, &client.1)),
                &["http/1.1"],
                &[&rustls::version::TLS13],
            );
            get_over(connect(addr, "gw.test", cfg).await.unwrap(), "/x", &[])
                .await
                .unwrap()
        }
    };
    let r = call(billing).await;
    assert_eq!(r.status, 200);
    let r = call(orders).await;
    assert_eq!(
        r.status, 403,
        "no rule for the orders cell: the inter-cell default denies"
    );
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(body["message"].as_str().unwrap().contains("default"));
    proxy.shutdown().await;
}
