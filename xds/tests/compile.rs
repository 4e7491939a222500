//! The compiler on the example cells: what each gateway gets, and versions that change only
//! for the resources a spec change touches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use membrane_xds::compile::{self, Compiled, Options, TYPE_CLUSTER, TYPE_LISTENER};
use membrane_xds::proto::membrane::v1 as pb;
use membrane_xds::spec::{check, load_dir};
use prost::Message;
use std::path::{Path, PathBuf};

fn copy_examples(tag: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cells");
    let dir = std::env::temp_dir().join(format!("membrane-compile-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.join("demo-jwks.json"), r#"{"keys": []}"#).unwrap();
    dir
}

fn compile_dir(dir: &Path) -> Compiled {
    let specs = load_dir(dir).unwrap();
    assert_eq!(check(&specs), vec![]);
    compile::compile(
        &specs,
        &Options {
            spec_dir: dir.to_owned(),
            cert_dir: PathBuf::from("/certs"),
            trust_bundle_pem: "-----BEGIN CERTIFICATE-----\n...\n".into(),
            own_svid: false,
            revoked: Vec::new(),
        },
    )
    .unwrap()
}

fn listener(c: &Compiled, cell: &str, name: &str) -> pb::Listener {
    let r = &c.gateways[cell][&(TYPE_LISTENER.to_owned(), name.to_owned())];
    pb::Listener::decode(r.resource.value.as_slice()).unwrap()
}

#[test]
fn each_gateway_gets_its_cells_resources() {
    let c = compile_dir(&copy_examples("shape"));
    assert_eq!(
        c.gateways.keys().collect::<Vec<_>>(),
        ["analytics", "billing", "orders"]
    );

    let north = listener(&c, "orders", "north");
    assert_eq!(north.routes.len(), 1);
    assert_eq!(north.routes[0].path_prefix, "/catalog");
    assert_eq!(north.routes[0].jwt_provider, "acme-idp");
    assert!(north.routes[0].jwt_required);
    assert_eq!(
        north.tls.as_ref().unwrap().certificate_file,
        "/certs/orders.pem"
    );

    let west = listener(&c, "orders", "west");
    let paths: Vec<_> = west.routes.iter().map(|r| r.path_prefix.as_str()).collect();
    assert_eq!(paths, ["/catalog", "/orders"]);
    let tls = west.tls.unwrap();
    assert_eq!(tls.client_auth, pb::ClientAuth::Require as i32);
    assert_eq!(tls.trust_domains, ["acme.internal"]);
    let authz = west.authorization.unwrap();
    assert_eq!(authz.default_effect, pb::Effect::Deny as i32);
    assert_eq!(authz.rules[0].name, "billing-reads-orders");
    assert_eq!(
        authz.rules[0].peer_spiffe_ids,
        ["spiffe://acme.internal/org/acme/env/dev/cell/billing"]
    );

    // Billing (no west policy) lets the org's cells of its environment in.
    let bw = listener(&c, "billing", "west");
    assert_eq!(
        bw.authorization.unwrap().rules[0].peer_prefixes,
        ["spiffe://acme.internal/org/acme/env/dev/"]
    );

    // Billing's east reaches orders' exposed endpoints through orders' west, with mTLS.
    let east = listener(&c, "billing", "east");
    let routes: Vec<_> = east
        .routes
        .iter()
        .map(|r| {
            (
                r.path_prefix.as_str(),
                r.cluster.as_str(),
                r.prefix_rewrite.as_str(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("/orders/catalog", "cell:orders", "/catalog"),
            ("/orders/orders", "cell:orders", "/orders"),
            ("/", "", "")
        ]
    );
    let cl = &c.gateways["billing"][&(TYPE_CLUSTER.to_owned(), "cell:orders".to_owned())];
    let cl = pb::Cluster::decode(cl.resource.value.as_slice()).unwrap();
    assert_eq!(cl.endpoints, ["127.0.0.1:9443"]);
    let up = cl.tls.unwrap();
    assert_eq!(
        up.spiffe_id,
        "spiffe://acme.internal/org/acme/env/dev/cell/orders"
    );
    assert_eq!(up.certificate_file, "/certs/billing.pem");

    // Analytics exposes nothing and has only east; its project endpoint is nowhere.
    assert!(!c.gateways["orders"].keys().any(|(_, n)| n.contains("jobs")));
    let ae = listener(&c, "analytics", "east");
    assert!(ae.routes.iter().any(|r| r.path_prefix == "/orders/orders"));
}

#[test]
fn versions_are_content_hashes_and_change_only_where_the_spec_did() {
    let dir = copy_examples("versions");
    let a = compile_dir(&dir);
    assert_eq!(a, compile_dir(&dir), "deterministic");

    let orders = std::fs::read_to_string(dir.join("orders.yaml")).unwrap();
    std::fs::write(
        dir.join("orders.yaml"),
        orders.replace("127.0.0.1:18102", "127.0.0.1:18112"),
    )
    .unwrap();
    let b = compile_dir(&dir);
    let mut changed = Vec::new();
    for (cell, res) in &a.gateways {
        for (key, v) in res.iter() {
            if b.gateways[cell][key].version != v.version {
                changed.push((cell.as_str(), key.1.as_str()));
            }
        }
    }
    assert_eq!(changed, [("orders", "local:orders")]);
}

/// A listener's access log in a cell spec reaches its gateway; a field that is not one is
/// refused by the check with its position.
#[test]
fn an_access_log_in_a_spec_reaches_the_listener_and_bad_fields_are_refused() {
    let dir = copy_examples("access-log");
    let orders = dir.join("orders.yaml");
    let text = std::fs::read_to_string(&orders).unwrap();
    let with_log = text.replace(
        "  north: {address: \"127.0.0.1:8443\"}",
        "  north:\n    address: \"127.0.0.1:8443\"\n    access_log: {to: stdout, fields: [status, trace_id], sample: 0.25}",
    );
    assert_ne!(with_log, text, "the example's north line moved");
    std::fs::write(&orders, &with_log).unwrap();
    let c = compile_dir(&dir);
    let log = listener(&c, "orders", "north").access_log.unwrap();
    assert_eq!(log.to, "stdout");
    assert_eq!(log.fields, ["status", "trace_id"]);
    assert_eq!(log.sample, Some(0.25));
    assert!(listener(&c, "orders", "west").access_log.is_none());

    std::fs::write(&orders, with_log.replace("trace_id]", "colour]")).unwrap();
    let errors = check(&load_dir(&dir).unwrap());
    let text = format!("{errors:?}");
    assert!(
        text.contains("gateway.north.access_log.fields[1]") && text.contains("colour"),
        "{text}"
    );
}

#[test]
fn an_endpoints_resilience_and_localities_reach_its_cluster() {
    let dir = copy_examples("resilience");
    let orders = dir.join("orders.yaml");
    let text = std::fs::read_to_string(&orders).unwrap();
    let with = text.replace(
        "        upstreams: [\"127.0.0.1:18101\"]\n",
        concat!(
            "        upstreams: [\"127.0.0.1:18101\"]\n",
            "        localities:\n",
            "          - {region: eu, zone: eu-a, upstreams: [\"127.0.0.1:18111\"]}\n",
            "          - {region: us, upstreams: [\"127.0.0.1:18121\", \"127.0.0.1:18122\"]}\n",
            "        failover_healthy_percent: 60\n",
            "        retries: {max_retries: 3, retry_on: [reset, 503], per_try_timeout: 200ms}\n",
            "        outlier_detection: {consecutive_5xx: 3, base_ejection_time: 10s}\n",
            "        circuit_breakers: {max_requests: 100}\n",
            "        health_check: {http_path: /healthz, interval: 2s}\n",
        ),
    );
    assert_ne!(with, text, "the example's catalog upstream moved");
    std::fs::write(&orders, &with).unwrap();
    let c = compile_dir(&dir);
    let key = (TYPE_CLUSTER.to_owned(), "local:catalog".to_owned());
    let r = &c.gateways["orders"][&key];
    let cl = pb::Cluster::decode(r.resource.value.as_slice()).unwrap();
    let retries = cl.retries.unwrap();
    assert_eq!(retries.max_retries, Some(3));
    assert_eq!(retries.retry_on, ["reset", "503"]);
    assert_eq!(retries.per_try_timeout_ms, Some(200));
    let o = cl.outlier_detection.unwrap();
    assert_eq!(o.consecutive_5xx, Some(3));
    assert_eq!(o.base_ejection_time_ms, Some(10_000));
    assert_eq!(cl.circuit_breakers.unwrap().max_requests, Some(100));
    let hc = cl.health_check.unwrap();
    assert_eq!(
        (hc.http_path.as_str(), hc.interval_ms),
        ("/healthz", Some(2000))
    );
    let zones: Vec<_> = cl
        .localities
        .iter()
        .map(|l| (l.region.as_str(), l.zone.as_str(), l.endpoints.len()))
        .collect();
    assert_eq!(zones, [("eu", "eu-a", 1), ("us", "", 2)]);
    assert_eq!(cl.failover_healthy_percent, Some(60));
    // An endpoint without the blocks has none of them.
    let plain = &c.gateways["orders"][&(TYPE_CLUSTER.to_owned(), "local:orders".to_owned())];
    let plain = pb::Cluster::decode(plain.resource.value.as_slice()).unwrap();
    assert!(plain.retries.is_none() && plain.health_check.is_none());

    // A misspelt field is refused with its place.
    std::fs::write(&orders, with.replace("max_retries: 3", "max_retry: 3")).unwrap();
    let err = format!("{:?}", load_dir(&dir).map(|s| check(&s)));
    assert!(err.contains("max_retry"), "{err}");
    // What a gateway would refuse, the spec check refuses first, naming the field.
    std::fs::write(
        &orders,
        with.replace("retry_on: [reset, 503]", "retry_on: [reset, 404]"),
    )
    .unwrap();
    let errors = format!("{:?}", check(&load_dir(&dir).unwrap()));
    assert!(
        errors.contains("endpoints[0].retries.retry_on[1]") && errors.contains("5xx"),
        "{errors}"
    );
    std::fs::write(&orders, with.replace("interval: 2s", "interval: 0s")).unwrap();
    let errors = format!("{:?}", check(&load_dir(&dir).unwrap()));
    assert!(errors.contains("health_check.interval"), "{errors}");
}

/// Environments are isolated: a dev cell's east gateway gets no route to a prod cell of
/// the same org, and a west listener admits only its environment's peers, by default and
/// in each allowing rule of a policy that names no cells.
#[test]
fn environments_do_not_reach_each_other() {
    let dir = copy_examples("envs");
    let prod = "kind: Cell\nname: billing-prod\norg: acme\nproject: billing\nenvironment: prod\ngateway:\n  east: {address: '127.0.0.1:9544'}\n";
    std::fs::write(dir.join("billing-prod.yaml"), prod).unwrap();
    let c = compile_dir(&dir);
    let env = |cell: &str| {
        let specs = load_dir(&dir).unwrap();
        specs
            .cells()
            .find(|(_, c)| c.name.value() == cell)
            .map(|(_, c)| c.environment.clone())
            .unwrap()
    };
    assert_ne!(env("billing-prod"), env("orders"));
    // billing (the examples' environment) has a cluster to orders' west; billing-prod
    // has none.
    let to_orders = |cell: &str| {
        c.gateways[cell].contains_key(&(TYPE_CLUSTER.to_owned(), "cell:orders".to_owned()))
    };
    assert!(to_orders("billing"));
    assert!(!to_orders("billing-prod"));
    // `calls` keeps an east listener to the cells named: analytics calls orders only, so
    // it has no cluster to billing, whose invoices are exposed to the org; without
    // `calls`, it has one.
    let cell_clusters = |c: &Compiled, cell: &str| -> Vec<String> {
        c.gateways[cell]
            .keys()
            .filter(|(t, n)| t == TYPE_CLUSTER && n.starts_with("cell:"))
            .map(|(_, n)| n.clone())
            .collect()
    };
    assert_eq!(cell_clusters(&c, "analytics"), ["cell:orders"]);
    let a = dir.join("analytics.yaml");
    let text = std::fs::read_to_string(&a).unwrap();
    std::fs::write(&a, text.replace("calls: [orders]\n", "")).unwrap();
    let all = compile_dir(&dir);
    assert_eq!(
        cell_clusters(&all, "analytics"),
        ["cell:billing", "cell:orders"]
    );
    // orders' west: every allowing rule is held to orders' environment.
    let west = listener(&c, "orders", "west");
    let prefix = format!("spiffe://acme.internal/org/acme/env/{}/", env("orders"));
    for r in &west.authorization.unwrap().rules {
        if r.effect == pb::Effect::Allow as i32 {
            assert!(
                r.peer_spiffe_ids.iter().all(|id| id.starts_with(&prefix))
                    && r.peer_prefixes.iter().all(|p| *p == prefix)
                    && !(r.peer_spiffe_ids.is_empty() && r.peer_prefixes.is_empty()),
                "{r:?}"
            );
        }
    }
}

/// The incremental compiler gives exactly what a fresh compile gives, after every kind of
/// change, and keeps (the same allocation of) the resources of gateways the change does
/// not touch.
#[test]
fn the_incremental_compiler_matches_a_fresh_compile() {
    let dir = copy_examples("incremental");
    let opts = Options {
        spec_dir: dir.clone(),
        cert_dir: PathBuf::from("/certs"),
        trust_bundle_pem: "-----BEGIN CERTIFICATE-----\n...\n".into(),
        own_svid: false,
        revoked: Vec::new(),
    };
    let mut cache = membrane_xds::spec::ParseCache::default();
    let mut compiler = compile::Compiler::default();
    let mut last = compiler
        .compile(&cache.validate_dir(&dir).unwrap(), &opts)
        .unwrap();
    // (file, from, to, the gateways whose resources must be compiled again)
    let edits: [(&str, &str, &str, &[&str]); 5] = [
        // orders' west address: orders, and the east listeners that route to it.
        (
            "orders.yaml",
            "127.0.0.1:9443",
            "127.0.0.1:9543",
            &["analytics", "billing", "orders"],
        ),
        // billing's document: billing, and orders, whose west policy names billing.
        (
            "billing.yaml",
            "name: invoices\n",
            "name: invoices\n      # a note\n",
            &["billing", "orders"],
        ),
        // A rate limit on billing: billing only.
        ("billing.yaml", "requests: 50", "requests: 51", &["billing"]),
        // The JWT provider: only the gateways that use it (orders' north) get it again.
        ("identity.yaml", "acme-idp", "acme-idp", &["orders"]),
        // A comment in analytics: analytics only (its resources come out the same).
        (
            "analytics.yaml",
            "# The `analytics` cell",
            "# The analytics cell",
            &["analytics"],
        ),
    ];
    for (i, (file, from, to, touched)) in edits.into_iter().enumerate() {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "edit {i}: {from} in {file}");
        let edited = if from == to {
            // Same text, one more audience: a change to the provider's document.
            text.replace("audiences: [", "audiences: [extra, ")
        } else {
            text.replacen(from, to, 1)
        };
        assert_ne!(edited, text, "edit {i} changes {file}");
        std::fs::write(&path, edited).unwrap();
        let next = compiler
            .compile(&cache.validate_dir(&dir).unwrap(), &opts)
            .unwrap();
        assert_eq!(next, compile_dir(&dir), "edit {i}: incremental = fresh");
        for (cell, res) in &next.gateways {
            let kept = std::sync::Arc::ptr_eq(res, &last.gateways[cell]);
            assert_eq!(
                !kept,
                touched.contains(&cell.as_str()),
                "edit {i} ({file}): {cell} compiled again = {}",
                !kept
            );
        }
        last = next;
    }
}
