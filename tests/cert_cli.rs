//! `membrane cert`: the dev CA writes a root, then issues leaves that carry the SPIFFE ID
//! and DNS names asked for, chain to the root, and keep their keys private.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use membrane_proxy::tls::cert_info::CertInfo;
use membrane_proxy::tls::material;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn membrane(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cert_ca_then_issue_makes_a_usable_spiffe_certificate() {
    let dir = std::env::temp_dir().join(format!("membrane-cert-cli-{}", std::process::id()));
    let d = dir.to_str().unwrap();
    let out = membrane(&["cert", "ca", "--out", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = "spiffe://acme.internal/org/acme/env/dev/cell/orders";
    let out = membrane(&[
        "cert",
        "issue",
        "--ca",
        d,
        "--out",
        d,
        "--name",
        "orders",
        "--spiffe",
        id,
        "--dns",
        "orders.local",
        "--dns",
        "localhost",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pem = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let chain = material::certs(&dir.join("orders.pem"), &pem("orders.pem")).unwrap();
    assert_eq!(chain.len(), 2, "leaf, then the CA");
    let leaf = CertInfo::parse(&chain[0]).unwrap();
    assert_eq!(leaf.spiffe.as_ref().unwrap().as_str(), id);
    assert_eq!(leaf.dns_names, ["orders.local", "localhost"]);
    let life = leaf.not_after - leaf.not_before;
    assert!((89 * 86_400..=91 * 86_400).contains(&life), "{life}");
    // The key fits the certificate (rustls checks the pair) and is private.
    material::cert_key(
        &membrane_proxy::tls::provider(),
        &dir.join("orders.pem"),
        &pem("orders.pem"),
        &dir.join("orders-key.pem"),
        &pem("orders-key.pem"),
    )
    .unwrap();
    for key in ["orders-key.pem", "ca-key.pem"] {
        let mode = std::fs::metadata(dir.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    // Bad input: an invalid SPIFFE ID is refused with the reason, and nothing is written.
    let out = membrane(&[
        "cert",
        "issue",
        "--ca",
        d,
        "--out",
        d,
        "--name",
        "bad",
        "--spiffe",
        "spiffe://Acme/x",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trust domain"), "{err}");
    assert!(!dir.join("bad.pem").exists());
}
