//! The compiler's refusals, with the position and field of each mistake.

use super::*;
use crate::config::ConfigError;
use crate::config::Owner;
use crate::metrics::Metrics;
use std::path::Path;

fn loaded(yaml: &str) -> Loaded {
    let file = Path::new("t.yaml");
    let cfg = crate::config::parse(file, yaml).unwrap();
    Loaded::gather(file, yaml.to_owned(), cfg)
}

/// The first mistake, as most tests here look for one.
fn compile_text(yaml: &str) -> Result<Snapshot, ConfigError> {
    compile(&loaded(yaml), None, &Metrics::new()).map_err(|mut e| e.remove(0))
}

const BASE: &str = "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: all\n        domains: ['*']\n        routes:\n";

#[test]
fn an_unknown_cluster_is_named_with_its_position_and_the_known_ones() {
    let yaml = format!(
        "{BASE}          - name: r\n            forward: {{cluster: nope}}\nclusters:\n  - name: backend\n    endpoints: [127.0.0.1:1]\n"
    );
    let e = compile_text(&yaml).err().unwrap().to_string();
    assert!(
        e.starts_with(
            "t.yaml:9:32: field `listeners[0].virtual_hosts[0].routes[0].forward.cluster`"
        ),
        "{e}"
    );
    assert!(
        e.contains("no cluster is named `nope`; defined clusters: [backend]"),
        "{e}"
    );
}

#[test]
fn a_route_with_two_actions_is_refused() {
    let yaml = format!(
        "{BASE}          - name: r\n            direct_response: {{status: 200}}\n            redirect: {{host: x}}\n"
    );
    let e = compile_text(&yaml).err().unwrap().to_string();
    assert!(
        e.contains("exactly one of forward, redirect or direct_response"),
        "{e}"
    );
    assert!(e.starts_with("t.yaml:8:19:"), "{e}");
}

#[test]
fn bad_regex_method_and_status_are_refused() {
    for (route, want) in [
        (
            "match: {path: {regex: '(['}}\n            direct_response: {status: 200}",
            "not a valid regex",
        ),
        (
            "match: {methods: [get]}\n            direct_response: {status: 200}",
            "not an HTTP method",
        ),
        ("redirect: {status: 200}", "is not a redirect"),
        (
            "direct_response: {status: 700}",
            "not a status from 200 to 599",
        ),
        (
            "match: {path: {prefix: api}}\n            direct_response: {status: 200}",
            "must start with `/`",
        ),
    ] {
        let yaml = format!("{BASE}          - name: r\n            {route}\n");
        let e = compile_text(&yaml).err().unwrap().to_string();
        assert!(e.contains(want), "{route}: {e}");
    }
}

#[test]
fn paths_hosts_and_headers_that_no_normalized_request_has_are_refused() {
    for (listener, route, want) in [
        ("", "match: {path: {prefix: '/a//b'}}", "write `/a/b`"),
        ("", "match: {path: {exact: '/a/./b'}}", "write `/a/b`"),
        ("", "match: {path: {prefix: '/%61'}}", "write `/a`"),
        ("", "match: {path: {prefix: '/a%2Fb'}}", "is refused"),
        (
            "",
            "match: {headers: [{name: x_user, present: true}]}",
            "never lets such a header through",
        ),
        (
            "\n    authorization: {rules: [{name: r, action: deny, paths: [{prefix: '/x/../admin'}]}]}",
            "",
            "write `/admin`",
        ),
        (
            "\n    authorization: {rules: [{name: r, action: deny, paths: [{glob: '//admin/**'}]}]}",
            "",
            "would never match",
        ),
        (
            "\n    authorization: {rules: [{name: r, action: deny, hosts: ['a.test:80']}]}",
            "",
            "not a host name",
        ),
        (
            "\n    authorization: {rules: [{name: r, action: deny, headers: [{name: X_User, present: true}]}]}",
            "",
            "never lets such a header through",
        ),
    ] {
        let yaml = format!(
            "listeners:\n  - name: main\n    address: 127.0.0.1:0{listener}\n    virtual_hosts:\n      - name: all\n        domains: ['*']\n        routes:\n          - name: r\n            {route}\n            direct_response: {{status: 200}}\n"
        );
        let e = compile_text(&yaml)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(want), "{listener} {route}: {e}");
    }
    // Allowed with the listener's own settings, and hosts in any case or with the
    // trailing dot are the canonical host.
    let yaml = "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    normalization: {merge_slashes: false, headers_with_underscores: allow}\n    authorization: {rules: [{name: r, action: deny, hosts: ['Admin.Test.']}]}\n    virtual_hosts:\n      - name: all\n        domains: ['Api.Test.']\n        routes:\n          - name: r\n            match: {path: {prefix: '/a//b'}, headers: [{name: x_user, present: true}]}\n            direct_response: {status: 200}\n";
    let snap = compile_text(yaml).unwrap();
    let l = &snap.listeners["main"];
    let rule = &l.authz.as_ref().unwrap().policy.rules()[0];
    assert!(
        matches!(&rule.when[0], membrane_policy::authz::Condition::Host(h) if h == &["admin.test"]),
        "{:?}",
        rule.when
    );
}

#[test]
fn duplicate_names_and_domains_are_refused() {
    let yaml = format!(
        "{BASE}          - name: r\n            direct_response: {{status: 200}}\n          - name: r\n            direct_response: {{status: 200}}\n"
    );
    assert!(
        compile_text(&yaml)
            .err()
            .unwrap()
            .to_string()
            .contains("unique")
    );
    let yaml = "listeners:\n  - name: m\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - {name: a, domains: ['x.com']}\n      - {name: b, domains: ['X.com']}\n";
    let e = compile_text(yaml).err().unwrap().to_string();
    assert!(
        e.contains("domains[0]") && e.contains("another virtual host"),
        "{e}"
    );
}

#[test]
fn a_good_config_compiles_and_keeps_cluster_state_across_generations() {
    let yaml = format!(
        "{BASE}          - name: r\n            forward: {{cluster: backend}}\nclusters:\n  - name: backend\n    endpoints: [127.0.0.1:1]\n"
    );
    let m = Metrics::new();
    let s1 = compile(&loaded(&yaml), None, &m).unwrap();
    let s2 = compile(&loaded(&yaml), Some(&s1), &m).unwrap();
    assert_eq!((s1.generation, s2.generation), (1, 2));
    assert!(Arc::ptr_eq(
        &s1.clusters["backend"].shared,
        &s2.clusters["backend"].shared
    ));
    assert_eq!(s1.version, s2.version);
}

#[test]
fn every_refused_entry_is_reported_with_its_owner() {
    // Two bad clusters and a bad provider: all three, each owned by its entry. Listeners
    // (which name them) wait until they compile.
    let yaml = format!(
        "{BASE}          - name: r\n            forward: {{cluster: nope}}\nclusters:\n  - name: a\n    endpoints: [nohost]\n  - name: b\n    endpoints: [127.0.0.1:1]\n    max_connections: 0\njwt_providers:\n  - name: p\n    jwks: {{inline: '{{}}'}}\n"
    );
    let errors = compile(&loaded(&yaml), None, &Metrics::new())
        .err()
        .unwrap();
    let owners: Vec<_> = errors.iter().map(ConfigError::owner).collect();
    assert_eq!(
        owners,
        [
            Some(Owner::Cluster(0)),
            Some(Owner::Cluster(1)),
            Some(Owner::JwtProvider(0))
        ],
        "{errors:?}"
    );
    // With them fixed, each bad listener is reported, owned by its index.
    let yaml = "listeners:\n  - {name: a, address: '127.0.0.1:0', virtual_hosts: [{name: v, domains: ['*'], routes: [{name: r, forward: {cluster: nope}}]}]}\n  - {name: b, address: '127.0.0.1:0', upgrades: [h2c]}\n  - {name: c, address: '127.0.0.1:0'}\n";
    let errors = compile(&loaded(yaml), None, &Metrics::new()).err().unwrap();
    let owners: Vec<_> = errors.iter().map(ConfigError::owner).collect();
    assert_eq!(
        owners,
        [Some(Owner::Listener(0)), Some(Owner::Listener(1))],
        "{errors:?}"
    );
}

#[test]
fn compiling_changes_nothing_shared_until_activated() {
    // A key set file changed under a kept provider: the serving generation's keys stay
    // until the new snapshot is activated.
    let dir = std::env::temp_dir().join(format!("membrane-compile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("keys.json");
    let key = |kid: &str| {
        membrane_policy::jwt::Signer::generate(membrane_policy::jwt::Alg::ES256, kid)
            .unwrap()
            .jwks()
    };
    std::fs::write(&jwks, key("one")).unwrap();
    let yaml = format!(
        "jwt_providers:\n  - name: p\n    jwks: {{file: {}}}\n",
        jwks.display()
    );
    let file = dir.join("membrane.yaml");
    let load = || {
        Loaded::gather(
            &file,
            yaml.clone(),
            crate::config::parse(&file, &yaml).unwrap(),
        )
    };
    let m = Metrics::new();
    let mut s1 = compile(&load(), None, &m).unwrap();
    activate(&mut s1, &file).unwrap();
    let kid = |s: &Snapshot| s.providers["p"].keys.current().keys[0].kid.clone();
    assert_eq!(kid(&s1).as_deref(), Some("one"));
    std::fs::write(&jwks, key("two")).unwrap();
    let mut s2 = compile(&load(), Some(&s1), &m).unwrap();
    assert!(Arc::ptr_eq(
        &s1.providers["p"].keys,
        &s2.providers["p"].keys
    ));
    assert_eq!(s2.pending.key_sets.len(), 1);
    assert_eq!(
        kid(&s1).as_deref(),
        Some("one"),
        "compiling changed the serving keys"
    );
    activate(&mut s2, &file).unwrap();
    assert_eq!(kid(&s1).as_deref(), Some("two"));
    assert!(s2.pending.key_sets.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
