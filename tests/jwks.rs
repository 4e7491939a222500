//! A remote JWK set served over HTTPS on loopback: the proxy fetches it, picks up a rotated
//! key through the unknown-kid path, keeps the last good set when fetches fail, and does not
//! refetch on every token with a made-up kid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use membrane_policy::jwt::{Alg, Signer};
use membrane_proxy::testing::jwks::JwksServer;
use membrane_proxy::testing::tls::{Leaf, Pki};
use membrane_proxy::testing::{Upstream, start_proxy};
use serde_json::json;
use std::time::Duration;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwks_of(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.public_jwk()).collect::<Vec<_>>()}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_keys_rotate_survive_outages_and_resist_kid_floods() {
    let dir = std::env::temp_dir().join(format!("membrane-jwks-{}", std::process::id()));
    let pki = Pki::new(&dir);
    let (cert, key) = pki.leaf("idp", &Leaf::new("idp").dns("localhost"));
    let k1 = Signer::generate(Alg::ES256, "k1").unwrap();
    let k2 = Signer::generate(Alg::ES256, "k2").unwrap();
    let server = JwksServer::start(&cert, &key, &jwks_of(&[&k1])).await;
    let up = Upstream::start("up").await;
    let (proxy, _) = start_proxy(&format!(
        "admin: {{address: '127.0.0.1:0'}}\njwt_providers:\n  - name: idp\n    jwks:\n      url:\n        url: https://localhost:{}/.well-known/jwks.json\n        trust_bundle: {}\n        refresh: 1h\n        min_refetch: 1s\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, jwt: {{provider: idp}}, forward: {{cluster: c}}}}]}}]\nclusters: [{{name: c, endpoints: ['{}']}}]\n",
        server.addr.port(),
        pki.bundle().display(),
        up.addr
    ));
    let url = format!("http://{}/x", proxy.listener_addr("edge").unwrap());
    let c = client_h1();
    let claims = json!({"sub": "alice", "exp": now() + 600});
    let auth = |s: &Signer| format!("Bearer {}", s.sign(&claims));
    let (t1, t2) = (auth(&k1), auth(&k2));
    let ready = || async {
        get(
            &c,
            &format!("http://{}/ready", proxy.admin_addr()),
            "a",
            &[],
        )
        .await
        .status
    };

    eventually(
        "the first key set is fetched",
        Duration::from_secs(10),
        || {
            let (c, url, t1) = (c.clone(), url.clone(), t1.clone());
            async move { get(&c, &url, "x", &[("authorization", &t1)]).await.status == 200 }
        },
    )
    .await;
    assert_eq!(server.fetches(), 1);
    assert_eq!(ready().await, 200, "ready once the key set is in");

    // Rotation: the server now has k2 too; a k2 token names an unknown kid, which wakes
    // the fetcher (at most once a second), and then passes.
    server.set_jwks(&jwks_of(&[&k1, &k2]));
    eventually(
        "the rotated key is picked up",
        Duration::from_secs(10),
        || {
            let (c, url, t2) = (c.clone(), url.clone(), t2.clone());
            async move { get(&c, &url, "x", &[("authorization", &t2)]).await.status == 200 }
        },
    )
    .await;
    let after_rotation = server.fetches();
    assert!(after_rotation >= 2, "{after_rotation}");

    // The server fails: a refetch is tried and fails; the keys already loaded keep working.
    server.set_failing(true);
    let stranger = Signer::generate(Alg::ES256, "k3").unwrap();
    let t3 = auth(&stranger);
    assert_eq!(
        get(&c, &url, "x", &[("authorization", &t3)]).await.status,
        401
    );
    let m = || async {
        parse_metrics(
            &get(
                &c,
                &format!("http://{}/metrics", proxy.admin_addr()),
                "a",
                &[],
            )
            .await
            .text(),
        )
    };
    eventually(
        "the failed fetch is counted",
        Duration::from_secs(10),
        || async {
            m().await
                .get("membrane_jwks_fetches_total{provider=\"idp\",result=\"failed\"}")
                .copied()
                .unwrap_or(0.0)
                >= 1.0
        },
    )
    .await;
    assert_eq!(
        get(&c, &url, "x", &[("authorization", &t1)]).await.status,
        200
    );
    assert_eq!(
        get(&c, &url, "x", &[("authorization", &t2)]).await.status,
        200
    );

    // A flood of tokens with made-up kids, for about 1.5 s: fetches stay at one per
    // `min_refetch` (1 s), not one per token. Judged by when the fetches arrived, so that a
    // slow machine cannot make the test pass or fail.
    server.set_failing(false);
    let before = server.fetches();
    let started = std::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(1500) && sent < 2000 {
        let s = Signer::generate(Alg::ES256, &format!("made-up-{sent}")).unwrap();
        let r = get(&c, &url, "x", &[("authorization", &auth(&s))]).await;
        assert_eq!(r.status, 401);
        sent += 1;
    }
    assert!(sent >= 50, "the flood ran: {sent}");
    assert_min_gap(
        &server.arrivals()[before.saturating_sub(1)..],
        "during the flood",
    );

    // A max-age shorter than `refresh` (1 h) brings the next fetches forward: once a fetch
    // has returned `max-age=1`, the set is fetched about every second with no token asking.
    server.set_max_age(1);
    let before_trigger = server.fetches();
    let s = Signer::generate(Alg::ES256, "made-up-last").unwrap();
    assert_eq!(
        get(&c, &url, "x", &[("authorization", &auth(&s))])
            .await
            .status,
        401
    );
    let server = &server;
    eventually(
        "two fetches nobody asked for, on max-age=1",
        Duration::from_secs(15),
        || async move { server.fetches() >= before_trigger + 3 },
    )
    .await;
    assert_min_gap(&server.arrivals()[before_trigger..], "on max-age=1");

    let m = m().await;
    assert_eq!(m["membrane_jwks_keys{provider=\"idp\"}"], 2.0);
    assert!(m.contains_key("membrane_jwks_age_seconds{provider=\"idp\"}"));
    assert!(m["membrane_jwt_validations_total{provider=\"idp\",result=\"unknown_key\"}"] >= 50.0);
    proxy.shutdown().await;
}

/// Fetches arrive no closer than `min_refetch` (1 s; a little less allowed for the time a
/// connection and handshake take to arrive).
fn assert_min_gap(arrivals: &[std::time::Instant], when: &str) {
    for w in arrivals.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(900),
            "{when}: two fetches {gap:?} apart: {arrivals:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_a_remote_key_set_arrives() {
    let dir = std::env::temp_dir().join(format!("membrane-jwks-ready-{}", std::process::id()));
    let pki = Pki::new(&dir);
    let up = Upstream::start("up").await;
    // Nothing listens where the key set should be.
    let (proxy, _) = start_proxy(&format!(
        "admin: {{address: '127.0.0.1:0'}}\njwt_providers:\n  - name: idp\n    jwks:\n      url:\n        url: https://localhost:{}/jwks.json\n        trust_bundle: {}\n        min_refetch: 1s\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    virtual_hosts: [{{name: v, domains: ['*'], routes: [{{name: r, jwt: {{provider: idp}}, forward: {{cluster: c}}}}]}}]\nclusters: [{{name: c, endpoints: ['{}']}}]\n",
        closed_port(),
        pki.bundle().display(),
        up.addr
    ));
    // Not ready after a fetch has failed (a wait for an event, not for a while).
    let admin = proxy.admin_addr();
    eventually("a failed fetch", Duration::from_secs(10), || async move {
        metric_sum(admin, "membrane_jwks_fetches_total").await >= 1.0
    })
    .await;
    let r = get(
        &client_h1(),
        &format!("http://{}/ready", proxy.admin_addr()),
        "a",
        &[],
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("key set"), "{}", r.text());
    proxy.shutdown().await;
}
