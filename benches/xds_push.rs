//! The control plane at scale: compile time of specs with 10,000 cells and 100,000
//! endpoints (all of them, and again after a change to one cell, incrementally), and the time from a spec
//! file change to the last ACK with 10,000 xDS clients connected in this process (`RESULT
//! push_10000_nodes_ms`, target under 1,000 ms), with the process's memory at that scale.
//!
//! `cargo bench --bench xds_push` (`XDS_BENCH_CELLS=1000` for the smaller run of before)
//!
//! Shape: that many cells of one org, each with north and west and 10 endpoints (5 public
//! with a JWT provider, 5 organization-visible); 10 of them also have an east listener to
//! the 10 cells they name in `calls`. The change rewrites the JWT provider's key set, which
//! every gateway uses: all of them get a push.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use membrane_xds::compile::{self, TYPE_JWT_PROVIDER};
use membrane_xds::control::{self, ControlOptions};
use membrane_xds::proto::envoy::config::core::v3::Node;
use membrane_xds::proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use membrane_xds::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use membrane_xds::server::ChannelStream;
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const ENDPOINTS: usize = 10;
const EAST_CELLS: usize = 10;

/// Cells (and gateways): `XDS_BENCH_CELLS`, 10,000 by default.
fn cells() -> usize {
    std::env::var("XDS_BENCH_CELLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn write_specs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for c in 0..cells() {
        std::fs::write(dir.join(format!("cell{c:05}.yaml")), cell_spec(c, 8080)).unwrap();
    }
    write_idp(dir, "k1");
}

/// Cell `c`'s spec, its upstreams on `port`.
fn cell_spec(c: usize, port: u16) -> String {
    {
        let mut s = format!(
            "kind: Cell\nname: cell{c}\norg: acme\nproject: p{c}\nenvironment: prod\ngateway:\n  north: {{address: '127.0.0.1:0'}}\n  west: {{address: '127.0.0.1:0'}}\n"
        );
        if c < EAST_CELLS {
            // The cells it calls: ten (`calls`; without it, an east listener would route
            // to all 50,000 organization endpoints of the org).
            let callees: Vec<String> = (1..=10).map(|k| format!("cell{}", c + k)).collect();
            let _ = write!(
                s,
                "  east: {{address: '127.0.0.1:0'}}\ncalls: [{}]\n",
                callees.join(", ")
            );
        }
        s.push_str("components:\n  - name: api\n    endpoints:\n");
        for e in 0..ENDPOINTS {
            let vis = if e % 2 == 0 {
                "public\n        jwt: idp"
            } else {
                "organization"
            };
            let _ = write!(
                s,
                "      - name: ep{e}\n        base_path: /svc{e}\n        upstreams: ['10.0.{}.{}:{port}']\n        visibility: {vis}\n",
                c / 250,
                c % 250
            );
        }
        s
    }
}

fn write_idp(dir: &Path, kid: &str) {
    let jwks = format!(
        "{{\"keys\": [{{\"kty\": \"OKP\", \"crv\": \"Ed25519\", \"kid\": \"{kid}\", \"x\": \"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}}]}}"
    );
    std::fs::write(
        dir.join("idp.yaml"),
        format!("kind: JwtProvider\nname: idp\njwks: {{inline: '{jwks}'}}\n"),
    )
    .unwrap();
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let cells = cells();
    let dir = std::env::temp_dir().join(format!("membrane-xds-bench-{}", std::process::id()));
    let spec = dir.join("spec");
    write_specs(&spec);
    let opts = compile::Options {
        spec_dir: spec.clone(),
        cert_dir: dir.join("pki"),
        trust_bundle_pem: "-----BEGIN CERTIFICATE-----\n".into(),
        own_svid: false,
        revoked: Vec::new(),
    };

    // Compile time: load, check and compile, five runs.
    let mut times = Vec::new();
    let mut resources = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let specs = membrane_xds::spec::load_dir(&spec).unwrap();
        assert!(membrane_xds::spec::check(&specs).is_empty());
        let out = compile::compile(&specs, &opts).unwrap();
        times.push(t.elapsed());
        resources = out.gateways.values().map(|g| g.len()).sum();
    }
    times.sort();
    println!(
        "compile: {cells} cells, {} endpoints, {resources} resources: median {:.1} ms (min {:.1}, max {:.1})",
        cells * ENDPOINTS,
        times[2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[4].as_secs_f64() * 1e3
    );
    // A change to one cell (its upstreams' port), as the control server meets it: the
    // specs read again through the parse cache (only the changed file is parsed; every
    // document is checked), then the compile step alone, through the incremental compiler
    // primed with the specs before the change.
    let mut cache = membrane_xds::spec::ParseCache::default();
    let mut compiler = compile::Compiler::default();
    let specs = cache.validate_dir(&spec).unwrap();
    compiler.compile(&specs, &opts).unwrap();
    std::fs::write(spec.join("cell00000.yaml"), cell_spec(0, 9090)).unwrap();
    let t = Instant::now();
    let specs = cache.validate_dir(&spec).unwrap();
    let reload = t.elapsed();
    let t = Instant::now();
    let changed = compiler.compile(&specs, &opts).unwrap();
    let one_cell = t.elapsed();
    assert!(changed.gateways.contains_key("cell0"));
    // The same change compiled from scratch, for comparison.
    let t = Instant::now();
    let fresh = compile::compile(&specs, &opts).unwrap();
    let from_scratch = t.elapsed();
    assert!(
        fresh == changed,
        "the incremental compile matches a fresh one"
    );
    println!(
        "after a change to one cell: read, parse (one file) and check {:.1} ms; compile {:.1} ms incremental, {:.1} ms from scratch",
        reload.as_secs_f64() * 1e3,
        one_cell.as_secs_f64() * 1e3,
        from_scratch.as_secs_f64() * 1e3
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let rss_before = rss_mb();
        let ctl = control::start(ControlOptions {
            spec_dir: spec.clone(),
            store: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: None,
            cert_dir: dir.join("pki"),
            trust_bundle_pem: "-----BEGIN CERTIFICATE-----\n".into(),
            debounce: Duration::from_millis(50),
            ca: None,
            otlp_endpoint: None,
            api: None,
            audit_log: None,
        })
        .await
        .unwrap();
        let rss_control = rss_mb();
        let url = format!("http://{}", ctl.addr);
        // The delta clients, as many per HTTP/2 connection as the server takes (16), each
        // ACKing what it receives.
        let per = membrane_xds::server::MAX_STREAMS_PER_CONNECTION as usize;
        let received = Arc::new(AtomicUsize::new(0));
        // JWT provider responses ACKed by the clients (counted after the ACK is sent).
        let providers = Arc::new(AtomicUsize::new(0));
        let mut senders = Vec::new();
        let types = membrane_proxy::xds_client::client::TYPES;
        for conn in 0..cells.div_ceil(per) {
            let channel = tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect().await.unwrap();
            for n in 0..per.min(cells - conn * per) {
                let cell = conn * per + n;
                let mut client = AggregatedDiscoveryServiceClient::new(channel.clone())
                    .max_decoding_message_size(membrane_api::stream::MAX_RESPONSE_BYTES);
                let (tx, rx) = mpsc::channel(16);
                for (i, t) in types.iter().enumerate() {
                    tx.send(DeltaDiscoveryRequest {
                        node: (i == 0).then(|| Node { id: format!("cell{cell}/gw"), ..Default::default() }),
                        type_url: (*t).to_owned(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }
                let mut stream = client.delta_aggregated_resources(ChannelStream(rx)).await.unwrap().into_inner();
                let (received, providers, tx2) = (received.clone(), providers.clone(), tx.clone());
                tokio::spawn(async move {
                    while let Ok(Some(r)) = stream.message().await {
                        received.fetch_add(1, Ordering::Relaxed);
                        let provider = r.type_url == TYPE_JWT_PROVIDER;
                        let _ = tx2
                            .send(DeltaDiscoveryRequest { type_url: r.type_url, response_nonce: r.nonce, ..Default::default() })
                            .await;
                        if provider {
                            providers.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                senders.push(tx);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while received.load(Ordering::Relaxed) < cells * types.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let connected = ctl.state.nodes.snapshot().values().filter(|n| n.streams > 0).count();
        let rss_connected = rss_mb();
        println!("connected: {connected} nodes, initial responses {}", received.load(Ordering::Relaxed));

        // The change: a new key set for the provider every gateway uses.
        let before: Vec<String> = {
            let nodes = ctl.state.nodes.snapshot();
            nodes.values().filter_map(|n| n.types.get(TYPE_JWT_PROVIDER).map(|t| t.acked_version.clone())).collect()
        };
        assert_eq!(before.len(), cells, "every node acked the first provider version");
        let acked_before = providers.load(Ordering::Relaxed);
        let t0 = Instant::now();
        write_idp(&spec, "k2");
        // The clients count the ACKs they send; the node table (which the server updates
        // on each ACK) is read only once they are all sent, every 20 ms: snapshotting
        // 10,000 nodes every few milliseconds during the push took a core from it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while providers.load(Ordering::Relaxed) < acked_before + cells {
            assert!(Instant::now() < deadline, "the clients did not all get the change");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sent = t0.elapsed();
        let elapsed = loop {
            let nodes = ctl.state.nodes.snapshot();
            let done = nodes
                .values()
                .filter(|n| n.types.get(TYPE_JWT_PROVIDER).is_some_and(|t| !t.acked_version.is_empty() && t.acked_version != before[0]))
                .count();
            if done == cells {
                break t0.elapsed();
            }
            if Instant::now() > deadline {
                panic!("only {done} of {cells} nodes acked the change");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!(
            "change to the last ACK sent: {:.0} ms; recorded by the server (read every 20 ms): {:.0} ms",
            sent.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e3
        );
        println!(
            "memory (process RSS): {rss_before:.0} MB before, {rss_control:.0} MB with the control server, {rss_connected:.0} MB with {cells} streams (clients included)"
        );
        println!("change to last ACK: {:.0} ms (file watch debounce 50 ms included)", elapsed.as_secs_f64() * 1e3);
        println!("RESULT push_{cells}_nodes_ms {:.0}", elapsed.as_secs_f64() * 1e3);
        println!("RESULT compile_{cells}_cells_ms {:.1}", times[2].as_secs_f64() * 1e3);
        println!(
            "RESULT reload_one_cell_change_{cells}_cells_ms {:.1}",
            reload.as_secs_f64() * 1e3
        );
        println!(
            "RESULT compile_one_cell_change_{cells}_cells_ms {:.1}",
            one_cell.as_secs_f64() * 1e3
        );
        println!("RESULT control_rss_mb {rss_connected:.0}");
        // Both ends of every stream are in this process: an upper bound per gateway.
        println!(
            "RESULT control_kb_per_gateway {:.1}",
            (rss_connected - rss_control) * 1024.0 / cells as f64
        );
        drop(senders);
        ctl.shutdown();
    });
}
