//! The compiled index decides exactly as a scan of every rule in order does, over random
//! rules and requests drawn from small domains (so that matches are frequent), and a few
//! decisions written out by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use membrane_policy::authz::{
    Cidr, ClaimTest, Condition, Effect, Glob, HeaderTest, Headers, Mode, PathMatch, PeerMatch,
    Policy, Request, Rule,
};
use membrane_policy::identity::SpiffeId;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::net::IpAddr;

const IDS: [&str; 4] = [
    "spiffe://acme.internal/org/acme/env/prod/cell/orders",
    "spiffe://acme.internal/org/acme/env/prod/cell/billing",
    "spiffe://acme.internal/org/acme/env/dev/cell/orders",
    "spiffe://other.internal/cell/orders",
];
const PATHS: [&str; 6] = [
    "/",
    "/orders",
    "/orders/1",
    "/orders/1/items",
    "/billing/x",
    "/o",
];
const HOSTS: [&str; 2] = ["api.acme.test", "admin.acme.test"];
const METHODS: [&str; 3] = ["GET", "POST", "DELETE"];
const SOURCES: [&str; 3] = ["10.1.2.3", "192.168.0.7", "2001:db8::1"];

struct NoHeaders(Option<&'static str>);
impl Headers for NoHeaders {
    fn get(&self, name: &str) -> Option<&str> {
        if name == "x-env" { self.0 } else { None }
    }
}

fn peer_match() -> impl Strategy<Value = PeerMatch> {
    prop_oneof![
        (0..IDS.len()).prop_map(|i| PeerMatch::Exact(SpiffeId::parse(IDS[i]).unwrap())),
        Just(PeerMatch::Prefix(
            "spiffe://acme.internal/org/acme/env/prod/".into()
        )),
        prop_oneof![Just("acme.internal"), Just("other.internal")]
            .prop_map(|d| PeerMatch::TrustDomain(d.into())),
        prop_oneof![Just("orders"), Just("billing")].prop_map(|c| PeerMatch::Cell(c.into())),
        Just(PeerMatch::Any),
    ]
}

fn path_match() -> impl Strategy<Value = PathMatch> {
    prop_oneof![
        (0..PATHS.len()).prop_map(|i| PathMatch::Exact(PATHS[i].into())),
        prop_oneof![
            Just("/"),
            Just("/orders"),
            Just("/orders/"),
            Just("/b"),
            Just("/o")
        ]
        .prop_map(|p| PathMatch::Prefix(p.into())),
        prop_oneof![
            Just("/orders/*"),
            Just("/orders/**"),
            Just("/*/x"),
            Just("/**")
        ]
        .prop_map(|g| PathMatch::Glob(Glob::new(g).unwrap())),
    ]
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        prop::collection::vec(peer_match(), 1..3).prop_map(Condition::Peer),
        prop::collection::vec(path_match(), 1..3).prop_map(Condition::Path),
        prop::collection::vec(0..HOSTS.len(), 1..3)
            .prop_map(|v| Condition::Host(v.into_iter().map(|i| HOSTS[i].into()).collect())),
        prop::collection::vec(0..METHODS.len(), 1..3)
            .prop_map(|v| Condition::Method(v.into_iter().map(|i| METHODS[i].into()).collect())),
        prop_oneof![
            Just(ClaimTest::Contains("orders.read".into())),
            Just(ClaimTest::Equals("alice".into())),
            Just(ClaimTest::Present),
        ]
        .prop_flat_map(|t| {
            prop_oneof![Just("scope"), Just("sub"), Just("realm.roles")].prop_map(move |p| {
                Condition::Claim {
                    path: p.into(),
                    test: t.clone(),
                }
            })
        }),
        prop_oneof![
            Just(HeaderTest::Exact("prod".into())),
            Just(HeaderTest::Prefix("pr".into())),
            Just(HeaderTest::Present),
            Just(HeaderTest::Absent),
        ]
        .prop_map(|test| Condition::Header {
            name: "x-env".into(),
            test
        }),
        prop_oneof![
            Just("10.0.0.0/8"),
            Just("192.168.0.0/16"),
            Just("2001:db8::/32")
        ]
        .prop_map(|c| Condition::Source(vec![Cidr::parse(c).unwrap()])),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    (any::<bool>(), prop::collection::vec(condition(), 0..4)).prop_map(|(deny, when)| Rule {
        name: String::new(),
        effect: if deny { Effect::Deny } else { Effect::Allow },
        when,
    })
}

#[derive(Debug, Clone)]
struct Req {
    peer: Option<usize>,
    path: usize,
    host: usize,
    method: usize,
    claims: usize,
    header: Option<&'static str>,
    source: usize,
}

fn req() -> impl Strategy<Value = Req> {
    (
        prop::option::of(0..IDS.len()),
        0..PATHS.len(),
        0..HOSTS.len(),
        0..METHODS.len(),
        0..3usize,
        prop_oneof![Just(None), Just(Some("prod")), Just(Some("dev"))],
        0..SOURCES.len(),
    )
        .prop_map(|(peer, path, host, method, claims, header, source)| Req {
            peer,
            path,
            host,
            method,
            claims,
            header,
            source,
        })
}

fn claims(i: usize) -> Map<String, Value> {
    let v = match i {
        0 => json!({"sub": "alice", "scope": "orders.read orders.write"}),
        1 => json!({"sub": "bob", "realm": {"roles": ["admin"]}, "scope": ["orders.read"]}),
        _ => json!({}),
    };
    v.as_object().unwrap().clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn the_index_decides_as_a_scan_does(
        rules in prop::collection::vec(rule(), 0..40),
        reqs in prop::collection::vec(req(), 1..20),
        default_deny in any::<bool>(),
    ) {
        let default = if default_deny { Effect::Deny } else { Effect::Allow };
        let policy = Policy::compile("p", rules, default, Mode::Enforce);
        let ids: Vec<SpiffeId> = IDS.iter().map(|s| SpiffeId::parse(s).unwrap()).collect();
        for r in reqs {
            let c = claims(r.claims);
            let h = NoHeaders(r.header);
            let request = Request {
                peer: r.peer.map(|i| &ids[i]),
                claims: (r.claims < 2).then_some(&c),
                host: HOSTS[r.host],
                method: METHODS[r.method],
                path: PATHS[r.path],
                headers: &h,
                source: SOURCES[r.source].parse::<IpAddr>().unwrap(),
            };
            prop_assert_eq!(policy.decide(&request), policy.decide_by_scan(&request));
        }
    }
}

#[test]
fn deny_wins_and_the_deciding_rule_is_named() {
    let orders = SpiffeId::parse(IDS[0]).unwrap();
    let billing = SpiffeId::parse(IDS[1]).unwrap();
    let rule = |name: &str, effect, when| Rule {
        name: name.into(),
        effect,
        when,
    };
    let policy = Policy::compile(
        "west",
        vec![
            rule(
                "allow-orders-cell",
                Effect::Allow,
                vec![Condition::Peer(vec![PeerMatch::Cell("orders".into())])],
            ),
            rule(
                "no-admin",
                Effect::Deny,
                vec![Condition::Path(vec![PathMatch::Prefix("/admin".into())])],
            ),
            rule(
                "billing-reads",
                Effect::Allow,
                vec![
                    Condition::Peer(vec![PeerMatch::Exact(billing.clone())]),
                    Condition::Method(vec!["GET".into()]),
                ],
            ),
        ],
        Effect::Deny,
        Mode::Enforce,
    );
    let h = NoHeaders(None);
    let mk = |peer, method, path| Request {
        peer,
        claims: None,
        host: "api",
        method,
        path,
        headers: &h,
        source: "10.0.0.1".parse().unwrap(),
    };
    let d = policy.decide(&mk(Some(&orders), "POST", "/orders"));
    assert_eq!(
        (d.effect, policy.rule_name(&d)),
        (Effect::Allow, "allow-orders-cell")
    );
    let d = policy.decide(&mk(Some(&orders), "GET", "/admin/x"));
    assert_eq!((d.effect, policy.rule_name(&d)), (Effect::Deny, "no-admin"));
    let d = policy.decide(&mk(Some(&billing), "GET", "/orders"));
    assert_eq!(
        (d.effect, policy.rule_name(&d)),
        (Effect::Allow, "billing-reads")
    );
    let d = policy.decide(&mk(Some(&billing), "POST", "/orders"));
    assert_eq!((d.effect, policy.rule_name(&d)), (Effect::Deny, "default"));
    let d = policy.decide(&mk(None, "GET", "/orders"));
    assert_eq!((d.effect, policy.rule_name(&d)), (Effect::Deny, "default"));
}

#[test]
fn cidrs_match_v4_v6_and_mapped_addresses() {
    let net = Cidr::parse("10.0.0.0/8").unwrap();
    assert!(net.contains("10.255.0.1".parse().unwrap()));
    assert!(!net.contains("11.0.0.1".parse().unwrap()));
    assert!(net.contains("::ffff:10.1.1.1".parse().unwrap()));
    let v6 = Cidr::parse("2001:db8::/32").unwrap();
    assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
    assert!(!v6.contains("2001:db9::5".parse().unwrap()));
    assert!(
        Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap())
    );
    assert!(Cidr::parse("10.0.0.0/33").is_err());
    assert!(Cidr::parse("ten/8").is_err());
}
