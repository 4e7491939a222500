//! The control server as a CA, measured (issue 12):
//!
//! 1. Certificate requests signed per CPU-second: `Authority::sign_request` (parse the CSR,
//!    check its signature and identity, build and sign the leaf, check it as an SVID) on
//!    one thread, CPU time from /proc/self/stat.
//! 2. 1,000 gateways renewing at once: the control server in-process on loopback (two
//!    runtime threads), 1,000 renewals started together, each its own mTLS connection with
//!    an orders certificate and a request made beforehand; the time from the start to the
//!    last certificate.
//!
//! `cargo bench --bench issuance`; bounded by its counts (GATEWAYS, SIGNS).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use membrane_api::proto::membrane::ca::v1 as pb;
use membrane_identity::authority::Authority;
use membrane_identity::channel::{Rotating, certified_key};
use membrane_identity::verify::Expect;
use membrane_policy::identity::SpiffeId;
use membrane_proxy::tls::devca::DevCa;
use membrane_proxy::xds_client::channel::{CONTROL_PATH, Security, connect};
use membrane_xds::ca::TokenStore;
use membrane_xds::control::{self, CaOptions, ControlOptions};
use std::time::{Duration, Instant};

const ORDERS: &str = "spiffe://acme.internal/org/acme/env/dev/cell/orders";

/// User + system CPU of this process, from /proc/self/stat (clock ticks of 1/100 s, the
/// Linux default USER_HZ).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of the file are the 12th and 13th after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let _ = membrane_identity::provider();
    let signs: usize = std::env::var("SIGNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let gateways: usize = std::env::var("GATEWAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = std::env::temp_dir().join(format!("membrane-bench-issuance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ca_dir, spec) = (dir.join("ca"), dir.join("spec"));
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::create_dir_all(&spec).unwrap();
    let ca = DevCa::new("bench CA", Duration::from_secs(86_400)).unwrap();
    std::fs::write(ca_dir.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(ca_dir.join("ca-key.pem"), ca.key_pem()).unwrap();
    std::fs::write(
        spec.join("orders.yaml"),
        "kind: Cell\nname: orders\norg: acme\nproject: orders\nenvironment: dev\ngateway:\n  east: {address: '127.0.0.1:9'}\n",
    )
    .unwrap();

    // 1. Signing alone.
    let authority = Authority::load(&ca_dir, Duration::from_secs(86_400)).unwrap();
    let id = SpiffeId::parse(ORDERS).unwrap();
    let csrs: Vec<String> = (0..signs)
        .map(|_| membrane_identity::csr::request(&id).unwrap().csr_pem)
        .collect();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    for csr in &csrs {
        authority.sign_request(csr, &id, &[]).unwrap();
    }
    let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    println!(
        "RESULT csr_signed_per_cpu_second {:.0}  ({signs} signed in {wall:.2} s wall, {cpu:.2} s CPU)",
        signs as f64 / cpu.max(0.01)
    );

    // 2. Renewals at once, over mTLS to a control server.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pki = dir.join("pki");
    rt.block_on(async move {
        let ctl = control::start(ControlOptions {
            spec_dir: spec.clone(),
            store: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: None,
            cert_dir: pki,
            trust_bundle_pem: ca.cert_pem().to_owned(),
            debounce: Duration::from_millis(50),
            ca: Some(CaOptions {
                dir: ca_dir.clone(),
                lifetime: Duration::from_secs(86_400),
            }),
            otlp_endpoint: None,
            api: None,
            audit_log: None,
        })
        .await
        .unwrap();
        let url = format!("https://{}", ctl.addr);
        let security = Security::Tls {
            bundle_pem: ca.cert_pem().to_owned(),
            expect: Expect::Path(CONTROL_PATH.to_owned()),
        };
        // One orders certificate from a token, shown by every renewing gateway.
        let token = TokenStore::new(&ca_dir).mint("orders", Duration::from_secs(60)).unwrap();
        let first = membrane_identity::csr::request(&id).unwrap();
        let mut c = pb::certificate_service_client::CertificateServiceClient::new(
            connect(&url, &security, None).await.unwrap(),
        );
        let got = c
            .create_certificate(pb::CreateCertificateRequest {
                csr: first.csr_pem,
                node: "orders/gw-0".into(),
                join_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        let own = Rotating::new(certified_key(&got.cert_chain.concat(), &first.key_pem).unwrap());
        let requests: Vec<String> = (0..gateways)
            .map(|_| membrane_identity::csr::request(&id).unwrap().csr_pem)
            .collect();
        let t0 = Instant::now();
        let tasks: Vec<_> = requests
            .into_iter()
            .enumerate()
            .map(|(i, csr)| {
                let (url, security, own) = (url.clone(), security.clone(), own.clone());
                tokio::spawn(async move {
                    let ch = connect(&url, &security, Some(own))
                        .await
                        .map_err(|e| e.detail())?;
                    pb::certificate_service_client::CertificateServiceClient::new(ch)
                        .create_certificate(pb::CreateCertificateRequest {
                            csr,
                            node: format!("orders/gw-{}", i + 1),
                            join_token: String::new(),
                        })
                        .await
                        .map_err(|s| s.to_string())
                })
            })
            .collect();
        let mut ok = 0;
        let mut first_error = None;
        for t in tasks {
            match t.await {
                Ok(Ok(_)) => ok += 1,
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(e) => first_error = first_error.or(Some(e.to_string())),
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        println!(
            "RESULT renew_1000_at_once_seconds {wall:.2}  ({ok} of {gateways} renewed, each a new mTLS connection)"
        );
        if let Some(e) = first_error {
            println!("first failure: {e}");
        }
        ctl.shutdown();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
