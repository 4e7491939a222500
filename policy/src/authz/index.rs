//! The rule index. Each rule is filed under one of its conditions, the most selective one
//! it has: the peer's exact SPIFFE ID, an exact path, the host, the peer's cell, or the
//! literal prefix of its paths; a rule with none of these is checked for every request.
//! A request gathers the rules filed under its own values, which are a superset of the
//! rules that can match it, and only those are evaluated, in rule order.

use super::Request;
use super::rule::{Condition, PathMatch, PeerMatch, Rule};
use rustc_hash::FxHashMap;
use std::cell::RefCell;

#[derive(Debug, Default)]
pub struct Index {
    peer_exact: FxHashMap<String, Vec<u32>>,
    cell: FxHashMap<String, Vec<u32>>,
    path_exact: FxHashMap<String, Vec<u32>>,
    host: FxHashMap<String, Vec<u32>>,
    path_prefix: FxHashMap<String, Vec<u32>>,
    /// The distinct lengths of the prefixes above, so a path is cut only where one may be.
    prefix_lens: Vec<usize>,
    always: Vec<u32>,
}

/// Where a rule is filed.
enum Key<'a> {
    PeerExact(Vec<&'a str>),
    PathExact(Vec<&'a str>),
    Host(Vec<&'a str>),
    Cell(Vec<&'a str>),
    PathPrefix(Vec<&'a str>),
    Always,
}

fn key_of(rule: &Rule) -> Key<'_> {
    let mut best = Key::Always;
    let rank = |k: &Key<'_>| match k {
        Key::PeerExact(_) => 0,
        Key::PathExact(_) => 1,
        Key::Host(_) => 2,
        Key::Cell(_) => 3,
        Key::PathPrefix(_) => 4,
        Key::Always => 5,
    };
    for c in &rule.when {
        let k = match c {
            Condition::Peer(list) if list.iter().all(|m| matches!(m, PeerMatch::Exact(_))) => {
                Key::PeerExact(
                    list.iter()
                        .filter_map(|m| match m {
                            PeerMatch::Exact(id) => Some(id.as_str()),
                            _ => None,
                        })
                        .collect(),
                )
            }
            Condition::Peer(list) if list.iter().all(|m| matches!(m, PeerMatch::Cell(_))) => {
                Key::Cell(
                    list.iter()
                        .filter_map(|m| match m {
                            PeerMatch::Cell(c) => Some(c.as_str()),
                            _ => None,
                        })
                        .collect(),
                )
            }
            Condition::Path(list) if list.iter().all(|p| matches!(p, PathMatch::Exact(_))) => {
                Key::PathExact(
                    list.iter()
                        .filter_map(|p| match p {
                            PathMatch::Exact(e) => Some(e.as_str()),
                            _ => None,
                        })
                        .collect(),
                )
            }
            Condition::Path(list) => Key::PathPrefix(
                list.iter()
                    .map(|p| match p {
                        PathMatch::Exact(e) => e.as_str(),
                        PathMatch::Prefix(pre) => pre.as_str(),
                        PathMatch::Glob(g) => g.literal_prefix(),
                    })
                    .collect(),
            ),
            Condition::Host(hosts) => Key::Host(hosts.iter().map(String::as_str).collect()),
            _ => continue,
        };
        if rank(&k) < rank(&best) {
            best = k;
        }
    }
    best
}

fn file(map: &mut FxHashMap<String, Vec<u32>>, keys: &[&str], i: u32) {
    for k in keys {
        let list = map.entry((*k).to_owned()).or_default();
        if list.last() != Some(&i) {
            list.push(i);
        }
    }
}

thread_local! {
    /// Candidate buffer reused across decisions on one thread.
    static CANDIDATES: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

impl Index {
    pub fn build(rules: &[Rule]) -> Index {
        let mut ix = Index::default();
        for (i, r) in rules.iter().enumerate() {
            let i = i as u32;
            match key_of(r) {
                Key::PeerExact(k) => file(&mut ix.peer_exact, &k, i),
                Key::PathExact(k) => file(&mut ix.path_exact, &k, i),
                Key::Host(k) => file(&mut ix.host, &k, i),
                Key::Cell(k) => file(&mut ix.cell, &k, i),
                Key::PathPrefix(k) => file(&mut ix.path_prefix, &k, i),
                Key::Always => ix.always.push(i),
            }
        }
        let mut lens: Vec<usize> = ix.path_prefix.keys().map(String::len).collect();
        lens.sort_unstable();
        lens.dedup();
        ix.prefix_lens = lens;
        ix
    }

    /// Calls `f` with the candidate rules for `req`, ascending and without duplicates.
    pub fn with_candidates<R>(&self, req: &Request<'_>, f: impl FnOnce(&[u32]) -> R) -> R {
        let gather = |c: &mut Vec<u32>| {
            c.clear();
            c.extend_from_slice(&self.always);
            if let Some(p) = req.peer {
                if let Some(l) = self.peer_exact.get(p.as_str()) {
                    c.extend_from_slice(l);
                }
                if let Some(cell) = p.cell()
                    && let Some(l) = self.cell.get(cell)
                {
                    c.extend_from_slice(l);
                }
            }
            if let Some(l) = self.path_exact.get(req.path) {
                c.extend_from_slice(l);
            }
            if let Some(l) = self.host.get(req.host) {
                c.extend_from_slice(l);
            }
            for &n in &self.prefix_lens {
                if n > req.path.len() {
                    break;
                }
                if let Some(pre) = req.path.get(..n)
                    && let Some(l) = self.path_prefix.get(pre)
                {
                    c.extend_from_slice(l);
                }
            }
            c.sort_unstable();
            c.dedup();
        };
        CANDIDATES.with(|cell| match cell.try_borrow_mut() {
            Ok(mut c) => {
                gather(&mut c);
                f(&c)
            }
            // Re-entered from inside `f` (not done here, but safe): a buffer of its own.
            Err(_) => {
                let mut c = Vec::new();
                gather(&mut c);
                f(&c)
            }
        })
    }
}
