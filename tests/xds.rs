//! Control server and gateways over real gRPC on 127.0.0.1: a spec change reaches the
//! gateway and changes routing; a bad resource is NACKed with its reason while the good ones
//! of the same push apply and the old config serves; the control server restarts and the
//! gateway keeps serving, then reconnects; a gateway restarted while the control server is
//! down serves from its last good generation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use membrane_policy::jwt::{Alg, Signer};
use membrane_proxy::testing::Upstream;
use membrane_proxy::testing::tls::{Leaf, client_config, connect, get_over};
use membrane_proxy::tls::devca::DevCa;
use membrane_proxy::xds_client::{self, XdsOptions};
use membrane_xds::control::{self, ControlOptions};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct World {
    dir: PathBuf,
    spec: PathBuf,
    pki: PathBuf,
    north: SocketAddr,
    token: String,
    idp: Signer,
}

fn world(tag: &str) -> World {
    logs();
    let dir = std::env::temp_dir().join(format!("membrane-xds-{tag}-{}", std::process::id()));
    let (spec, pki) = (dir.join("spec"), dir.join("pki"));
    std::fs::create_dir_all(&spec).unwrap();
    std::fs::create_dir_all(&pki).unwrap();
    let ca = DevCa::new("org ca", Duration::from_secs(86_400)).unwrap();
    std::fs::write(pki.join("ca.pem"), ca.cert_pem()).unwrap();
    let leaf = ca
        .issue(
            &Leaf::new("orders")
                .dns("localhost")
                .spiffe("spiffe://acme.internal/org/acme/env/dev/cell/orders"),
        )
        .unwrap();
    std::fs::write(pki.join("orders.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(pki.join("orders-key.pem"), &leaf.key_pem).unwrap();
    let idp = Signer::generate(Alg::ES256, "k1").unwrap();
    std::fs::write(spec.join("jwks.json"), idp.jwks()).unwrap();
    std::fs::write(
        spec.join("idp.yaml"),
        "kind: JwtProvider\nname: idp\njwks: {file: jwks.json}\n",
    )
    .unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = idp.sign(&json!({"sub": "alice", "exp": exp}));
    World {
        north: format!("127.0.0.1:{}", closed_port()).parse().unwrap(),
        dir,
        spec,
        pki,
        token,
        idp,
    }
}

fn cell_spec(north: SocketAddr, endpoints: &[(&str, &str, SocketAddr)]) -> String {
    let mut s = format!(
        "kind: Cell\nname: orders\norg: acme\nproject: orders\nenvironment: dev\ngateway:\n  north: {{address: '{north}'}}\ncomponents:\n  - name: api\n    endpoints:\n"
    );
    for (name, path, up) in endpoints {
        s.push_str(&format!(
            "      - {{name: {name}, base_path: {path}, upstreams: ['{up}'], visibility: public, jwt: idp}}\n"
        ));
    }
    s
}

async fn start_control(w: &World, listen: SocketAddr) -> control::ControlHandle {
    start_control_with(w, listen, None).await
}

async fn start_control_with(
    w: &World,
    listen: SocketAddr,
    store: Option<membrane_xds::store::Etcd>,
) -> control::ControlHandle {
    control::start(ControlOptions {
        spec_dir: w.spec.clone(),
        store,
        listen,
        admin: None,
        cert_dir: w.pki.clone(),
        trust_bundle_pem: std::fs::read_to_string(w.pki.join("ca.pem")).unwrap(),
        debounce: Duration::from_millis(50),
        ca: None,
        otlp_endpoint: None,
        api: None,
        audit_log: None,
    })
    .await
    .unwrap()
}

fn start_gateway(url: &str, state: &Path) -> membrane_proxy::ProxyHandle {
    xds_client::start(XdsOptions {
        url: url.to_owned(),
        also: Vec::new(),
        node: "orders/gw-1".into(),
        state_dir: state.to_owned(),
        admin: "127.0.0.1:0".parse().unwrap(),
        security: membrane_proxy::xds_client::channel::Security::Plaintext,
        join_token: None,
        tracing: None,
        locality: None,
    })
    .unwrap()
}

/// The world's specs compiled, as the control server would.
fn compile_world(w: &World) -> membrane_xds::compile::Compiled {
    let specs = membrane_xds::spec::load_dir(&w.spec).unwrap();
    let opts = membrane_xds::compile::Options {
        spec_dir: w.spec.clone(),
        cert_dir: w.pki.clone(),
        trust_bundle_pem: std::fs::read_to_string(w.pki.join("ca.pem")).unwrap(),
        own_svid: false,
        revoked: Vec::new(),
    };
    membrane_xds::compile::compile(&specs, &opts).unwrap()
}

/// Serves an ADS implementation on an ephemeral loopback port; its URL.
fn serve_ads<S>(ads: S) -> String
where
    S: membrane_xds::proto::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService,
{
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", incoming.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(membrane_xds::server::AggregatedDiscoveryServiceServer::new(
                ads,
            ))
            .serve_with_incoming(incoming),
    );
    url
}

/// GET over the north listener with the token; the status and the upstream that answered.
async fn call(w: &World, path: &str) -> Result<(u16, String), String> {
    call_at(w.north, &w.pki, &w.token, path).await
}

async fn call_at(
    north: SocketAddr,
    pki: &Path,
    token: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let cfg = client_config(
        &pki.join("ca.pem"),
        None,
        &["http/1.1"],
        &[&rustls::version::TLS13],
    );
    let s = connect(north, "localhost", cfg)
        .await
        .map_err(|e| e.to_string())?;
    let bearer = format!("Bearer {token}");
    let r = get_over(s, path, &[("authorization", &bearer)]).await?;
    let upstream = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["upstream"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok((r.status.as_u16(), upstream))
}

async fn until(what: &str, w: &World, path: &str, want: (u16, &str)) {
    eventually(what, Duration::from_secs(20), || async move {
        matches!(call(w, path).await, Ok((s, u)) if s == want.0 && u == want.1)
    })
    .await;
}

/// A world whose `orders` cell has one public endpoint, `catalog`, served by `a`.
async fn catalog_world(name: &str) -> (World, Upstream) {
    let w = world(name);
    let a = Upstream::start("a").await;
    std::fs::write(
        w.spec.join("orders.yaml"),
        cell_spec(w.north, &[("catalog", "/catalog", a.addr)]),
    )
    .unwrap();
    (w, a)
}

/// Polls the gateway's `/config` until `holds` says yes.
async fn until_config(admin: SocketAddr, what: &str, holds: fn(&serde_json::Value) -> bool) {
    let c = client_h1();
    let url = format!("http://{admin}/config");
    eventually(what, Duration::from_secs(20), || {
        let (c, u) = (c.clone(), url.clone());
        async move { holds(&get(&c, &u, "a", &[]).await.json()) }
    })
    .await;
}

async fn ready(admin: SocketAddr) -> bool {
    let c = client_h1();
    matches!(c.get(format!("http://{admin}/ready").parse().unwrap()).await, Ok(r) if r.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_reach_the_gateway_which_survives_control_and_own_restarts() {
    let w = world("flow");
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    std::fs::write(
        w.spec.join("orders.yaml"),
        cell_spec(w.north, &[("catalog", "/catalog", a.addr)]),
    )
    .unwrap();
    let ctl = start_control(&w, "127.0.0.1:0".parse().unwrap()).await;
    let ads_addr = ctl.addr;
    let url = format!("http://{ads_addr}");
    let state = w.dir.join("state");
    let gw = start_gateway(&url, &state);
    eventually("the gateway is ready", Duration::from_secs(20), || {
        ready(gw.admin_addr())
    })
    .await;
    until("the first generation routes", &w, "/catalog/1", (200, "a")).await;

    // A spec change (a new endpoint) reaches the gateway and changes its routing.
    std::fs::write(
        w.spec.join("orders.yaml"),
        cell_spec(
            w.north,
            &[("catalog", "/catalog", a.addr), ("fresh", "/fresh", b.addr)],
        ),
    )
    .unwrap();
    ctl.reload();
    until("the new route", &w, "/fresh/x", (200, "b")).await;

    // A bad change is refused by the control server; the last good one keeps being served.
    std::fs::write(
        w.spec.join("broken.yaml"),
        "kind: Policy\nname: p\ncell: ghost\nlistener: west\nrules: []\n",
    )
    .unwrap();
    ctl.reload();
    eventually(
        "the refusal is recorded",
        Duration::from_secs(10),
        || async {
            ctl.state
                .last_error
                .lock()
                .unwrap()
                .as_deref()
                .is_some_and(|e| e.contains("unknown cell `ghost`"))
        },
    )
    .await;
    std::fs::remove_file(w.spec.join("broken.yaml")).unwrap();
    assert_eq!(call(&w, "/fresh/x").await.unwrap(), (200, "b".into()));

    // The control server goes away: once the gateway knows, it keeps serving.
    ctl.shutdown();
    until_config(
        gw.admin_addr(),
        "the gateway sees the control server gone",
        |c| c["xds"]["connected"] == false,
    )
    .await;
    assert_eq!(call(&w, "/catalog/2").await.unwrap(), (200, "a".into()));

    // The gateway restarts while the control server is down: it boots from its state.
    gw.shutdown().await;
    let gw = start_gateway(&url, &state);
    eventually(
        "the restarted gateway is ready from its state",
        Duration::from_secs(10),
        || ready(gw.admin_addr()),
    )
    .await;
    until(
        "served from the last good generation",
        &w,
        "/fresh/y",
        (200, "b"),
    )
    .await;

    // The control server comes back on its address; the gateway reconnects and follows
    // the next change.
    let ctl = start_control(&w, ads_addr).await;
    std::fs::write(
        w.spec.join("orders.yaml"),
        cell_spec(w.north, &[("catalog", "/catalog", b.addr)]),
    )
    .unwrap();
    ctl.reload();
    until(
        "the reconnected gateway follows changes",
        &w,
        "/catalog/3",
        (200, "b"),
    )
    .await;
    let nodes = ctl.state.nodes.snapshot();
    assert_eq!(nodes["orders/gw-1"].protocol, "delta");
    gw.shutdown().await;
    ctl.shutdown();
    drop(w.idp);
}

/// Requests over north, one after the other, until `stop` (2,000 at most): how many were
/// answered 200, and what the others got.
fn load_until(
    w: &World,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    let (north, pki, token) = (w.north, w.pki.clone(), w.token.clone());
    tokio::spawn(async move {
        let (mut ok, mut failed) = (0usize, Vec::new());
        for i in 0..2000 {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            match call_at(north, &pki, &token, &format!("/catalog/{i}")).await {
                Ok((200, _)) => ok += 1,
                other => failed.push(format!("{other:?}")),
            }
        }
        (ok, failed)
    })
}

/// A gateway of `orders` that knows both control servers, `first` first; ready and routed.
async fn replicated_gateway(
    w: &World,
    first: SocketAddr,
    second: SocketAddr,
) -> membrane_proxy::ProxyHandle {
    let gw = xds_client::start(XdsOptions {
        url: format!("http://{first}"),
        also: vec![format!("http://{second}")],
        node: "orders/gw-1".into(),
        state_dir: w.dir.join("state"),
        admin: "127.0.0.1:0".parse().unwrap(),
        security: membrane_proxy::xds_client::channel::Security::Plaintext,
        join_token: None,
        tracing: None,
        locality: None,
    })
    .unwrap();
    eventually("the gateway is ready", Duration::from_secs(20), || {
        ready(gw.admin_addr())
    })
    .await;
    gw
}

async fn xds_config(admin: SocketAddr) -> serde_json::Value {
    get(&client_h1(), &format!("http://{admin}/config"), "a", &[])
        .await
        .json()
}

/// Stops `first` while requests go on, one after the other: the gateway moves to
/// `second`, no request fails, and nothing is sent again (the gateway holds the versions
/// it had, on the same generation, and `second` pushed it nothing).
async fn move_under_load(
    w: &World,
    gw: &membrane_proxy::ProxyHandle,
    first: control::ControlHandle,
    second: &control::ControlHandle,
) {
    let before = xds_config(gw.admin_addr()).await;
    assert!(
        before["xds"]["versions"]
            .as_object()
            .is_some_and(|v| v.len() >= 2),
        "{before}"
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = load_until(w, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.shutdown();
    eventually(
        "the second server has the gateway",
        Duration::from_secs(20),
        || async {
            second
                .state
                .nodes
                .snapshot()
                .get("orders/gw-1")
                .is_some_and(|n| n.streams > 0)
        },
    )
    .await;
    until_config(gw.admin_addr(), "the gateway says it moved", |c| {
        c["xds"]["connected"] == true && c["xds"]["server"].as_str().is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok + failed.len(),
        failed
    );
    assert!(ok > 10, "only {ok} requests");
    let after = xds_config(gw.admin_addr()).await;
    assert_eq!(after["xds"]["server"], format!("http://{}", second.addr));
    assert_eq!(after["xds"]["versions"], before["xds"]["versions"]);
    assert_eq!(after["generation"], before["generation"]);
    let node = second.state.nodes.snapshot()["orders/gw-1"].clone();
    assert!(
        node.types.values().all(|t| t.pushes == 0),
        "the replica re-sent: {:?}",
        node.types
    );
}

/// Two control servers on the same specs (replicas): the gateway's server stops under
/// load, the gateway moves to the other, no request fails, and the other sends it nothing
/// (the same specs compile to the same versions, and the gateway says which it holds); a
/// change afterwards reaches it through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_moves_to_a_replica_which_sends_it_nothing_again() {
    let (w, a) = catalog_world("replicas").await;
    let first = start_control(&w, "127.0.0.1:0".parse().unwrap()).await;
    let second = start_control(&w, "127.0.0.1:0".parse().unwrap()).await;
    let gw = replicated_gateway(&w, first.addr, second.addr).await;
    until("routed", &w, "/catalog/1", (200, "a")).await;
    assert!(first.state.nodes.snapshot().contains_key("orders/gw-1"));
    move_under_load(&w, &gw, first, &second).await;

    // A change reaches the gateway through the second server.
    let b = Upstream::start("b").await;
    std::fs::write(
        w.spec.join("orders.yaml"),
        cell_spec(w.north, &[("catalog", "/catalog", b.addr)]),
    )
    .unwrap();
    second.reload();
    until(
        "the change, through the replica",
        &w,
        "/catalog/2",
        (200, "b"),
    )
    .await;
    assert!(
        second.state.nodes.snapshot()["orders/gw-1"]
            .types
            .values()
            .any(|t| t.pushes > 0)
    );
    drop(a);
    gw.shutdown().await;
    second.shutdown();
}

/// Two control servers on one etcd prefix (Debian's etcd, started here):
/// - a spec written to etcd reaches the gateway through either;
/// - a bad one is refused with its key and position, and the last good keeps serving;
/// - the gateway's server stops under load: it moves to the other, which sends it nothing,
///   and no request fails;
/// - etcd restarts: a change after it still arrives (the watch reconnects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_servers_on_one_etcd_serve_a_gateway_through_failures() {
    let Some(mut etcd) = common::etcd::Etcd::start("ha") else {
        return;
    };
    let w = world("etcd");
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let store = membrane_xds::store::Etcd::parse(&etcd.url("membrane/dev")).unwrap();
    let spec_with = |up: SocketAddr| cell_spec(w.north, &[("catalog", "/catalog", up)]);
    // The world's other documents (its JWT provider) go to etcd too; the files they name
    // stay in the spec directory.
    common::etcd::put_dir(&store, &w.spec).await;
    store.put("orders.yaml", &spec_with(a.addr)).await.unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let first = start_control_with(&w, any, Some(store.clone())).await;
    let second = start_control_with(&w, any, Some(store.clone())).await;
    let gw = replicated_gateway(&w, first.addr, second.addr).await;
    until("routed from etcd", &w, "/catalog/1", (200, "a")).await;

    // A change written to etcd: both servers compile it, alike.
    store.put("orders.yaml", &spec_with(b.addr)).await.unwrap();
    until("the change from etcd", &w, "/catalog/2", (200, "b")).await;
    eventually(
        "both servers hold the same resources",
        Duration::from_secs(10),
        || async { **first.state.current.borrow() == **second.state.current.borrow() },
    )
    .await;

    // A bad document: refused with its key and position; the last good keeps serving.
    store
        .put(
            "broken.yaml",
            "kind: Policy\nname: p\ncell: ghost\nlistener: west\nrules: []\n",
        )
        .await
        .unwrap();
    eventually(
        "the refusal names the key",
        Duration::from_secs(10),
        || async {
            first
                .state
                .last_error
                .lock()
                .unwrap()
                .as_deref()
                .is_some_and(|e| {
                    e.contains("etcd:/membrane/dev/broken.yaml:")
                        && e.contains("unknown cell `ghost`")
                })
        },
    )
    .await;
    assert_eq!(call(&w, "/catalog/3").await.unwrap(), (200, "b".into()));
    // `membrane check` reads the store as the control servers do (files from the current
    // directory).
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
            .args(["check", &etcd.url("membrane/dev")])
            .current_dir(&w.spec)
            .output()
            .unwrap()
    };
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("etcd:/membrane/dev/broken.yaml:"),
        "{err}"
    );
    store.delete("broken.yaml").await.unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the refusal is over", Duration::from_secs(10), || async {
        first.state.last_error.lock().unwrap().is_none()
    })
    .await;

    // The gateway's server stops under load.
    move_under_load(&w, &gw, first, &second).await;

    // etcd restarts; a change written after it reaches the gateway through the second
    // server, whose watch reconnected.
    etcd.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.resume();
    eventually(
        "a change after etcd's restart",
        Duration::from_secs(30),
        || {
            let (store, w, spec) = (&store, &w, spec_with(a.addr));
            async move {
                // Written until it lands (the client reconnects to the restarted etcd).
                let _ = store.put("orders.yaml", &spec).await;
                matches!(call(w, "/catalog/4").await, Ok((200, u)) if u == "a")
            }
        },
    )
    .await;
    gw.shutdown().await;
    second.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_resource_is_nacked_with_its_reason_while_the_good_ones_apply() {
    use membrane_xds::compile::{self as xc, TYPE_CLUSTER, TYPE_LISTENER, Versioned};
    use membrane_xds::proto::membrane::v1 as pb;
    use membrane_xds::server::Ads;
    use prost::Message;
    use std::sync::Arc;

    let w = world("nack");
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    std::fs::write(
        w.spec.join("orders.yaml"),
        cell_spec(w.north, &[("catalog", "/catalog", a.addr)]),
    )
    .unwrap();
    let good = compile_world(&w);
    let (publish, rx) = tokio::sync::watch::channel(Arc::new(good.clone()));
    let ads = Ads::new(rx);
    let url = serve_ads(ads.clone());
    let gw = start_gateway(&url, &w.dir.join("state"));
    until("the first generation", &w, "/catalog/1", (200, "a")).await;

    // One push: the catalog cluster moves to upstream b (good), and a new listener routes
    // to a cluster that does not exist (bad).
    let mut next = good.clone();
    let res = std::sync::Arc::make_mut(next.gateways.get_mut("orders").unwrap());
    let put = |res: &mut xc::Resources, t: &str, name: &str, bytes: Vec<u8>| {
        res.insert(
            (t.to_owned(), name.to_owned()),
            Versioned {
                version: format!("v-{}", bytes.len()),
                resource: prost_types::Any {
                    type_url: t.to_owned(),
                    value: bytes,
                },
            },
        );
    };
    let cluster = pb::Cluster {
        name: "local:catalog".into(),
        endpoints: vec![b.addr.to_string()],
        protocol: pb::Protocol::Http1 as i32,
        tls: None,
        ..Default::default()
    };
    put(res, TYPE_CLUSTER, "local:catalog", cluster.encode_to_vec());
    let bad = pb::Listener {
        name: "bad".into(),
        address: format!("127.0.0.1:{}", closed_port()),
        protocol: pb::Protocol::Http1 as i32,
        tls: None,
        routes: vec![pb::Route {
            name: "r".into(),
            path_prefix: "/".into(),
            cluster: "nope".into(),
            ..Default::default()
        }],
        authorization: None,
        access_log: None,
    };
    put(res, TYPE_LISTENER, "bad", bad.encode_to_vec());
    publish.send(Arc::new(next)).unwrap();

    until("the good resource applied", &w, "/catalog/2", (200, "b")).await;
    eventually(
        "the bad listener NACKed with its reason",
        Duration::from_secs(10),
        || async {
            let nodes = ads.nodes.snapshot();
            nodes
                .get("orders/gw-1")
                .and_then(|n| n.types.get(TYPE_LISTENER))
                .and_then(|t| t.nack.clone())
                .is_some_and(|(_, why)| why.contains("bad") && why.contains("nope"))
        },
    )
    .await;
    // The gateway says so too, and never bound the bad listener.
    let cfg = get(
        &client_h1(),
        &format!("http://{}/config", gw.admin_addr()),
        "a",
        &[],
    )
    .await
    .json();
    let nacks = cfg["xds"]["nacks"].as_object().unwrap();
    assert!(nacks.keys().any(|k| k.ends_with("/bad")), "{cfg}");
    assert!(gw.listener_addr("bad").is_none());
    let m = parse_metrics(
        &get(
            &client_h1(),
            &format!("http://{}/metrics", gw.admin_addr()),
            "a",
            &[],
        )
        .await
        .text(),
    );
    assert!(m["membrane_xds_nacks_total"] >= 1.0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_specs_change_ten_times_a_second() {
    let w = world("churn");
    let a = Upstream::start("a").await;
    std::fs::write(
        w.spec.join("orders.yaml"),
        cell_spec(w.north, &[("catalog", "/catalog", a.addr)]),
    )
    .unwrap();
    let ctl = start_control(&w, "127.0.0.1:0".parse().unwrap()).await;
    let gw = start_gateway(&format!("http://{}", ctl.addr), &w.dir.join("state"));
    until("the first generation", &w, "/catalog/0", (200, "a")).await;

    // Load: two loops of requests, each on a new TLS connection, bounded by count and time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let w = std::sync::Arc::new(w);
    let mut loaders = Vec::new();
    for _ in 0..2 {
        let (w, stop, served) = (w.clone(), stop.clone(), served.clone());
        loaders.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            for i in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match call(&w, &format!("/catalog/{i}")).await {
                    Ok((200, _)) => {
                        ok += 1;
                        served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        }));
    }
    // 25 spec changes, 100 ms apart (the pace is the scenario), each with requests served
    // after it: each adds or drops a second endpoint.
    let b = Upstream::start("b").await;
    for i in 0..25 {
        let eps: Vec<(&str, &str, SocketAddr)> = if i % 2 == 0 {
            vec![("catalog", "/catalog", a.addr), ("extra", "/extra", b.addr)]
        } else {
            vec![("catalog", "/catalog", a.addr)]
        };
        std::fs::write(w.spec.join("orders.yaml"), cell_spec(w.north, &eps)).unwrap();
        ctl.reload();
        let before = served.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let served = &served;
        eventually(
            "a request served after the change",
            Duration::from_secs(10),
            || async move { served.load(std::sync::atomic::Ordering::Relaxed) > before },
        )
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for l in loaders {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(ok >= 25, "the load ran: {ok}");
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    let pushes: u64 = ctl.state.nodes.snapshot()["orders/gw-1"]
        .types
        .values()
        .map(|t| t.pushes)
        .sum();
    assert!(pushes >= 10, "the changes were pushed: {pushes}");
    gw.shutdown().await;
    ctl.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_admin_shows_what_each_node_was_sent_and_acked() {
    let w = world("admin");
    let a = Upstream::start("a").await;
    std::fs::write(
        w.spec.join("orders.yaml"),
        cell_spec(w.north, &[("catalog", "/catalog", a.addr)]),
    )
    .unwrap();
    let ctl = control::start(ControlOptions {
        spec_dir: w.spec.clone(),
        store: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        cert_dir: w.pki.clone(),
        trust_bundle_pem: std::fs::read_to_string(w.pki.join("ca.pem")).unwrap(),
        debounce: Duration::from_millis(50),
        ca: None,
        otlp_endpoint: None,
        api: None,
        audit_log: None,
    })
    .await
    .unwrap();
    let admin = ctl.admin_addr.unwrap();
    let gw = start_gateway(&format!("http://{}", ctl.addr), &w.dir.join("state"));
    until("the first generation", &w, "/catalog/1", (200, "a")).await;
    let c = client_h1();
    let nodes_json = || async {
        get(&c, &format!("http://{admin}/nodes"), "a", &[])
            .await
            .json()
    };
    let listener_of = |nodes: &serde_json::Value| {
        nodes["nodes"]["orders/gw-1"]["types"]["type.googleapis.com/membrane.v1.Listener"].clone()
    };
    // The gateway applies before it ACKs: the ACK may trail the first good request.
    eventually("the listener ACKed", Duration::from_secs(10), || async {
        let l = listener_of(&nodes_json().await);
        !l["sent_version"].is_null() && l["acked_version"] == l["sent_version"]
    })
    .await;
    let nodes = nodes_json().await;
    let node = &nodes["nodes"]["orders/gw-1"];
    assert_eq!(node["streams"], 1, "{nodes}");
    let listener = listener_of(&nodes);
    assert_eq!(
        listener["acked_version"], listener["sent_version"],
        "{nodes}"
    );
    assert!(listener["nack"].is_null());
    let m = parse_metrics(
        &get(&c, &format!("http://{admin}/metrics"), "a", &[])
            .await
            .text(),
    );
    assert_eq!(m["membrane_control_connected_nodes"], 1.0);
    assert!(m["membrane_control_pushes_total{node=\"orders/gw-1\"}"] >= 4.0);
    assert_eq!(m["membrane_control_nacks_total{node=\"orders/gw-1\"}"], 0.0);
    // The gateway's own view: versions and the last ACK on /config.
    let cfg = get(&c, &format!("http://{}/config", gw.admin_addr()), "a", &[])
        .await
        .json();
    assert_eq!(cfg["xds"]["connected"], true, "{cfg}");
    assert_eq!(cfg["xds"]["node"], "orders/gw-1");
    assert!(cfg["xds"]["last_ack"].is_string(), "{cfg}");
    // And in its metrics.
    let g = parse_metrics(
        &get(&c, &format!("http://{}/metrics", gw.admin_addr()), "a", &[])
            .await
            .text(),
    );
    assert_eq!(g["membrane_xds_connected"], 1.0);
    assert!(g["membrane_xds_last_ack_timestamp_seconds"] > 1.7e9);
    assert_eq!(g["membrane_xds_nacks_total"], 0.0);
    // A refused spec change shows as membrane_control_specs_refused until it is mended.
    let refused = || async {
        parse_metrics(
            &get(&c, &format!("http://{admin}/metrics"), "a", &[])
                .await
                .text(),
        )["membrane_control_specs_refused"]
    };
    assert_eq!(refused().await, 0.0);
    std::fs::write(
        w.spec.join("broken.yaml"),
        "kind: Policy\nname: p\ncell: ghost\nlistener: west\nrules: []\n",
    )
    .unwrap();
    ctl.reload();
    eventually(
        "the refusal is a metric",
        Duration::from_secs(10),
        || async { refused().await == 1.0 },
    )
    .await;
    std::fs::remove_file(w.spec.join("broken.yaml")).unwrap();
    ctl.reload();
    eventually("the mend is a metric", Duration::from_secs(10), || async {
        refused().await == 0.0
    })
    .await;
    gw.shutdown().await;
    ctl.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn south_reaches_allow_listed_external_hosts_over_tls_and_refuses_others() {
    use membrane_proxy::testing::tls::TlsUpstream;
    let w = world("south");
    // An "external" HTTPS service on loopback, with a certificate for `localhost` from a CA
    // the spec names.
    let ext_ca = DevCa::new("external ca", Duration::from_secs(86_400)).unwrap();
    let leaf = ext_ca.issue(&Leaf::new("ext").dns("localhost")).unwrap();
    std::fs::write(w.dir.join("ext.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(w.dir.join("ext-key.pem"), &leaf.key_pem).unwrap();
    std::fs::write(w.spec.join("ext-ca.pem"), ext_ca.cert_pem()).unwrap();
    let ext = TlsUpstream::start(
        "payments",
        &w.dir.join("ext.pem"),
        &w.dir.join("ext-key.pem"),
        None,
    )
    .await;
    let south: SocketAddr = format!("127.0.0.1:{}", closed_port()).parse().unwrap();
    let a = Upstream::start("a").await;
    let mut spec = cell_spec(w.north, &[("catalog", "/catalog", a.addr)]);
    spec = spec.replace(
        "gateway:\n",
        &format!("gateway:\n  south: {{address: '{south}'}}\n"),
    );
    spec.push_str(&format!(
        "external_hosts:\n  - {{host: localhost, port: {}, trust_bundle: ext-ca.pem}}\n",
        ext.addr.port()
    ));
    std::fs::write(w.spec.join("orders.yaml"), spec).unwrap();
    let ctl = start_control(&w, "127.0.0.1:0".parse().unwrap()).await;
    let gw = start_gateway(&format!("http://{}", ctl.addr), &w.dir.join("state"));
    eventually("the gateway is ready", Duration::from_secs(20), || {
        ready(gw.admin_addr())
    })
    .await;

    let c = client_h1();
    let r = get(&c, &format!("http://{south}/v1/charges"), "localhost", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["upstream"], "payments");
    assert_eq!(r.json()["uri"], "/v1/charges");
    let r = get(
        &c,
        &format!("http://{south}/v1/charges"),
        "evil.example",
        &[],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(ext.served(), 1);
    gw.shutdown().await;
    ctl.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_as_an_xds_gateway() {
    let w = world("binary");
    let a = Upstream::start("a").await;
    std::fs::write(
        w.spec.join("orders.yaml"),
        cell_spec(w.north, &[("catalog", "/catalog", a.addr)]),
    )
    .unwrap();
    let ctl = start_control(&w, "127.0.0.1:0".parse().unwrap()).await;
    let admin: SocketAddr = format!("127.0.0.1:{}", closed_port()).parse().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args([
            "proxy",
            "--xds",
            &format!("http://{}", ctl.addr),
            "--insecure-xds",
            "--node",
            "orders/gw-9",
            "--admin",
            &admin.to_string(),
            "--state-dir",
        ])
        .arg(w.dir.join("state-bin"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(w.dir.join("gw-9.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(w.dir.join("gw-9.log")).unwrap_or_default();
    let mut exited = None;
    eventually(
        "the gateway process is ready",
        Duration::from_secs(20),
        || {
            exited = exited.or(child.try_wait().ok().flatten());
            let gone = exited.is_some();
            async move { gone || ready(admin).await }
        },
    )
    .await;
    assert!(
        exited.is_none(),
        "the gateway exited, {exited:?}: {}",
        log()
    );
    until(
        "it routes what the control server sent",
        &w,
        "/catalog/1",
        (200, "a"),
    )
    .await;
    assert!(ctl.state.nodes.snapshot().contains_key("orders/gw-9"));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM drains and exits 0: {status:?}");
    ctl.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_reaches_every_gateway_it_concerns() {
    let w = world("two");
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let port = || format!("127.0.0.1:{}", closed_port());
    let (orders_west, billing_west, billing_east) = (port(), port(), port());
    let orders = |extra: &str| {
        format!(
            "kind: Cell\nname: orders\norg: acme\nproject: orders\nenvironment: dev\ngateway:\n  west: {{address: '{orders_west}'}}\ncomponents:\n  - name: api\n    endpoints:\n      - {{name: orders, base_path: /orders, upstreams: ['{}'], visibility: organization}}\n{extra}",
            a.addr
        )
    };
    let billing = format!(
        "kind: Cell\nname: billing\norg: acme\nproject: billing\nenvironment: dev\ngateway:\n  west: {{address: '{billing_west}'}}\n  east: {{address: '{billing_east}'}}\n"
    );
    std::fs::write(w.spec.join("orders.yaml"), orders("")).unwrap();
    std::fs::write(w.spec.join("billing.yaml"), &billing).unwrap();
    // Both gateways' certificates from one org CA (the world made one for orders only).
    let ca = DevCa::new("org ca", Duration::from_secs(86_400)).unwrap();
    std::fs::write(w.pki.join("ca.pem"), ca.cert_pem()).unwrap();
    for cell in ["orders", "billing"] {
        let leaf = ca
            .issue(
                &Leaf::new(cell)
                    .dns("localhost")
                    .dns(&format!("{cell}.acme.internal"))
                    .spiffe(&format!(
                        "spiffe://acme.internal/org/acme/env/dev/cell/{cell}"
                    )),
            )
            .unwrap();
        std::fs::write(w.pki.join(format!("{cell}.pem")), &leaf.cert_pem).unwrap();
        std::fs::write(w.pki.join(format!("{cell}-key.pem")), &leaf.key_pem).unwrap();
    }
    let ctl = start_control(&w, "127.0.0.1:0".parse().unwrap()).await;
    let url = format!("http://{}", ctl.addr);
    let start = |node: &str, state: &str| {
        xds_client::start(XdsOptions {
            url: url.clone(),
            also: Vec::new(),
            node: node.into(),
            state_dir: w.dir.join(state),
            admin: "127.0.0.1:0".parse().unwrap(),
            security: membrane_proxy::xds_client::channel::Security::Plaintext,
            join_token: None,
            tracing: None,
            locality: None,
        })
        .unwrap()
    };
    let (gw_orders, gw_billing) = (
        start("orders/gw-1", "s-orders"),
        start("billing/gw-1", "s-billing"),
    );
    let c = client_h1();
    let east = |path: &str| format!("http://{billing_east}{path}");
    let upstream_of = |c: TestClient, url: String| async move {
        use http_body_util::BodyExt;
        let Ok(r) = c.get(url.parse().unwrap()).await else {
            return (0, None);
        };
        let status = r.status().as_u16();
        let body = r
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let up = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["upstream"].as_str().map(str::to_owned));
        (status, up)
    };
    eventually(
        "billing reaches orders through east and west",
        Duration::from_secs(20),
        || {
            let (c, u) = (c.clone(), east("/orders/orders/1"));
            async move { upstream_of(c, u).await == (200, Some("a".into())) }
        },
    )
    .await;
    assert_eq!(
        upstream_of(c.clone(), east("/orders/v2/1")).await.0,
        403,
        "not exposed yet"
    );

    // orders exposes a new endpoint: orders' west and billing's east both change.
    std::fs::write(
        w.spec.join("orders.yaml"),
        orders(&format!(
            "      - {{name: v2, base_path: /v2, upstreams: ['{}'], visibility: organization}}\n",
            b.addr
        )),
    )
    .unwrap();
    ctl.reload();
    eventually(
        "both gateways follow the change",
        Duration::from_secs(20),
        || {
            let (c, u) = (c.clone(), east("/orders/v2/1"));
            async move { upstream_of(c, u).await == (200, Some("b".into())) }
        },
    )
    .await;
    // A gateway applies a push before it ACKs it, so the request above can succeed while the
    // ACK is still on its way to the control server: wait for it rather than race it.
    let settled = || {
        let nodes = ctl.state.nodes.snapshot();
        ["orders/gw-1", "billing/gw-1"].map(|n| {
            let l = &nodes[n].types["type.googleapis.com/membrane.v1.Listener"];
            (
                l.pushes >= 2 && l.acked_version == l.sent_version,
                format!("{n}: {l:?}"),
            )
        })
    };
    eventually(
        "both gateways ACK the listener change",
        Duration::from_secs(10),
        || {
            let done = settled().iter().all(|(ok, _)| *ok);
            async move { done }
        },
    )
    .await;
    for (ok, what) in settled() {
        assert!(ok, "{what}");
    }
    gw_orders.shutdown().await;
    gw_billing.shutdown().await;
    ctl.shutdown();
}

/// An ADS server that answers every type at once but the Listener type, which it answers
/// only when released: a first push that reaches the gateway in parts.
#[derive(Clone)]
struct HoldsListeners {
    resources: membrane_xds::compile::Resources,
    release: std::sync::Arc<tokio::sync::Notify>,
}

impl HoldsListeners {
    fn answer(
        &self,
        type_url: &str,
        nonce: u64,
    ) -> membrane_xds::proto::envoy::service::discovery::v3::DeltaDiscoveryResponse {
        use membrane_xds::proto::envoy::service::discovery::v3 as ds;
        ds::DeltaDiscoveryResponse {
            system_version_info: format!("v{nonce}"),
            type_url: type_url.to_owned(),
            nonce: nonce.to_string(),
            resources: self
                .resources
                .iter()
                .filter(|((t, _), _)| t == type_url)
                .map(|((_, name), v)| ds::Resource {
                    name: name.clone(),
                    version: v.version.clone(),
                    resource: Some(v.resource.clone()),
                    aliases: Vec::new(),
                })
                .collect(),
            removed_resources: Vec::new(),
        }
    }
}

#[tonic::async_trait]
impl membrane_xds::proto::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService for HoldsListeners {
    type StreamAggregatedResourcesStream = membrane_xds::server::ResponseStream<
        membrane_xds::proto::envoy::service::discovery::v3::DiscoveryResponse,
    >;
    type DeltaAggregatedResourcesStream = membrane_xds::server::ResponseStream<
        membrane_xds::proto::envoy::service::discovery::v3::DeltaDiscoveryResponse,
    >;

    async fn stream_aggregated_resources(
        &self,
        _: tonic::Request<
            tonic::Streaming<membrane_xds::proto::envoy::service::discovery::v3::DiscoveryRequest>,
        >,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("delta only"))
    }

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<
            tonic::Streaming<
                membrane_xds::proto::envoy::service::discovery::v3::DeltaDiscoveryRequest,
            >,
        >,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let me = self.clone();
        let mut input = request.into_inner();
        tokio::spawn(async move {
            let mut nonce = 0;
            while let Ok(Some(req)) = input.message().await {
                if !req.response_nonce.is_empty() {
                    continue; // an ACK
                }
                nonce += 1;
                let answer = me.answer(&req.type_url, nonce);
                let (tx, me) = (tx.clone(), me.clone());
                tokio::spawn(async move {
                    if answer.type_url == membrane_xds::compile::TYPE_LISTENER {
                        me.release.notified().await;
                    }
                    let _ = tx.send(Ok(answer)).await;
                });
            }
        });
        Ok(tonic::Response::new(membrane_xds::server::ChannelStream(rx)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_is_ready_only_once_every_type_has_arrived() {
    let (w, _a) = catalog_world("partial").await;
    let server = HoldsListeners {
        resources: (*compile_world(&w).gateways["orders"]).clone(),
        release: Default::default(),
    };
    let release = server.release.clone();
    let url = serve_ads(server);
    let gw = start_gateway(&url, &w.dir.join("state"));
    let c = client_h1();
    let config_url = format!("http://{}/config", gw.admin_addr());
    // The clusters, trust bundles and JWT providers are applied; the listeners are not in.
    until_config(gw.admin_addr(), "all but the listeners applied", |cfg| {
        cfg["xds"]["applied_generation"].as_u64() > Some(1)
            && cfg["xds"]["awaiting"] == json!([membrane_xds::compile::TYPE_LISTENER])
    })
    .await;
    let ready_url = format!("http://{}/ready", gw.admin_addr());
    assert_eq!(
        get(&c, &ready_url, "a", &[]).await.status,
        503,
        "ready without a listener"
    );
    release.notify_one();
    eventually("ready with the listeners", Duration::from_secs(20), || {
        ready(gw.admin_addr())
    })
    .await;
    assert_eq!(
        get(&c, &config_url, "a", &[]).await.json()["xds"]["awaiting"],
        json!([])
    );
    until("the north listener serves", &w, "/catalog/1", (200, "a")).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_every_listener_was_nacked_is_not_ready() {
    let (w, _a) = catalog_world("nacked").await;
    // Every listener arrives as bytes that are no Listener.
    let mut resources = (*compile_world(&w).gateways["orders"]).clone();
    for ((t, _), v) in resources.iter_mut() {
        if t == membrane_xds::compile::TYPE_LISTENER {
            v.resource.value = vec![0xff, 0xff, 0xff];
            v.version = "broken".into();
        }
    }
    let server = HoldsListeners {
        resources,
        release: Default::default(),
    };
    server.release.notify_one();
    let url = serve_ads(server);
    let gw = start_gateway(&url, &w.dir.join("state"));
    let c = client_h1();
    until_config(
        gw.admin_addr(),
        "every type answered and the listeners NACKed",
        |cfg| {
            cfg["xds"]["awaiting"] == json!([])
                && cfg["xds"]["nacks"]
                    .as_object()
                    .is_some_and(|n| n.keys().any(|k| k.contains("Listener")))
        },
    )
    .await;
    let ready_url = format!("http://{}/ready", gw.admin_addr());
    assert_eq!(
        get(&c, &ready_url, "a", &[]).await.status,
        503,
        "ready with no listener bound"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_directory_belongs_to_one_node() {
    let (w, _a) = catalog_world("owner").await;
    let ctl = start_control(&w, "127.0.0.1:0".parse().unwrap()).await;
    let url = format!("http://{}", ctl.addr);
    let state = w.dir.join("state");
    let gw = start_gateway(&url, &state);
    eventually("the gateway is ready", Duration::from_secs(20), || {
        ready(gw.admin_addr())
    })
    .await;
    gw.shutdown().await;
    // Another node pointed at the same directory would boot orders/gw-1's listeners.
    let e = xds_client::start(XdsOptions {
        url: url.clone(),
        also: Vec::new(),
        node: "orders/gw-2".into(),
        state_dir: state.clone(),
        admin: "127.0.0.1:0".parse().unwrap(),
        security: membrane_proxy::xds_client::channel::Security::Plaintext,
        join_token: None,
        tracing: None,
        locality: None,
    })
    .err()
    .expect("refused");
    let msg = e.to_string();
    assert!(
        msg.contains(&state.display().to_string()) && msg.contains("`orders/gw-1`"),
        "{msg}"
    );
    // A directory that cannot be made is named in the error.
    let file = w.dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let e = xds_client::start(XdsOptions {
        url,
        also: Vec::new(),
        node: "orders/gw-3".into(),
        state_dir: file.join("state"),
        admin: "127.0.0.1:0".parse().unwrap(),
        security: membrane_proxy::xds_client::channel::Security::Plaintext,
        join_token: None,
        tracing: None,
        locality: None,
    })
    .err()
    .expect("refused");
    let msg = e.to_string();
    assert!(
        msg.contains("a-file/state") && msg.contains("cannot create it"),
        "{msg}"
    );
}

/// The control server traces each spec change: `spec change` from the file event to the
/// last ACK, with `compile` and `push` as its children, the push naming the gateway that
/// ACKed; a refused change ends at `compile` with its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_server_traces_a_spec_change_from_file_event_to_push() {
    use common::otlp::{Receiver, attr_int};
    let w = world("ctltrace");
    let (rx, collector) = Receiver::start().await;
    let a = Upstream::start("a").await;
    std::fs::write(
        w.spec.join("orders.yaml"),
        cell_spec(w.north, &[("catalog", "/catalog", a.addr)]),
    )
    .unwrap();
    let ctl = control::start(ControlOptions {
        spec_dir: w.spec.clone(),
        store: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: None,
        cert_dir: w.pki.clone(),
        trust_bundle_pem: std::fs::read_to_string(w.pki.join("ca.pem")).unwrap(),
        debounce: Duration::from_millis(50),
        ca: None,
        otlp_endpoint: Some(format!("http://{collector}")),
        api: None,
        audit_log: None,
    })
    .await
    .unwrap();
    let state = w.dir.join("state");
    let gw = start_gateway(&format!("http://{}", ctl.addr), &state);
    until("the first generation serves", &w, "/catalog/1", (200, "a")).await;

    // A change: a second endpoint.
    let b = Upstream::start("b").await;
    std::fs::write(
        w.spec.join("orders.yaml"),
        cell_spec(
            w.north,
            &[("catalog", "/catalog", a.addr), ("extra", "/extra", b.addr)],
        ),
    )
    .unwrap();
    ctl.reload();
    until("the change serves", &w, "/extra/1", (200, "b")).await;
    let roots = rx
        .wait_for("the change's trace", 1, |g| {
            g.span.name == "spec change" && g.span.status.as_ref().is_none_or(|s| s.code != 2)
        })
        .await;
    let root = &roots[0].span;
    let all = rx.spans();
    let child = |name: &str| {
        all.iter()
            .find(|g| g.span.name == name && g.span.parent_span_id == root.span_id)
            .unwrap_or_else(|| panic!("no {name} under the change: {all:#?}"))
            .span
            .clone()
    };
    let (compile, push) = (child("compile"), child("push"));
    assert_eq!(compile.trace_id, root.trace_id);
    assert_eq!(attr_int(&push, "membrane.gateways"), Some(1));
    assert_eq!(attr_int(&push, "membrane.gateways_acked"), Some(1));
    assert!(root.start_time_unix_nano <= compile.start_time_unix_nano);
    assert!(compile.end_time_unix_nano <= push.end_time_unix_nano);
    assert!(push.end_time_unix_nano <= root.end_time_unix_nano);
    assert!(
        roots[0]
            .resource
            .contains(&("service.name".into(), "membrane-control".into()))
    );

    // A refused change: the trace ends at `compile`, with the error.
    std::fs::write(w.spec.join("orders.yaml"), "kind: Cell\nname: [\n").unwrap();
    ctl.reload();
    let refused = rx
        .wait_for("the refused change's trace", 1, |g| {
            g.span.name == "spec change" && g.span.status.as_ref().is_some_and(|s| s.code == 2)
        })
        .await;
    assert!(
        refused[0]
            .span
            .status
            .as_ref()
            .is_some_and(|s| s.message.contains("orders.yaml")),
        "{:?}",
        refused[0].span.status
    );
    gw.shutdown().await;
    ctl.shutdown();
}

/// Issue 14 over xDS: a cell spec's localities and resilience blocks reach a gateway that
/// says where it runs; its zone takes the traffic, and when that zone's upstream dies the
/// other region takes over without a failed request (retries on connect failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localities_and_retries_from_a_spec_steer_an_xds_gateway() {
    let w = world("locality");
    let near = membrane_proxy::testing::faults::FaultyUpstream::start("near").await;
    let far = membrane_proxy::testing::faults::FaultyUpstream::start("far").await;
    let spec = format!(
        "kind: Cell\nname: orders\norg: acme\nproject: orders\nenvironment: dev\ngateway:\n  north: {{address: '{}'}}\ncomponents:\n  - name: api\n    endpoints:\n      - name: catalog\n        base_path: /catalog\n        visibility: public\n        jwt: idp\n        localities:\n          - {{region: eu, zone: eu-a, upstreams: ['{}']}}\n          - {{region: us, zone: us-b, upstreams: ['{}']}}\n        retries: {{max_retries: 2}}\n        outlier_detection: {{consecutive_gateway_errors: 1}}\n",
        w.north, near.addr, far.addr
    );
    std::fs::write(w.spec.join("orders.yaml"), spec).unwrap();
    let ctl = start_control(&w, "127.0.0.1:0".parse().unwrap()).await;
    let gw = xds_client::start(XdsOptions {
        url: format!("http://{}", ctl.addr),
        also: Vec::new(),
        node: "orders/gw-1".into(),
        state_dir: w.dir.join("state"),
        admin: "127.0.0.1:0".parse().unwrap(),
        security: membrane_proxy::xds_client::channel::Security::Plaintext,
        join_token: None,
        tracing: None,
        locality: Some(membrane_proxy::config::LocalityConfig {
            region: Some("eu".into()),
            zone: Some("eu-a".into()),
        }),
    })
    .unwrap();
    eventually("the gateway routes", Duration::from_secs(20), || async {
        matches!(call(&w, "/catalog/0").await, Ok((200, _)))
    })
    .await;
    until_config(gw.admin_addr(), "retries shown in /config", |v| {
        v.to_string().contains("max_retries")
    })
    .await;
    let before = near.received();
    for i in 0..10 {
        let got = call(&w, &format!("/catalog/{i}")).await.unwrap();
        assert_eq!(got.0, 200);
    }
    assert_eq!(near.received() - before, 10, "the own zone takes it all");
    assert_eq!(far.received(), 0);

    // The zone dies (listener and open connections): the other region answers, and no
    // request fails on the way (a connect failure or reset is retried elsewhere).
    near.kill();
    for i in 0..10 {
        let got = call(&w, &format!("/catalog/after/{i}")).await.unwrap();
        assert_eq!(got.0, 200, "request {i} after the zone died");
    }
    assert_eq!(far.received(), 10, "the other region takes over");
    gw.shutdown().await;
    ctl.shutdown();
}

/// Join tokens kept in etcd: two control servers on one prefix (two `Tokens::Etcd`) accept
/// a token once between them, even presented to both at once; a token presented for
/// another cell is refused and not used up; `membrane control token --store` mints one
/// they redeem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_in_etcd_are_redeemed_once_across_control_servers() {
    use membrane_xds::ca::shared_tokens::Tokens;
    use membrane_xds::ca::tokens::TokenError;
    let Some(etcd) = common::etcd::Etcd::start("tokens") else {
        return;
    };
    let url = etcd.url("membrane/prod");
    let replica = || Tokens::Etcd(membrane_xds::store::Etcd::parse(&url).unwrap());
    let (one, two) = (replica(), replica());
    let t = one.mint("orders", Duration::from_secs(600)).await.unwrap();
    assert!(matches!(
        two.redeem(&t, "billing").await,
        Err(TokenError::WrongCell { .. })
    ));
    let (a, b) = tokio::join!(one.redeem(&t, "orders"), two.redeem(&t, "orders"));
    assert!(
        a.is_ok() != b.is_ok(),
        "accepted once between them: {a:?} {b:?}"
    );
    assert!(matches!(a.err().or(b.err()), Some(TokenError::Reused(_))));
    assert!(matches!(
        one.redeem("mbt_AAAA", "orders").await,
        Err(TokenError::Unknown)
    ));
    let gone = one.mint("orders", Duration::ZERO).await.unwrap();
    assert!(matches!(
        two.redeem(&gone, "orders").await,
        Err(TokenError::Expired(_))
    ));
    // The specs' prefix holds no token keys: a spec load sees none of them.
    let docs = membrane_xds::store::Etcd::parse(&url)
        .unwrap()
        .documents()
        .await
        .unwrap();
    assert!(docs.is_empty(), "{docs:?}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["control", "token", "--store", &url, "--cell", "orders"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap();
    two.redeem(minted.trim(), "orders").await.unwrap();
}
