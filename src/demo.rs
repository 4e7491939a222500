//! `membrane demo`: the whole product on one machine. A dev CA issues each cell's gateway
//! its SPIFFE certificate; a control server compiles `examples/cells/`; one gateway per
//! cell takes its configuration over xDS; small upstream services answer for each
//! component; a demo identity provider signs a token. Prints what runs where and curl
//! commands to try, then waits for Ctrl-C and stops everything. `--check` makes those calls
//! itself and exits 0 when each answers as expected (used by the tests).

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use membrane_identity::verify::Expect;
use membrane_policy::jwt::{Alg, Signer};
use membrane_proxy::tls::devca::{DevCa, LeafSpec};
use membrane_proxy::xds_client::channel::{CONTROL_PATH, Security};
use membrane_proxy::xds_client::{self, XdsOptions};
use membrane_xds::control::{self, ControlOptions};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const ADS: &str = "127.0.0.1:18000";
const CONTROL_ADMIN: &str = "127.0.0.1:18001";

pub struct DemoArgs {
    pub spec_dir: PathBuf,
    pub work_dir: PathBuf,
    pub check: bool,
    /// Export every trace of the demo's gateways to this OTLP/gRPC collector.
    pub otlp_endpoint: Option<String>,
}

pub fn run(args: DemoArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("membrane demo: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(demo(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("membrane demo: {e}");
            ExitCode::from(1)
        }
    }
}

struct Gateway {
    cell: String,
    handle: membrane_proxy::ProxyHandle,
}

async fn demo(args: DemoArgs) -> Result<ExitCode, String> {
    // Absolute: resources name files by path, and gateways resolve them from their state.
    let work = &std::path::absolute(&args.work_dir).map_err(|e| e.to_string())?;
    let spec = work.join("spec");
    let pki = work.join("pki");
    // Every address the demo will listen on must be free before its directory is emptied:
    // a second demo would otherwise wipe the running one's certificates and state, then
    // fail on the first busy port.
    let planned = membrane_xds::spec::load_dir(&args.spec_dir).map_err(join)?;
    if let Some(busy) = first_busy(&planned) {
        return Err(format!(
            "{busy} is in use (is another `membrane demo` running?); nothing in {} was changed",
            work.display()
        ));
    }
    let _ = std::fs::remove_dir_all(work);
    for d in [&spec, &pki] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    // The specs, with the demo identity provider's keys beside them.
    let entries = std::fs::read_dir(&args.spec_dir)
        .map_err(|e| format!("{}: {e}", args.spec_dir.display()))?;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x == "yaml" || x == "yml")
        {
            std::fs::copy(&p, spec.join(e.file_name())).map_err(|e| e.to_string())?;
        }
    }
    let idp = Signer::generate(Alg::ES256, "demo-1").map_err(|_| "cannot make a signing key")?;
    write(&spec.join("demo-jwks.json"), &idp.jwks())?;
    let specs = membrane_xds::spec::load_dir(&spec).map_err(join)?;
    let errors = membrane_xds::spec::check(&specs);
    if !errors.is_empty() {
        return Err(join(errors));
    }
    if specs.cells().next().is_none() {
        return Err(format!(
            "{} holds no Cell document",
            args.spec_dir.display()
        ));
    }

    // A dev CA and each gateway's certificate (SPIFFE ID + localhost).
    let ca = DevCa::new("Membrane demo CA", Duration::from_secs(30 * 86_400))
        .map_err(|e| e.to_string())?;
    write(&pki.join("ca.pem"), ca.cert_pem())?;
    let mut cells = Vec::new();
    let mut upstreams = Vec::new();
    for (_, cell) in specs.cells() {
        let name = cell.name.value().clone();
        let issued = ca
            .issue(
                &LeafSpec::new(&name)
                    .spiffe(&cell.spiffe_id())
                    .dns("localhost")
                    .dns(&format!("{name}.{}", cell.trust_domain())),
            )
            .map_err(|e| e.to_string())?;
        write(&pki.join(format!("{name}.pem")), &issued.cert_pem)?;
        crate::files::write_private(&pki.join(format!("{name}-key.pem")), &issued.key_pem)?;
        for comp in &cell.components {
            for ep in &comp.endpoints {
                for up in &ep.upstreams {
                    upstreams.push((format!("{name}/{}", ep.name.value()), *up.value()));
                }
            }
        }
        cells.push(cell.clone());
    }
    for (label, addr) in &upstreams {
        serve_upstream(label.clone(), *addr).await?;
    }

    // The control server is the cells' CA: the same dev CA, its key in a directory of its
    // own with the join tokens.
    let ca_dir = work.join("ca");
    std::fs::create_dir_all(&ca_dir).map_err(|e| format!("{}: {e}", ca_dir.display()))?;
    write(&ca_dir.join("ca.pem"), ca.cert_pem())?;
    crate::files::write_private(&ca_dir.join("ca-key.pem"), &ca.key_pem())?;
    let control = control::start(ControlOptions {
        spec_dir: spec.clone(),
        store: None,
        listen: parse(ADS),
        admin: Some(parse(CONTROL_ADMIN)),
        cert_dir: pki.clone(),
        trust_bundle_pem: ca.cert_pem().to_owned(),
        debounce: Duration::from_millis(200),
        ca: Some(control::CaOptions {
            dir: ca_dir.clone(),
            lifetime: Duration::from_secs(24 * 3600),
        }),
        otlp_endpoint: args.otlp_endpoint.clone(),
        api: None,
        audit_log: None,
    })
    .await
    .map_err(|e| e.to_string())?;
    let tokens = membrane_xds::ca::TokenStore::new(&ca_dir);
    let mut gateways = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        let name = cell.name.value().clone();
        // Each gateway joins with a token and uses the certificate it is issued.
        let token = tokens
            .mint(&name, Duration::from_secs(600))
            .map_err(|e| e.to_string())?;
        let handle = xds_client::start(XdsOptions {
            url: format!("https://{ADS}"),
            also: Vec::new(),
            node: format!("{name}/gw-1"),
            state_dir: work.join(format!("state-{name}")),
            admin: parse(&format!("127.0.0.1:{}", 15001 + i)),
            security: Security::Tls {
                bundle_pem: ca.cert_pem().to_owned(),
                expect: Expect::Path(CONTROL_PATH.to_owned()),
            },
            join_token: Some(token),
            tracing: args
                .otlp_endpoint
                .clone()
                .map(|e| membrane_proxy::config::TracingConfig::new(e, 1.0, Some(name.clone()))),
            locality: None,
        })
        .map_err(|e| format!("gateway {name}: {e}"))?;
        gateways.push(Gateway { cell: name, handle });
    }
    for g in &gateways {
        wait_ready(g.handle.admin_addr()).await?;
    }

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let token = idp.sign(
        &json!({"iss": "https://idp.acme.example", "aud": "acme-public",
                                 "sub": "demo-user", "scope": "catalog.read", "exp": exp}),
    );
    let ca_file = pki.join("ca.pem");
    println!("Membrane demo is running.\n");
    println!(
        "  control server   ADS {ADS} (delta and state of the world), admin http://{CONTROL_ADMIN}/nodes"
    );
    for (g, cell) in gateways.iter().zip(&cells) {
        let l = |o: &Option<membrane_xds::spec::GatewayListener>| {
            o.as_ref()
                .map(|l| l.address.value().to_string())
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "  gateway {:<9} north {:<16} west {:<16} east {:<16} admin http://{}",
            g.cell,
            l(&cell.gateway.north),
            l(&cell.gateway.west),
            l(&cell.gateway.east),
            g.handle.admin_addr()
        );
    }
    println!(
        "  upstreams        {}",
        upstreams
            .iter()
            .map(|(l, a)| format!("{l}={a}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("  specs, certificates, state: {}\n", work.display());
    println!("Try:");
    println!("  # public call (north) with the demo token: 200");
    println!(
        "  curl --cacert {} -H 'Authorization: Bearer {token}' https://localhost:8443/catalog/items",
        ca_file.display()
    );
    println!("  # the same without a token: 401");
    println!(
        "  curl --cacert {} https://localhost:8443/catalog/items",
        ca_file.display()
    );
    println!(
        "  # billing calls orders through its east gateway (mTLS billing -> orders west): allowed, 200"
    );
    println!("  curl http://127.0.0.1:9081/orders/orders/42");
    println!("  # analytics has no rule on orders' west: denied, 403");
    println!("  curl http://127.0.0.1:9083/orders/orders/42");
    println!("  # metrics of the orders gateway, and what the control server pushed");
    if let Some(g) = gateways.first() {
        println!("  curl http://{}/metrics", g.handle.admin_addr());
    }
    println!("  curl http://{CONTROL_ADMIN}/nodes\n");
    println!(
        "Edit {} and the gateways follow. Ctrl-C stops everything.",
        spec.display()
    );

    let code = if args.check {
        check(&ca_file, &token).await
    } else {
        let _ = tokio::signal::ctrl_c().await;
        ExitCode::SUCCESS
    };
    for g in &gateways {
        g.handle.shutdown().await;
    }
    control.shutdown();
    Ok(code)
}

/// A check: what, URL, token, client certificate of cell, expected status (0: no answer).
type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, u16);

/// The calls the demo suggests, made and checked.
async fn check(ca_file: &Path, token: &str) -> ExitCode {
    let mut ok = true;
    let pki = ca_file.parent().unwrap_or(Path::new("."));
    let north = "https://localhost:8443/catalog/items";
    // West presents orders' issued SVID, whose DNS name is `<cell>.<trust domain>`.
    let west = "https://orders.acme.internal:9443/orders/1";
    let cases: [Case<'_>; 8] = [
        ("public call with the token", north, Some(token), None, 200),
        ("public call without a token", north, None, None, 401),
        (
            "billing -> orders (allowed)",
            "http://127.0.0.1:9081/orders/orders/42",
            None,
            None,
            200,
        ),
        (
            "analytics -> orders (denied)",
            "http://127.0.0.1:9083/orders/orders/42",
            None,
            None,
            403,
        ),
        (
            "billing -> an endpoint orders keeps to itself",
            "http://127.0.0.1:9081/orders/jobs",
            None,
            None,
            403,
        ),
        (
            "orders' west with billing's certificate",
            west,
            None,
            Some("billing"),
            200,
        ),
        (
            "orders' west with analytics' certificate",
            west,
            None,
            Some("analytics"),
            403,
        ),
        (
            "orders' west without a certificate (refused in the handshake)",
            west,
            None,
            None,
            0,
        ),
    ];
    for (what, url, tok, cert, want) in cases {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args([
                "--resolve",
                "orders.acme.internal:9443:127.0.0.1",
                "--cacert",
            ])
            .arg(ca_file)
            .arg(url);
        if let Some(t) = tok {
            cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        if let Some(c) = cert {
            cmd.arg("--cert").arg(pki.join(format!("{c}.pem")));
            cmd.arg("--key").arg(pki.join(format!("{c}-key.pem")));
        }
        // curl blocks: off the runtime, which serves the upstreams meanwhile.
        let got = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<u16>().ok());
        let pass = got == Some(want);
        ok &= pass;
        println!(
            "check: {what}: {} (want {want}) {}",
            got.map_or("no answer".into(), |g| g.to_string()),
            if pass { "ok" } else { "FAILED" }
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn wait_ready(admin: SocketAddr) -> Result<(), String> {
    for _ in 0..200 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(admin).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s
                .write_all(b"GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            if buf.starts_with(b"HTTP/1.1 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the gateway with admin {admin} did not become ready"
    ))
}

/// A small upstream: answers every request with JSON naming itself and echoing the request.
async fn serve_upstream(label: String, addr: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("upstream {label}: cannot listen on {addr}: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let label = label.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = json!({
                        "service": label,
                        "method": req.method().as_str(),
                        "path": req.uri().path(),
                        "caller": req.headers().get("x-forwarded-client-cert").and_then(|v| v.to_str().ok()),
                    });
                    async move {
                        let mut r =
                            hyper::Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(())
}

use crate::files::write;

/// The first address the demo would listen on that something else holds already: the
/// control server's, the gateways' admin and listener addresses, the upstreams'.
fn first_busy(specs: &membrane_xds::spec::Specs) -> Option<SocketAddr> {
    let mut all = vec![parse(ADS), parse(CONTROL_ADMIN)];
    for (i, (_, cell)) in specs.cells().enumerate() {
        all.push(parse(&format!("127.0.0.1:{}", 15001 + i)));
        let g = &cell.gateway;
        for l in [&g.north, &g.west, &g.east, &g.south].into_iter().flatten() {
            all.push(*l.address.value());
        }
        for comp in &cell.components {
            for ep in &comp.endpoints {
                all.extend(ep.upstreams.iter().map(|u| *u.value()));
            }
        }
    }
    all.into_iter()
        .find(|a| std::net::TcpListener::bind(a).is_err())
}

fn parse(a: &str) -> SocketAddr {
    a.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn join(errors: Vec<membrane_xds::spec::SpecError>) -> String {
    membrane_xds::spec::SpecErrors(errors).to_string()
}
