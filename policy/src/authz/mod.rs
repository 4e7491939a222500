//! Authorization: rules with `allow` and `deny` effects, compiled into an index so that a
//! decision looks only at the rules that could match. Deny wins: the decision is the first
//! matching deny rule (in rule order), else the first matching allow rule, else the
//! policy's default. Every decision names the rule that made it.

pub mod glob;
mod index;
pub mod rule;

pub use glob::{Glob, GlobError};
pub use rule::{
    Cidr, CidrError, ClaimTest, Condition, Effect, HeaderTest, PathMatch, PeerMatch, Rule,
};

use crate::identity::SpiffeId;
use index::Index;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// Header lookup by lower-case name (the first value when there are several).
pub trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

/// What a rule can look at.
pub struct Request<'a> {
    pub peer: Option<&'a SpiffeId>,
    pub claims: Option<&'a Map<String, Value>>,
    /// Lower case, without port.
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a dyn Headers,
    pub source: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    /// Index of the deciding rule; `None` when the default decided.
    pub rule: Option<usize>,
}

/// How a policy's decisions are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    /// Decided, counted and logged, never enforced.
    DryRun,
}

pub struct Policy {
    pub name: String,
    pub default: Effect,
    pub mode: Mode,
    rules: Vec<Rule>,
    index: Index,
}

impl Policy {
    pub fn compile(name: &str, rules: Vec<Rule>, default: Effect, mode: Mode) -> Policy {
        let index = Index::build(&rules);
        Policy {
            name: name.to_owned(),
            default,
            mode,
            rules,
            index,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The name of the rule behind a decision, or `default`.
    pub fn rule_name(&self, d: &Decision) -> &str {
        d.rule
            .and_then(|i| self.rules.get(i))
            .map_or("default", |r| r.name.as_str())
    }

    /// Decides with the index.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        self.index.with_candidates(req, |candidates| {
            for effect in [Effect::Deny, Effect::Allow] {
                for &i in candidates {
                    let r = &self.rules[i as usize];
                    if r.effect == effect && rule_matches(r, req) {
                        return Decision {
                            effect,
                            rule: Some(i as usize),
                        };
                    }
                }
            }
            Decision {
                effect: self.default,
                rule: None,
            }
        })
    }

    /// Decides by looking at every rule in order: the reference the index must agree with.
    pub fn decide_by_scan(&self, req: &Request<'_>) -> Decision {
        for effect in [Effect::Deny, Effect::Allow] {
            for (i, r) in self.rules.iter().enumerate() {
                if r.effect == effect && rule_matches(r, req) {
                    return Decision {
                        effect,
                        rule: Some(i),
                    };
                }
            }
        }
        Decision {
            effect: self.default,
            rule: None,
        }
    }
}

pub fn rule_matches(r: &Rule, req: &Request<'_>) -> bool {
    r.when.iter().all(|c| condition_matches(c, req))
}

fn condition_matches(c: &Condition, req: &Request<'_>) -> bool {
    match c {
        Condition::Peer(list) => req
            .peer
            .is_some_and(|p| list.iter().any(|m| peer_matches(m, p))),
        Condition::Claim { path, test } => {
            let Some(v) = req.claims.and_then(|c| claim_at(c, path)) else {
                return false;
            };
            match test {
                ClaimTest::Present => true,
                ClaimTest::Equals(want) => match v {
                    Value::String(s) => s == want,
                    Value::Array(a) => a.iter().any(|x| x.as_str() == Some(want)),
                    Value::Bool(b) => want == if *b { "true" } else { "false" },
                    Value::Number(n) => *want == n.to_string(),
                    _ => false,
                },
                ClaimTest::Contains(want) => match v {
                    Value::Array(a) => a.iter().any(|x| x.as_str() == Some(want)),
                    Value::String(s) => s.split(' ').any(|w| w == want),
                    _ => false,
                },
            }
        }
        Condition::Host(hosts) => hosts.iter().any(|h| h == req.host),
        Condition::Method(methods) => methods.iter().any(|m| m == req.method),
        Condition::Path(paths) => paths.iter().any(|p| match p {
            PathMatch::Exact(e) => req.path == e,
            PathMatch::Prefix(pre) => req.path.starts_with(pre.as_str()),
            PathMatch::Glob(g) => g.matches(req.path),
        }),
        Condition::Header { name, test } => {
            let v = req.headers.get(name);
            match test {
                HeaderTest::Present => v.is_some(),
                HeaderTest::Absent => v.is_none(),
                HeaderTest::Exact(want) => v == Some(want.as_str()),
                HeaderTest::Prefix(pre) => v.is_some_and(|v| v.starts_with(pre.as_str())),
            }
        }
        Condition::Source(nets) => nets.iter().any(|n| n.contains(req.source)),
    }
}

fn peer_matches(m: &PeerMatch, p: &SpiffeId) -> bool {
    match m {
        PeerMatch::Exact(id) => id == p,
        PeerMatch::Prefix(pre) => p.as_str().starts_with(pre.as_str()),
        PeerMatch::TrustDomain(d) => p.trust_domain() == d,
        PeerMatch::Cell(c) => p.cell() == Some(c.as_str()),
        PeerMatch::Any => true,
    }
}

/// A claim by dotted path through nested objects.
pub fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}
