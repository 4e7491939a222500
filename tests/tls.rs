//! TLS at the listener and toward clusters: real handshakes on 127.0.0.1 with certificates
//! made by the test. Versions, SNI, ALPN; the refusal matrix of a `require` listener, each
//! case counted under its reason; XFCC; upstream origination with SPIFFE verification;
//! rotation under load; bad files refused with their position.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use membrane_proxy::testing::tls::{
    Leaf, Pki, TlsUpstream, client_config, connect, get_over, write_atomically,
};
use membrane_proxy::testing::{Upstream, start_proxy};
use membrane_proxy::tls::cert_info::CertInfo;
use membrane_proxy::tls::devca::DevCa;
use rustls::version::{TLS12, TLS13};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const GATEWAY_ID: &str = "spiffe://acme.internal/org/acme/env/dev/cell/orders";
const CALLER_ID: &str = "spiffe://acme.internal/org/acme/env/dev/cell/billing";

fn tmp(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "membrane-tls-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A config with one TLS listener (`tls` is its `tls:` block, indented) whose routes echo
/// from `upstream`, and the admin on an ephemeral port.
fn config(tls: &str, upstream: SocketAddr, cluster_extra: &str) -> String {
    format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 2\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    tls:\n{tls}\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n        routes:\n          - name: all\n            forward: {{cluster: c}}\nclusters:\n  - name: c\n    endpoints: ['{upstream}']\n{cluster_extra}"
    )
}

async fn metrics(proxy: &membrane_proxy::ProxyHandle) -> std::collections::HashMap<String, f64> {
    let url = format!("http://{}/metrics", proxy.admin_addr());
    parse_metrics(&get(&client_h1(), &url, "admin", &[]).await.text())
}

fn failures(m: &std::collections::HashMap<String, f64>, reason: &str) -> f64 {
    m.get(&format!(
        "membrane_tls_handshake_failures_total{{listener=\"edge\",reason=\"{reason}\"}}"
    ))
    .copied()
    .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_and_tls13_with_alpn_h2_and_http11() {
    let dir = tmp("versions");
    let pki = Pki::new(&dir);
    let (cert, key) = pki.leaf("gw", &Leaf::new("gw").dns("gw.test").spiffe(GATEWAY_ID));
    let up = Upstream::start("up").await;
    let tls = format!(
        "      certificates: [{{cert: {}, key: {}}}]",
        p(&cert),
        p(&key)
    );
    let (proxy, _) = start_proxy(&config(&tls, up.addr, ""));
    let addr = proxy.listener_addr("edge").unwrap();
    for (version, want) in [
        (&TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        for (alpn, http) in [
            ("h2", http::Version::HTTP_2),
            ("http/1.1", http::Version::HTTP_11),
        ] {
            let cfg = client_config(&pki.bundle(), None, &[alpn], &[version]);
            let s = connect(addr, "gw.test", cfg).await.unwrap();
            assert_eq!(s.get_ref().1.protocol_version(), Some(want));
            assert_eq!(s.get_ref().1.alpn_protocol(), Some(alpn.as_bytes()));
            let r = get_over(s, "/hello", &[]).await.unwrap();
            assert_eq!(r.status, 200, "{alpn} over {want:?}");
            assert_eq!(r.version, http);
            let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
            // No client certificate, so no XFCC.
            assert!(echo["headers"].get("x-forwarded-client-cert").is_none());
        }
    }
    // Without ALPN, an `auto` listener still tells HTTP/1.1 by sniffing.
    let cfg = client_config(&pki.bundle(), None, &[], &[&TLS13]);
    let r = get_over(connect(addr, "gw.test", cfg).await.unwrap(), "/x", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let m = metrics(&proxy).await;
    assert_eq!(
        m["membrane_tls_handshakes_total{listener=\"edge\",outcome=\"full\"}"],
        5.0
    );
    let expiry = m
        .iter()
        .find(|(k, _)| {
            k.starts_with("membrane_tls_certificate_expiry_seconds{owner=\"listener/edge\"")
        })
        .map(|(_, v)| *v)
        .expect("expiry gauge for the listener's certificate");
    assert!(
        expiry > 80.0 * 86_400.0 && expiry <= 90.0 * 86_400.0,
        "{expiry}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_resumption_works() {
    let dir = tmp("sni");
    let pki = Pki::new(&dir);
    let (c1, k1) = pki.leaf("default", &Leaf::new("default").dns("default.test"));
    let (c2, k2) = pki.leaf("api", &Leaf::new("api").dns("api.test"));
    let (c3, k3) = pki.leaf("wild", &Leaf::new("wild").dns("*.apps.test"));
    let up = Upstream::start("up").await;
    let tls = format!(
        "      certificates:\n        - {{cert: {}, key: {}}}\n        - {{cert: {}, key: {}}}\n        - {{cert: {}, key: {}}}",
        p(&c1),
        p(&k1),
        p(&c2),
        p(&k2),
        p(&c3),
        p(&k3)
    );
    let (proxy, _) = start_proxy(&config(&tls, up.addr, ""));
    let addr = proxy.listener_addr("edge").unwrap();
    let cfg = client_config(&pki.bundle(), None, &["http/1.1"], &[&TLS13, &TLS12]);
    for (sni, want) in [
        ("api.test", "api.test"),
        ("one.apps.test", "*.apps.test"),
        ("default.test", "default.test"),
    ] {
        let s = connect(addr, sni, cfg.clone()).await.unwrap();
        let leaf = &s.get_ref().1.peer_certificates().unwrap()[0];
        assert_eq!(
            CertInfo::parse(leaf).unwrap().dns_names,
            vec![want.to_owned()],
            "{sni}"
        );
    }
    // An unknown name gets the first certificate (the client then refuses it: not its name).
    assert!(connect(addr, "other.test", cfg.clone()).await.is_err());

    // The client config keeps session tickets: the next handshake resumes.
    for _ in 0..2 {
        let s = connect(addr, "api.test", cfg.clone()).await.unwrap();
        let _ = get_over(s, "/", &[]).await.unwrap();
    }
    let m = metrics(&proxy).await;
    assert!(
        m["membrane_tls_handshakes_total{listener=\"edge\",outcome=\"resumed\"}"] >= 1.0,
        "{m:?}"
    );
    let proxy = &proxy;
    eventually(
        "the refused name is counted",
        Duration::from_secs(5),
        || async move {
            let m = metrics(proxy).await;
            failures(&m, "bad_san") + failures(&m, "peer_alert") == 1.0
        },
    )
    .await;
    proxy.shutdown().await;
}

/// Connects with `client` (or none) and tries one request: Ok when the server served it.
async fn attempt(
    addr: SocketAddr,
    pki: &Pki,
    client: Option<(&Path, &Path)>,
    headers: &[(&str, &str)],
) -> Result<membrane_proxy::testing::tls::TlsReply, String> {
    let cfg = client_config(&pki.bundle(), client, &["http/1.1"], &[&TLS13, &TLS12]);
    let s = connect(addr, "gw.test", cfg)
        .await
        .map_err(|e| e.to_string())?;
    get_over(s, "/who", headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_require_listener_refuses_each_bad_client_certificate_for_its_reason() {
    let dir = tmp("require");
    let pki = Pki::new(&dir);
    let (cert, key) = pki.leaf("gw", &Leaf::new("gw").dns("gw.test").spiffe(GATEWAY_ID));
    let up = Upstream::start("up").await;
    let tls = format!(
        "      certificates: [{{cert: {}, key: {}}}]\n      client_auth: require\n      trust_bundle: {}\n      trust_domains: [acme.internal]",
        p(&cert),
        p(&key),
        p(&pki.bundle())
    );
    let (proxy, _) = start_proxy(&config(&tls, up.addr, ""));
    let addr = proxy.listener_addr("edge").unwrap();

    // The good client: issued by the intermediate, sending its chain; a forged XFCC is
    // replaced with the real one.
    let good = pki.leaf_via_intermediate("good", &Leaf::new("billing").spiffe(CALLER_ID), true);
    let r = within(
        "the good client's request",
        attempt(
            addr,
            &pki,
            Some((&good.0, &good.1)),
            &[(
                "x-forwarded-client-cert",
                "URI=spiffe://acme.internal/forged",
            )],
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let xfcc = echo["headers"]["x-forwarded-client-cert"].as_str().unwrap();
    assert!(
        xfcc.starts_with(&format!("By={GATEWAY_ID};Hash=")),
        "{xfcc}"
    );
    assert!(xfcc.ends_with(&format!(";URI={CALLER_ID}")), "{xfcc}");
    let hash = xfcc.split(';').nth(1).unwrap().trim_start_matches("Hash=");
    assert_eq!(hash.len(), 64, "hex SHA-256: {xfcc}");

    let other_root = DevCa::new("stranger", Duration::from_secs(86_400)).unwrap();
    let stranger = pki.write(
        "stranger",
        &other_root.issue(&Leaf::new("x").spiffe(CALLER_ID)).unwrap(),
        None,
    );
    let mut expired = Leaf::new("old").spiffe(CALLER_ID);
    expired.not_before_secs = -10 * 86_400;
    expired.not_after_secs = -86_400;
    let mut early = Leaf::new("early").spiffe(CALLER_ID);
    early.not_before_secs = 86_400;
    early.not_after_secs = 10 * 86_400;
    let mut server_only = Leaf::new("server-only").spiffe(CALLER_ID);
    server_only.client_auth = false;
    let cases: Vec<(&str, Option<(PathBuf, PathBuf)>)> = vec![
        ("no_client_cert", None),
        ("unknown_ca", Some(stranger)),
        ("expired", Some(pki.leaf("expired", &expired))),
        ("not_yet_valid", Some(pki.leaf("early", &early))),
        ("bad_usage", Some(pki.leaf("server-only", &server_only))),
        (
            "bad_san",
            Some(pki.leaf(
                "evil",
                &Leaf::new("evil").spiffe("spiffe://evil.internal/cell/x"),
            )),
        ),
        (
            "bad_san",
            Some(pki.leaf("no-id", &Leaf::new("no-id").dns("client.test"))),
        ),
        (
            "unknown_ca",
            Some(pki.leaf_via_intermediate("chainless", &Leaf::new("c").spiffe(CALLER_ID), false)),
        ),
    ];
    for (reason, client) in &cases {
        let before = failures(&within("metrics", metrics(&proxy)).await, reason);
        // Bounded: about one run in fifty, the test's own client (rustls + hyper's
        // HTTP/1.1 connection) never returned after the proxy refused the certificate and
        // closed, with no socket left open on either side; an attempt without an answer
        // is an attempt not served, and the counter below says the proxy refused it.
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            attempt(
                addr,
                &pki,
                client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                &[],
            ),
        )
        .await
        .unwrap_or_else(|_| Err("no answer within 5 s".to_owned()));
        assert!(got.is_err(), "{reason}: the request was served");
        // The server counts the failure when its accept returns, which can be just after
        // the client saw the connection end.
        let proxy = &proxy;
        eventually(
            &format!("{reason} counted"),
            Duration::from_secs(5),
            || async move { failures(&metrics(proxy).await, reason) >= before + 1.0 },
        )
        .await;
        assert_eq!(
            failures(&metrics(proxy).await, reason),
            before + 1.0,
            "{reason} counted once"
        );
    }
    assert_eq!(up.served(), 1, "only the good client reached the upstream");
    let m = within("metrics", metrics(&proxy)).await;
    assert_eq!(
        m["membrane_tls_handshakes_total{listener=\"edge\",outcome=\"failed\"}"],
        cases.len() as f64
    );
    assert_eq!(
        m["membrane_tls_peer_connections_total{listener=\"edge\",peer_cell=\"billing\"}"],
        1.0
    );
    within("the shutdown", proxy.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_listener_serves_without_a_certificate_and_strips_forged_xfcc() {
    let dir = tmp("optional");
    let pki = Pki::new(&dir);
    let (cert, key) = pki.leaf("gw", &Leaf::new("gw").dns("gw.test"));
    let up = Upstream::start("up").await;
    let tls = format!(
        "      certificates: [{{cert: {}, key: {}}}]\n      client_auth: optional\n      trust_bundle: {}",
        p(&cert),
        p(&key),
        p(&pki.bundle())
    );
    let (proxy, _) = start_proxy(&config(&tls, up.addr, ""));
    let addr = proxy.listener_addr("edge").unwrap();
    let r = attempt(
        addr,
        &pki,
        None,
        &[("x-forwarded-client-cert", "URI=spiffe://x/forged")],
    )
    .await
    .unwrap();
    let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        echo["headers"].get("x-forwarded-client-cert").is_none(),
        "{echo}"
    );
    // With a certificate (no SPIFFE ID): Hash only, no By (the listener has no ID either).
    let client = pki.leaf("c", &Leaf::new("c").dns("c.test"));
    let r = attempt(addr, &pki, Some((&client.0, &client.1)), &[])
        .await
        .unwrap();
    let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let xfcc = echo["headers"]["x-forwarded-client-cert"].as_str().unwrap();
    assert!(
        xfcc.starts_with("Hash=") && !xfcc.contains("URI="),
        "{xfcc}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_origination_verifies_the_spiffe_id_and_presents_a_client_certificate() {
    let dir = tmp("origination");
    let pki = Pki::new(&dir);
    let upstream_id = "spiffe://acme.internal/org/acme/env/dev/cell/inventory";
    let (ucert, ukey) = pki.leaf(
        "up",
        &Leaf::new("up").dns("inventory.test").spiffe(upstream_id),
    );
    // The upstream demands a client certificate from the proxy.
    let up = TlsUpstream::start("inventory", &ucert, &ukey, Some(&pki.bundle())).await;
    let (gcert, gkey) = pki.leaf("gw", &Leaf::new("gw").dns("gw.test").spiffe(GATEWAY_ID));
    let listener = format!(
        "      certificates: [{{cert: {}, key: {}}}]\n      client_auth: require\n      trust_bundle: {}",
        p(&gcert),
        p(&gkey),
        p(&pki.bundle())
    );
    let cluster = |verify: &str, protocol: &str| {
        format!(
            "    protocol: {protocol}\n    tls:\n      sni: inventory.test\n      trust_bundle: {}\n      verify: {verify}\n      client_certificate: {{cert: {}, key: {}}}\n",
            p(&pki.bundle()),
            p(&gcert),
            p(&gkey)
        )
    };
    let caller = pki.leaf("caller", &Leaf::new("caller").spiffe(CALLER_ID));
    for protocol in ["http1", "http2"] {
        let right = config(
            &listener,
            up.addr,
            &cluster(&format!("{{spiffe_id: '{upstream_id}'}}"), protocol),
        );
        let (proxy, path) = start_proxy(&right);
        let addr = proxy.listener_addr("edge").unwrap();
        for _ in 0..3 {
            let r = attempt(addr, &pki, Some((&caller.0, &caller.1)), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{protocol}: {:?}", r.body);
            let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(echo["upstream"], "inventory");
            let xfcc = echo["headers"]["x-forwarded-client-cert"].as_str().unwrap();
            assert!(xfcc.ends_with(&format!("URI={CALLER_ID}")), "{xfcc}");
        }

        // The same upstream checked for another ID: 502 naming both.
        let wrong_id = "spiffe://acme.internal/org/acme/env/dev/cell/payments";
        let wrong = right.replace(upstream_id, wrong_id);
        std::fs::write(&path, wrong).unwrap();
        proxy.reload().await.unwrap();
        let r = attempt(addr, &pki, Some((&caller.0, &caller.1)), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 502);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "upstream_tls_failed");
        // The client learns the kind of failure, not the identities involved (those are
        // in the proxy's log).
        let msg = body["message"].as_str().unwrap();
        assert_eq!(msg, "the TLS handshake with the upstream failed");

        // A trust domain check passes; another trust domain does not.
        let domain = right.replace(
            &format!("{{spiffe_id: '{upstream_id}'}}"),
            "{trust_domain: acme.internal}",
        );
        std::fs::write(&path, &domain).unwrap();
        proxy.reload().await.unwrap();
        let r = attempt(addr, &pki, Some((&caller.0, &caller.1)), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        std::fs::write(
            &path,
            domain.replace(
                "{trust_domain: acme.internal}",
                "{trust_domain: other.internal}",
            ),
        )
        .unwrap();
        proxy.reload().await.unwrap();
        let r = attempt(addr, &pki, Some((&caller.0, &caller.1)), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 502);
        let m = metrics(&proxy).await;
        assert!(m["membrane_upstream_connect_failures_total{cluster=\"c\",reason=\"tls\"}"] >= 2.0);
        proxy.shutdown().await;
    }
    assert_eq!(
        up.served(),
        8,
        "3 + 1 requests per protocol reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_file_is_refused_with_its_position_and_the_old_one_keeps_serving() {
    let dir = tmp("badfile");
    let pki = Pki::new(&dir);
    let (cert, key) = pki.leaf("gw", &Leaf::new("gw").dns("gw.test"));
    let up = Upstream::start("up").await;
    let tls = format!(
        "      certificates: [{{cert: {}, key: {}}}]",
        p(&cert),
        p(&key)
    );
    let good = config(&tls, up.addr, "");
    let (proxy, path) = start_proxy(&good);
    let addr = proxy.listener_addr("edge").unwrap();
    assert_eq!(attempt(addr, &pki, None, &[]).await.unwrap().status, 200);

    // A key that belongs to another certificate.
    let (_, other_key) = pki.leaf("other", &Leaf::new("other").dns("other.test"));
    std::fs::write(&path, good.replace(&p(&key), &p(&other_key))).unwrap();
    let err = proxy.reload().await.unwrap_err().to_string();
    assert!(err.contains("membrane.yaml:7:"), "file and line: {err}");
    assert!(
        err.contains("listeners[0].tls.certificates[0].key"),
        "field: {err}"
    );
    assert!(
        err.contains("does not fit the certificate"),
        "what is wrong: {err}"
    );

    // A certificate file that is not PEM.
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    std::fs::write(&path, good.replace(&p(&cert), &p(&junk))).unwrap();
    let err = proxy.reload().await.unwrap_err().to_string();
    assert!(
        err.contains("listeners[0].tls.certificates[0].cert"),
        "{err}"
    );
    assert!(err.contains("junk.pem"), "{err}");

    // A SPIFFE trust domain that cannot be one.
    let bad_domain = good.replace(
        &tls,
        &format!("{tls}\n      client_auth: require\n      trust_bundle: {}\n      trust_domains: [Acme.Internal]", p(&pki.bundle())),
    );
    std::fs::write(&path, bad_domain).unwrap();
    let err = proxy.reload().await.unwrap_err().to_string();
    assert!(err.contains("listeners[0].tls.trust_domains[0]"), "{err}");

    assert_eq!(attempt(addr, &pki, None, &[]).await.unwrap().status, 200);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_used_at_once_and_no_request_is_lost() {
    let dir = tmp("rotation");
    let pki = Pki::new(&dir);
    let (cert, key) = pki.leaf("gw", &Leaf::new("gw").dns("gw.test").spiffe(GATEWAY_ID));
    let up = Upstream::start("up").await;
    let tls = format!(
        "      certificates: [{{cert: {}, key: {}}}]",
        p(&cert),
        p(&key)
    );
    let path = membrane_proxy::testing::write_config(&config(&tls, up.addr, ""));
    // With the file watch on: rotation is picked up from the files alone.
    let proxy = membrane_proxy::start(membrane_proxy::StartOptions::file(path, true)).unwrap();
    let addr = proxy.listener_addr("edge").unwrap();
    let serial_of = |s: &membrane_proxy::testing::tls::ClientStream| {
        s.get_ref().1.peer_certificates().unwrap()[0]
            .as_ref()
            .to_vec()
    };
    let cfg = client_config(&pki.bundle(), None, &["http/1.1"], &[&TLS13]);
    let first = connect(addr, "gw.test", cfg.clone()).await.unwrap();
    let old_der = serial_of(&first);

    // Load: new connections (full handshakes) in a loop, bounded in count and time.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, bundle) = (stop.clone(), ok.clone(), failed.clone(), pki.bundle());
        tasks.push(tokio::spawn(async move {
            // Each task makes its own config: no session cache shared, every handshake full.
            for _ in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let cfg = client_config(&bundle, None, &["http/1.1"], &[&TLS13]);
                let r = match connect(addr, "gw.test", cfg).await {
                    Ok(s) => get_over(s, "/load", &[]).await,
                    Err(e) => Err(e.to_string()),
                };
                match r {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // The load is running before the rotation...
    let ok_ref = &ok;
    eventually(
        "handshakes before the rotation",
        Duration::from_secs(20),
        || async move { ok_ref.load(Ordering::Relaxed) >= 10 },
    )
    .await;
    let rotated = pki
        .root
        .issue(&Leaf::new("gw2").dns("gw.test").spiffe(GATEWAY_ID))
        .unwrap();
    // Key first, then certificate, each by rename: the watcher may reload in between and
    // find a mismatched pair, which is refused while the old pair keeps serving.
    write_atomically(&key, rotated.key_pem.as_bytes());
    write_atomically(&cert, rotated.cert_pem.as_bytes());
    let bundle = pki.bundle();
    eventually(
        "new handshakes to present the rotated certificate",
        Duration::from_secs(10),
        || {
            let old = old_der.clone();
            let bundle = bundle.clone();
            async move {
                match connect(
                    addr,
                    "gw.test",
                    client_config(&bundle, None, &[], &[&TLS13]),
                )
                .await
                {
                    Ok(s) => {
                        s.get_ref().1.peer_certificates().unwrap()[0].as_ref() != old.as_slice()
                    }
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    // ...and goes on after it.
    let after = ok.load(Ordering::Relaxed) + 10;
    eventually(
        "handshakes after the rotation",
        Duration::from_secs(20),
        || async move { ok_ref.load(Ordering::Relaxed) >= after },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    // The connection made before the rotation still works.
    let r = get_over(first, "/after", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        ok.load(Ordering::Relaxed) >= 20,
        "the load ran: {}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request lost");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_at_the_handshake_timeout_and_upgrades_work_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tmp("timeout");
    let pki = Pki::new(&dir);
    let (cert, key) = pki.leaf("gw", &Leaf::new("gw").dns("gw.test"));
    let up = Upstream::start("up").await;
    let tls = format!(
        "      certificates: [{{cert: {}, key: {}}}]\n      handshake_timeout: 200ms",
        p(&cert),
        p(&key)
    );
    let (proxy, _) = start_proxy(&config(&tls, up.addr, ""));
    let addr = proxy.listener_addr("edge").unwrap();

    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed by the proxy, not by the test's timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "the proxy closed the connection");
    // Counted when the handshake's future ends, which can be just after the client saw
    // the connection close.
    let proxy_ref = &proxy;
    eventually(
        "the timeout counted",
        Duration::from_secs(5),
        || async move { failures(&metrics(proxy_ref).await, "timeout") >= 1.0 },
    )
    .await;
    assert_eq!(failures(&metrics(&proxy).await, "timeout"), 1.0);

    // A protocol switch through a TLS listener: the tunnel carries bytes both ways.
    let cfg = client_config(&pki.bundle(), None, &["http/1.1"], &[&TLS13]);
    let mut s = connect(addr, "gw.test", cfg).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping over tls").await.unwrap();
    let mut echo = [0u8; 13];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping over tls");
    drop(s);
    proxy.shutdown().await;
}

/// A connection the proxy ends after a complete answer (the client asked to close, or sent
/// a request the proxy answers and closes) ends with a TLS close_notify, so the client can
/// tell a complete close-delimited body from a cut one; OpenSSL clients also drop the
/// session of a connection that ended without it, and could not resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_proxy_closes_ends_with_close_notify() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tmp("close-notify");
    let pki = Pki::new(&dir);
    let (cert, key) = pki.leaf("gw", &Leaf::new("gw").dns("gw.test"));
    let up = Upstream::start("up").await;
    let tls = format!(
        "      certificates: [{{cert: {}, key: {}}}]",
        p(&cert),
        p(&key)
    );
    let (proxy, _) = start_proxy(&config(&tls, up.addr, ""));
    let addr = proxy.listener_addr("edge").unwrap();
    let cfg = client_config(&pki.bundle(), None, &["http/1.1"], &[&TLS13, &TLS12]);
    for request in [
        "GET / HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n",
        "GET / HTTP/1.0\r\nhost: gw.test\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
    ] {
        let mut s = connect(addr, "gw.test", cfg.clone()).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        // Without a close_notify, rustls reports the TCP close as an unexpected EOF.
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
            .await
            .expect("the proxy closes the connection");
        let text = String::from_utf8_lossy(&got);
        assert!(read.is_ok(), "{request:?}: {read:?} after {text}");
        assert!(text.starts_with("HTTP/1."), "{request:?}: {text}");
    }
    proxy.shutdown().await;
}
