//! Policy decisions. Targets: an authorization decision over 10,000 rules under 300 ns
//! (p50), a cached JWT check under 1 µs; uncached RS256 and ES256 verification for scale.
//!
//! `cargo bench --bench policy`
#![allow(clippy::unwrap_used)]

use divan::{Bencher, black_box};
use membrane_policy::authz::{
    Condition, Effect, Headers, Mode, PathMatch, PeerMatch, Policy, Request, Rule,
};
use membrane_policy::identity::SpiffeId;
use membrane_policy::jwt::{self, Alg, KeySet, Signer, TokenCache, Validation};
use serde_json::json;
use std::sync::Arc;

fn main() {
    divan::main();
}

struct NoHeaders;
impl Headers for NoHeaders {
    fn get(&self, _: &str) -> Option<&str> {
        None
    }
}

/// 10,000 rules the way a large org's generated policy looks: per-caller allows (one cell
/// may call a few paths), per-path denies, trust-domain rules, and a few unindexed ones.
fn policy_10k() -> Policy {
    let mut rules = Vec::with_capacity(10_000);
    for i in 0..10_000u32 {
        let cell = format!("cell{}", i % 2_000);
        let id = SpiffeId::parse(&format!(
            "spiffe://acme.internal/org/acme/env/prod/cell/{cell}"
        ))
        .unwrap();
        let when = match i % 10 {
            0..=5 => vec![
                Condition::Peer(vec![PeerMatch::Exact(id)]),
                Condition::Path(vec![PathMatch::Prefix(format!("/svc{}/", i % 500))]),
                Condition::Method(vec!["GET".into(), "POST".into()]),
            ],
            6 | 7 => vec![Condition::Path(vec![PathMatch::Exact(format!(
                "/admin/{i}"
            ))])],
            8 => vec![
                Condition::Peer(vec![PeerMatch::Cell(cell)]),
                Condition::Path(vec![PathMatch::Prefix(format!("/internal/{i}"))]),
            ],
            _ => vec![
                Condition::Host(vec![format!("h{i}.acme.test")]),
                Condition::Method(vec!["DELETE".into()]),
            ],
        };
        rules.push(Rule {
            name: format!("r{i}"),
            effect: if i % 10 == 6 {
                Effect::Deny
            } else {
                Effect::Allow
            },
            when,
        });
    }
    Policy::compile("bench", rules, Effect::Deny, Mode::Enforce)
}

#[divan::bench]
fn authz_decision_10k_rules(b: Bencher) {
    let policy = policy_10k();
    let peer = SpiffeId::parse("spiffe://acme.internal/org/acme/env/prod/cell/cell17").unwrap();
    let h = NoHeaders;
    let req = Request {
        peer: Some(&peer),
        claims: None,
        host: "api.acme.test",
        method: "GET",
        path: "/svc17/orders/42",
        headers: &h,
        source: "10.0.0.1".parse().unwrap(),
    };
    assert_eq!(policy.decide(&req), policy.decide_by_scan(&req));
    b.bench_local(|| black_box(policy.decide(black_box(&req))));
}

#[divan::bench]
fn authz_default_deny_10k_rules(b: Bencher) {
    let policy = policy_10k();
    let peer = SpiffeId::parse("spiffe://other.internal/cell/x").unwrap();
    let h = NoHeaders;
    let req = Request {
        peer: Some(&peer),
        claims: None,
        host: "api.acme.test",
        method: "GET",
        path: "/nothing/here",
        headers: &h,
        source: "10.0.0.1".parse().unwrap(),
    };
    b.bench_local(|| black_box(policy.decide(black_box(&req))));
}

const NOW: u64 = 1_800_000_000;

fn token_and_keys(alg: Alg) -> (String, KeySet) {
    let s = Signer::generate(alg, "k1").unwrap();
    let t = s.sign(
        &json!({"iss": "https://idp", "aud": "orders", "sub": "alice",
                            "scope": "orders.read", "exp": NOW + 3600, "iat": NOW}),
    );
    let keys = KeySet::from_json(&s.jwks()).unwrap().0;
    (t, keys)
}

fn validation() -> Validation {
    Validation {
        issuer: Some("https://idp".into()),
        audiences: vec!["orders".into()],
        leeway: 60,
        require_exp: true,
    }
}

#[divan::bench]
fn jwt_cached(b: Bencher) {
    let (token, keys) = token_and_keys(Alg::RS256);
    let cache = TokenCache::new(10_000, 300);
    let claims = jwt::verify(&token, &keys, &validation(), NOW).unwrap();
    cache.insert(&token, Arc::new(claims), NOW, 60);
    b.bench_local(|| black_box(cache.get(black_box(&token), NOW).is_some()));
}

#[divan::bench(args = [Alg::RS256, Alg::ES256, Alg::EdDSA])]
fn jwt_uncached(b: Bencher, alg: Alg) {
    let (token, keys) = token_and_keys(alg);
    let v = validation();
    b.bench_local(|| black_box(jwt::verify(black_box(&token), &keys, &v, NOW).is_ok()));
}
