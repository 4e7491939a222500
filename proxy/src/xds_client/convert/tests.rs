//! The typed bridge: resources to the bootstrap structs and back through the file format,
//! refusals naming resource and field, compile errors pinned on their resource.

use super::*;
use crate::compiler::{self, Loaded};
use crate::metrics::Metrics;

fn any<M: Message>(type_url: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.to_owned(),
        value: m.encode_to_vec(),
    }
}

fn key(t: &str, name: &str) -> Key {
    (t.to_owned(), name.to_owned())
}

fn route(name: &str, prefix: &str, cluster: &str) -> pb::Route {
    pb::Route {
        name: name.into(),
        path_prefix: prefix.into(),
        cluster: cluster.into(),
        ..Default::default()
    }
}

/// A cell's worth of resources: a bundle, a cluster, a provider and a listener using them.
fn resources() -> BTreeMap<Key, prost_types::Any> {
    let mut r = BTreeMap::new();
    r.insert(
        key(TYPE_TRUST_BUNDLE, "org-ca"),
        any(
            TYPE_TRUST_BUNDLE,
            &pb::TrustBundle {
                name: "org-ca".into(),
                pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
                revoked: Vec::new(),
            },
        ),
    );
    r.insert(
        key(TYPE_CLUSTER, "orders"),
        any(
            TYPE_CLUSTER,
            &pb::Cluster {
                name: "orders".into(),
                endpoints: vec!["127.0.0.1:9".into()],
                protocol: pb::Protocol::Http2 as i32,
                tls: Some(pb::UpstreamTls {
                    sni: "orders.acme".into(),
                    trust_bundle: "org-ca".into(),
                    spiffe_id: "spiffe://acme/orders".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    );
    r.insert(
        key(TYPE_JWT_PROVIDER, "idp"),
        any(
            TYPE_JWT_PROVIDER,
            &pb::JwtProvider {
                name: "idp".into(),
                issuer: "https://idp.test".into(),
                audiences: vec!["orders".into()],
                jwks_url: "https://idp.test/jwks".into(),
                ..Default::default()
            },
        ),
    );
    let mut guarded = route("orders", "/orders", "orders");
    guarded.host = "api.test".into();
    guarded.jwt_provider = "idp".into();
    guarded.jwt_required = true;
    guarded.rate_limit = Some(pb::RateLimit {
        requests: 10,
        per_seconds: 1,
        burst: 0,
        key: "peer".into(),
    });
    r.insert(
        key(TYPE_LISTENER, "north"),
        any(
            TYPE_LISTENER,
            &pb::Listener {
                name: "north".into(),
                address: "127.0.0.1:8443".into(),
                protocol: pb::Protocol::Http1 as i32,
                tls: None,
                routes: vec![guarded, route("rest", "/", "")],
                authorization: Some(pb::Authorization {
                    default_effect: pb::Effect::Deny as i32,
                    dry_run: false,
                    rules: vec![pb::Rule {
                        name: "peers".into(),
                        effect: pb::Effect::Allow as i32,
                        peer_prefixes: vec!["spiffe://acme/".into()],
                        methods: vec!["GET".into()],
                        path_prefixes: vec!["/orders".into()],
                        claims: vec![pb::ClaimMatch {
                            claim: "scope".into(),
                            contains: "read".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                }),
                access_log: Some(pb::AccessLog {
                    to: "stderr".into(),
                    fields: vec!["status".into(), "trace_id".into()],
                    sample: Some(0.5),
                }),
            },
        ),
    );
    r
}

fn admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15000))
}

#[test]
fn resources_become_the_typed_bootstrap_and_survive_the_state_file() {
    let dir = Path::new("/state");
    let (conv, refused) = convert(&resources(), admin(), dir);
    assert!(refused.is_empty());
    let cfg = &conv.config;
    let l = &cfg.listeners[0];
    assert_eq!(l.protocol, ListenerProtocol::Http1);
    let hosts: Vec<_> = l
        .virtual_hosts
        .iter()
        .map(|v| (v.name.as_str(), v.routes.len()))
        .collect();
    assert_eq!(hosts, [("api.test", 1), ("all", 1)]);
    let r = &l.virtual_hosts[0].routes[0];
    assert_eq!(r.rate_limit.as_ref().unwrap().key, RateKeyConfig::Peer);
    assert!(r.jwt.as_ref().unwrap().required);
    // The access log, as the spec gave it.
    assert_eq!(l.access_log, crate::access_log::AccessLogTarget::Stderr);
    let fields: Vec<&str> = l
        .access_log_fields
        .iter()
        .map(|f| f.value().as_str())
        .collect();
    assert_eq!(fields, ["status", "trace_id"]);
    assert_eq!(l.access_log_sample, 0.5);
    let rest = &l.virtual_hosts[1].routes[0];
    assert_eq!(*rest.direct_response.as_ref().unwrap().status.value(), 404);
    let c = &cfg.clusters[0];
    assert_eq!(c.protocol, UpstreamProtocol::Http2);
    let bundle = c.tls.as_ref().unwrap().trust_bundle.as_ref().unwrap();
    assert_eq!(bundle.value(), &dir.join("trust-org-ca.pem"));
    assert!(conv.bundles.contains_key(bundle.value()));
    assert!(matches!(cfg.jwt_providers[0].jwks, JwksSource::Url(_)));
    // The state file is the structs serialized; read back as a bootstrap file is read, it
    // is the same configuration.
    let text = serde_json::to_string_pretty(cfg).unwrap();
    let back = crate::config::parse(Path::new("generation.json"), &text).unwrap();
    assert_eq!(serde_json::to_string_pretty(&back).unwrap(), text);
}

#[test]
fn a_resource_that_does_not_convert_is_refused_with_its_field_and_the_rest_converts() {
    let mut r = resources();
    let mut bad_key = pb::Listener {
        name: "west".into(),
        address: "127.0.0.1:8444".into(),
        routes: vec![route("a", "/", "orders")],
        ..Default::default()
    };
    bad_key.routes[0].rate_limit = Some(pb::RateLimit {
        requests: 1,
        per_seconds: 1,
        burst: 0,
        key: "cookie".into(),
    });
    r.insert(key(TYPE_LISTENER, "west"), any(TYPE_LISTENER, &bad_key));
    let no_address = pb::Listener {
        name: "east".into(),
        address: "east".into(),
        ..Default::default()
    };
    r.insert(key(TYPE_LISTENER, "east"), any(TYPE_LISTENER, &no_address));
    let unknown_bundle = pb::Cluster {
        name: "billing".into(),
        endpoints: vec!["127.0.0.1:9".into()],
        tls: Some(pb::UpstreamTls {
            sni: "billing".into(),
            trust_bundle: "other-ca".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    r.insert(
        key(TYPE_CLUSTER, "billing"),
        any(TYPE_CLUSTER, &unknown_bundle),
    );
    let unknown_protocol = pb::Cluster {
        name: "odd".into(),
        protocol: 7,
        ..Default::default()
    };
    r.insert(
        key(TYPE_CLUSTER, "odd"),
        any(TYPE_CLUSTER, &unknown_protocol),
    );
    r.insert(
        key(TYPE_JWT_PROVIDER, "garbage"),
        prost_types::Any {
            type_url: TYPE_JWT_PROVIDER.into(),
            value: vec![0xff, 0xff, 0xff],
        },
    );
    let (conv, refused) = convert(&r, admin(), Path::new("/state"));
    let mut got: Vec<(String, String)> = refused
        .into_iter()
        .map(|r| (r.key.1, r.error.to_string()))
        .collect();
    got.sort();
    let want = [
        (
            "billing",
            "field `tls.trust_bundle`: names trust bundle `other-ca`, which the control server has not sent",
        ),
        ("east", "field `address`: `east` is not ip:port"),
        ("garbage", "not a JwtProvider"),
        ("odd", "field `protocol`: 7 is not a known value"),
        (
            "west",
            "field `routes[0].rate_limit.key`: `cookie` is not a key; use client_ip or peer",
        ),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((name, error), (want_name, want_error)) in got.iter().zip(want) {
        assert_eq!(name, want_name);
        assert!(error.starts_with(want_error), "{name}: {error}");
    }
    // The good ones are all there.
    assert_eq!(conv.config.listeners.len(), 1);
    assert_eq!(conv.config.clusters.len(), 1);
    assert_eq!(conv.config.jwt_providers.len(), 1);
}

#[test]
fn a_compile_error_is_pinned_on_the_resource_it_is_in() {
    let mut r = resources();
    let dangling = pb::Listener {
        name: "west".into(),
        address: "127.0.0.1:0".into(),
        routes: vec![route("a", "/", "nowhere")],
        ..Default::default()
    };
    r.insert(key(TYPE_LISTENER, "west"), any(TYPE_LISTENER, &dangling));
    // Inline keys: nothing is fetched.
    r.insert(
        key(TYPE_JWT_PROVIDER, "idp"),
        any(
            TYPE_JWT_PROVIDER,
            &pb::JwtProvider {
                name: "idp".into(),
                jwks_inline: membrane_policy::jwt::Signer::generate(
                    membrane_policy::jwt::Alg::ES256,
                    "k",
                )
                .unwrap()
                .jwks(),
                ..Default::default()
            },
        ),
    );
    let owners = |r: &BTreeMap<Key, prost_types::Any>| {
        let (conv, refused) = convert(r, admin(), Path::new("/state"));
        assert!(refused.is_empty());
        let text = serde_json::to_string(&conv.config).unwrap();
        let loaded = Loaded::gather_with(
            Path::new("/state/generation.json"),
            text,
            conv.config,
            conv.bundles,
        );
        let errors = compiler::compile(&loaded, None, &Metrics::new())
            .err()
            .unwrap();
        errors
            .iter()
            .map(|e| e.owner().and_then(|o| conv.origins.of(o)).cloned())
            .collect::<Vec<_>>()
    };
    // The bundle is not a certificate: the cluster that names it is refused; listeners
    // wait for their clusters.
    assert_eq!(owners(&r), [Some(key(TYPE_CLUSTER, "orders"))]);
    // With a plain cluster, the listener that names a cluster nobody sent is refused, and
    // only it.
    let plain = pb::Cluster {
        name: "orders".into(),
        endpoints: vec!["127.0.0.1:9".into()],
        ..Default::default()
    };
    r.insert(key(TYPE_CLUSTER, "orders"), any(TYPE_CLUSTER, &plain));
    assert_eq!(owners(&r), [Some(key(TYPE_LISTENER, "west"))]);
}

#[test]
fn a_clusters_resilience_and_localities_arrive_as_a_bootstrap_would_write_them() {
    let mut r = resources();
    let orders = pb::Cluster {
        name: "orders".into(),
        endpoints: vec!["127.0.0.1:9".into()],
        retries: Some(pb::RetryPolicy {
            max_retries: Some(3),
            retry_on: vec!["reset".into(), "503".into()],
            per_try_timeout_ms: Some(150),
            ..Default::default()
        }),
        outlier_detection: Some(pb::OutlierDetection {
            consecutive_5xx: Some(2),
            ..Default::default()
        }),
        circuit_breakers: Some(pb::CircuitBreakers {
            max_requests: Some(5),
            ..Default::default()
        }),
        health_check: Some(pb::HealthCheck {
            http_path: "/healthz".into(),
            ..Default::default()
        }),
        localities: vec![pb::LocalityEndpoints {
            region: "eu".into(),
            zone: "eu-a".into(),
            endpoints: vec!["127.0.0.1:10".into()],
        }],
        failover_healthy_percent: Some(60),
        ..Default::default()
    };
    r.insert(key(TYPE_CLUSTER, "orders"), any(TYPE_CLUSTER, &orders));
    let (conv, refused) = convert(&r, admin(), Path::new("/state"));
    let why: Vec<String> = refused.iter().map(|r| r.error.to_string()).collect();
    assert!(why.is_empty(), "{why:?}");
    let c = &conv.config.clusters[0];
    let retries = c.retries.as_ref().unwrap();
    assert_eq!(retries.max_retries, 3);
    assert_eq!(retries.retry_on.len(), 2);
    assert_eq!(
        retries.per_try_timeout.unwrap().0,
        Duration::from_millis(150)
    );
    // Unset on the wire: the bootstrap's default.
    assert_eq!(retries.budget.ratio, 0.2);
    assert_eq!(c.outlier_detection.as_ref().unwrap().consecutive_5xx, 2);
    assert_eq!(c.circuit_breakers.as_ref().unwrap().max_requests, Some(5));
    let hc = c.health_check.as_ref().unwrap();
    assert_eq!(hc.http_path.as_deref(), Some("/healthz"));
    assert_eq!(c.localities[0].zone.as_deref(), Some("eu-a"));
    assert_eq!(c.localities[0].endpoints[0].value(), "127.0.0.1:10");
    assert_eq!(c.failover_healthy_percent, 60);
    // The state file keeps them.
    let text = serde_json::to_string_pretty(&conv.config).unwrap();
    let back = crate::config::parse(Path::new("generation.json"), &text).unwrap();
    assert_eq!(serde_json::to_string_pretty(&back).unwrap(), text);

    let bad = pb::Cluster {
        retries: Some(pb::RetryPolicy {
            retry_on: vec!["sometimes".into()],
            ..Default::default()
        }),
        ..orders
    };
    r.insert(key(TYPE_CLUSTER, "orders"), any(TYPE_CLUSTER, &bad));
    let (_, refused) = convert(&r, admin(), Path::new("/state"));
    let got: Vec<String> = refused.iter().map(|r| r.error.to_string()).collect();
    assert_eq!(
        got,
        [
            "field `retries.retry_on[0]`: `sometimes` is not connect_failure, reset, per_try_timeout or a status"
        ]
    );
}
