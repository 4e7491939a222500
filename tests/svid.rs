//! X.509-SVID rules (spiffe/spiffe `standards/X509-SVID.md`), each with its own crafted
//! certificate, over real handshakes on 127.0.0.1: a client certificate that breaks a rule
//! is refused at the listener (counted as `not_svid`), an upstream's is refused by the
//! gateway originating mTLS (502 `upstream_tls_failed`); a valid SVID passes both ways.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use membrane_proxy::testing::start_proxy;
use membrane_proxy::testing::tls::{Pki, TlsUpstream, client_config, connect, get_over};
use membrane_proxy::tls::devca::LeafSpec;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType,
};
use rustls::version::TLS13;
use std::path::{Path, PathBuf};

const ID: &str = "spiffe://acme.internal/org/acme/env/dev/cell/billing";

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("membrane-svid-{}-{name}", std::process::id()))
}

/// A leaf as a careful issuer makes it: CN, one SPIFFE ID, critical key usage with
/// digitalSignature, both EKUs. Each case changes one thing.
fn base() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "leaf");
    p.subject_alt_names = vec![
        SanType::URI(ID.try_into().unwrap()),
        SanType::DnsName("localhost".try_into().unwrap()),
    ];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p
}

/// A SAN extension with one URI, DER-encoded by hand, for the cases rcgen will not make.
fn san_extension(uri: &str, critical: bool) -> CustomExtension {
    let mut gn = vec![0x86, u8::try_from(uri.len()).unwrap()];
    gn.extend_from_slice(uri.as_bytes());
    let mut seq = vec![0x30, u8::try_from(gn.len()).unwrap()];
    seq.extend(gn);
    let mut e = CustomExtension::from_oid_content(&[2, 5, 29, 17], seq);
    e.set_criticality(critical);
    e
}

/// Every rule of the standard's leaf sections, as a certificate that breaks it.
fn broken() -> Vec<(&'static str, CertificateParams)> {
    let mut cases = Vec::new();
    let mut p = base();
    p.subject_alt_names = vec![SanType::URI("spiffe://acme.internal".try_into().unwrap())];
    cases.push(("§3.1 a SPIFFE ID with no path", p));
    let mut p = base();
    p.subject_alt_names = vec![SanType::URI("spiffe://acme.internal/".try_into().unwrap())];
    cases.push(("§3.1 a SPIFFE ID with the root path", p));
    let mut p = base();
    p.subject_alt_names.push(SanType::URI(
        "spiffe://acme.internal/org/acme/env/dev/cell/orders"
            .try_into()
            .unwrap(),
    ));
    cases.push(("§2 two URI SANs", p));
    let mut p = base();
    p.subject_alt_names = vec![SanType::URI(
        "https://acme.internal/billing".try_into().unwrap(),
    )];
    cases.push(("§2 a URI SAN that is not a SPIFFE ID", p));
    let mut p = base();
    p.key_usages.push(KeyUsagePurpose::KeyCertSign);
    cases.push(("§4.3 keyCertSign on a leaf", p));
    let mut p = base();
    p.key_usages.push(KeyUsagePurpose::CrlSign);
    cases.push(("§4.3 cRLSign on a leaf", p));
    let mut p = base();
    p.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    cases.push(("§4.3 an ECDSA leaf without digitalSignature", p));
    let mut p = base();
    p.key_usages = Vec::new();
    cases.push(("§4.3 no key usage extension", p));
    let mut p = base();
    p.key_usages = Vec::new();
    // keyUsage = digitalSignature (BIT STRING, 7 unused bits, 0x80), not marked critical.
    let mut ku = CustomExtension::from_oid_content(&[2, 5, 29, 15], vec![0x03, 0x02, 0x07, 0x80]);
    ku.set_criticality(false);
    p.custom_extensions = vec![ku];
    cases.push(("§4.3 a key usage extension not marked critical", p));
    let mut p = base();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    cases.push((
        "§4.4 an extended key usage without serverAuth and clientAuth",
        p,
    ));
    let mut p = base();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    cases.push(("§4.1 a leaf that is a CA", p));
    let mut p = base();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.subject_alt_names = Vec::new();
    p.custom_extensions = vec![san_extension(ID, false)];
    cases.push(("§3.1 an empty subject with a non-critical SAN", p));
    cases
}

fn write(pki: &Pki, name: &str, params: CertificateParams) -> (PathBuf, PathBuf) {
    let issued = pki.root.issue_with(params).unwrap();
    pki.write(name, &issued, None)
}

fn listener_config(
    pki: &Pki,
    gw: &(PathBuf, PathBuf),
    upstream: std::net::SocketAddr,
    trust_domains: &str,
) -> String {
    format!(
        "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{{cert: '{}', key: '{}'}}]\n      client_auth: require\n      trust_bundle: '{}'\n{trust_domains}    virtual_hosts:\n      - name: v\n        domains: ['*']\n        routes: [{{name: all, forward: {{cluster: c}}}}]\nclusters: [{{name: c, endpoints: ['{upstream}']}}]\n",
        gw.0.display(),
        gw.1.display(),
        pki.bundle().display()
    )
}

async fn attempt(
    addr: std::net::SocketAddr,
    pki: &Pki,
    client: &(PathBuf, PathBuf),
) -> Result<u16, String> {
    let cfg = client_config(
        &pki.bundle(),
        Some((client.0.as_path(), client.1.as_path())),
        &["http/1.1"],
        &[&TLS13],
    );
    let s = connect(addr, "gw.test", cfg)
        .await
        .map_err(|e| e.to_string())?;
    get_over(s, "/", &[]).await.map(|r| r.status.as_u16())
}

async fn reason_count(proxy: &membrane_proxy::ProxyHandle, reason: &str) -> f64 {
    let url = format!("http://{}/metrics", proxy.admin_addr());
    let m = parse_metrics(&get(&client_h1(), &url, "admin", &[]).await.text());
    m.get(&format!(
        "membrane_tls_handshake_failures_total{{listener=\"edge\",reason=\"{reason}\"}}"
    ))
    .copied()
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_that_breaks_an_svid_rule_is_refused() {
    let dir = tmp("client");
    let pki = Pki::new(&dir);
    let gw = pki.leaf("gw", &LeafSpec::new("gw").dns("gw.test"));
    let up = membrane_proxy::testing::Upstream::start("up").await;
    // With trust domains, and without: a certificate that claims a SPIFFE ID is held to
    // the standard either way.
    for (label, td) in [
        (
            "with trust domains",
            "      trust_domains: [acme.internal]\n",
        ),
        ("without", ""),
    ] {
        let (proxy, _) = start_proxy(&listener_config(&pki, &gw, up.addr, td));
        let addr = proxy.listener_addr("edge").unwrap();
        let good = write(&pki, "good", base());
        assert_eq!(
            attempt(addr, &pki, &good).await,
            Ok(200),
            "{label}: a valid SVID"
        );
        let cases = broken();
        for (i, (rule, params)) in cases.into_iter().enumerate() {
            let leaf = write(&pki, &format!("bad-{i}"), params);
            let r = attempt(addr, &pki, &leaf).await;
            assert!(r.is_err(), "{label}: {rule}: {r:?}");
        }
        // rustls' WebPKI verifier refuses two of the cases before the SVID check sees them:
        // a CA as leaf (bad_certificate) and an extended key usage without clientAuth
        // (bad_usage). Every other one is counted as not_svid.
        let n = broken().len() as f64;
        eventually(
            &format!("{label}: not_svid counted"),
            std::time::Duration::from_secs(5),
            || async { reason_count(&proxy, "not_svid").await == n - 2.0 },
        )
        .await;
        assert_eq!(reason_count(&proxy, "bad_certificate").await, 1.0);
        assert_eq!(reason_count(&proxy, "bad_usage").await, 1.0);
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_that_breaks_an_svid_rule_is_refused() {
    let dir = tmp("upstream");
    let pki = Pki::new(&dir);
    let upstream_id = "spiffe://acme.internal/org/acme/env/dev/cell/orders";
    let config = |up: std::net::SocketAddr| {
        format!(
            "admin: {{address: '127.0.0.1:0'}}\nworkers: 1\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n        routes: [{{name: all, forward: {{cluster: c}}}}]\nclusters:\n  - name: c\n    endpoints: ['{up}']\n    tls: {{sni: localhost, trust_bundle: '{}', verify: {{spiffe_id: '{upstream_id}'}}}}\n",
            pki.bundle().display()
        )
    };
    let with_id = |mut p: CertificateParams| {
        for san in &mut p.subject_alt_names {
            if let SanType::URI(_) = san {
                *san = SanType::URI(upstream_id.try_into().unwrap());
            }
        }
        p
    };
    let c = client_h1();
    // A valid SVID upstream: served.
    let good = write(&pki, "up-good", with_id(base()));
    let up = TlsUpstream::start("good", &good.0, &good.1, None).await;
    let (proxy, _) = start_proxy(&config(up.addr));
    let url = format!("http://{}/", proxy.listener_addr("edge").unwrap());
    assert_eq!(get(&c, &url, "x", &[]).await.status, 200);
    proxy.shutdown().await;
    // The same SPIFFE ID on a leaf that may sign certificates: refused.
    let mut p = with_id(base());
    p.key_usages.push(KeyUsagePurpose::KeyCertSign);
    let bad = write(&pki, "up-bad", p);
    let up = TlsUpstream::start("bad", &bad.0, &bad.1, None).await;
    let (proxy, _) = start_proxy(&config(up.addr));
    let url = format!("http://{}/", proxy.listener_addr("edge").unwrap());
    let r = get(&c, &url, "x", &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_tls_failed");
    let _ = Path::new(&dir);
}
