//! State-of-the-world ADS on one stream, by Envoy's `xds_protocol` rules:
//!
//! - **Subscriptions.** The first request of a type with no names is the legacy wildcard
//!   (every resource), and stays so while later requests also name none. The name `*` is
//!   the wildcard at any time, not a resource called `*`. Once names were given, a request
//!   with none unsubscribes from everything (it is not the wildcard again): the answer is the
//!   empty set.
//! - **Responses.** The whole subscribed set of a type, whenever its version changes or the
//!   subscription does.
//! - **Nonces.** A request whose nonce is not the last one sent for its type answers a
//!   superseded response and is ignored. The first request of a type has no response to
//!   answer: whatever nonce it carries (a stale one from an earlier stream, or another type's)
//!   it is a new subscription, never dropped as stale (a type could otherwise never be
//!   answered on that stream).
//! - **ACK/NACK.** A request with the last nonce is an ACK, or with `error_detail` a NACK;
//!   either is recorded against the version that was sent with that nonce (a client's
//!   `version_info` in a NACK is the version it still has, not the one it refused). A NACKed
//!   version is not sent again until it changes.

use super::node_id::NodeId;
use super::stream::{Out, Variant};
use crate::compile::{Compiled, Versioned};
use crate::proto::envoy::service::discovery::v3 as ds;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

/// What a stream is subscribed to for one type.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Names {
    /// The first request named nothing, and no request since has named anything.
    Legacy,
    /// Named resources; with `*` among them, every resource.
    Given {
        wildcard: bool,
        names: BTreeSet<String>,
    },
}

impl Names {
    /// The subscription after a request naming `requested`, given the one before (`None` for
    /// the type's first request).
    fn next(before: Option<&Names>, requested: &[String]) -> Names {
        if requested.is_empty() {
            return match before {
                None | Some(Names::Legacy) => Names::Legacy,
                Some(Names::Given { .. }) => Names::Given {
                    wildcard: false,
                    names: BTreeSet::new(),
                },
            };
        }
        Names::Given {
            wildcard: requested.iter().any(|n| n == "*"),
            names: requested.iter().filter(|n| *n != "*").cloned().collect(),
        }
    }

    /// The names to select, `None` for all.
    fn filter(&self) -> Option<&BTreeSet<String>> {
        match self {
            Names::Legacy | Names::Given { wildcard: true, .. } => None,
            Names::Given { names, .. } => Some(names),
        }
    }
}

struct Sub {
    names: Names,
    sent_version: Option<String>,
    nonce: String,
}

/// The resources of `type_url` for `cell`, filtered by `names`, and their set's version.
pub(super) fn select<'a>(
    snap: &'a Compiled,
    cell: &str,
    type_url: &str,
    names: Option<&BTreeSet<String>>,
) -> (Vec<(&'a String, &'a Versioned)>, String) {
    let mut out = Vec::new();
    let mut h = rustc_hash::FxHasher::default();
    if let Some(res) = snap.gateways.get(cell) {
        for ((t, name), v) in res.iter() {
            if t == type_url && names.is_none_or(|n| n.contains(name)) {
                (name, &v.version).hash(&mut h);
                out.push((name, v));
            }
        }
    }
    (out, format!("{:016x}", h.finish()))
}

/// The state-of-the-world variant: per type, what the client subscribed to.
#[derive(Default)]
pub(super) struct Sotw {
    subs: BTreeMap<String, Sub>,
}

impl Variant for Sotw {
    type Request = ds::DiscoveryRequest;
    type Response = ds::DiscoveryResponse;
    const PROTOCOL: &'static str = "sotw";

    async fn request(
        &mut self,
        req: ds::DiscoveryRequest,
        id: &NodeId,
        snap: &Compiled,
        out: &mut Out<ds::DiscoveryResponse>,
    ) -> bool {
        let before = self.subs.get(&req.type_url);
        if let Some(sub) = before {
            if !req.response_nonce.is_empty() && req.response_nonce != sub.nonce {
                return true; // stale: answers a response that was superseded
            }
            if !req.response_nonce.is_empty() {
                let sent = sub.sent_version.as_deref().unwrap_or("");
                match &req.error_detail {
                    Some(e) => out
                        .nodes
                        .nacked(id.as_str(), &req.type_url, sent, &e.message),
                    None => out.nodes.acked(id.as_str(), &req.type_url, sent),
                }
            }
        }
        let names = Names::next(before.map(|s| &s.names), &req.resource_names);
        let changed = before.is_none_or(|s| s.names != names);
        let sub = self.subs.entry(req.type_url.clone()).or_insert(Sub {
            names: names.clone(),
            sent_version: None,
            nonce: String::new(),
        });
        sub.names = names;
        !changed || send(out, snap, id, &req.type_url, sub, true).await
    }

    async fn changed(
        &mut self,
        id: &NodeId,
        snap: &Compiled,
        out: &mut Out<ds::DiscoveryResponse>,
    ) -> bool {
        let mut ok = true;
        for (type_url, sub) in self.subs.iter_mut() {
            ok &= send(out, snap, id, type_url, sub, false).await;
        }
        ok
    }
}

/// Sends the type's resources when their version differs from what was sent (or `force`).
async fn send(
    out: &mut Out<ds::DiscoveryResponse>,
    snap: &Compiled,
    node: &NodeId,
    type_url: &str,
    sub: &mut Sub,
    force: bool,
) -> bool {
    let (resources, version) = select(snap, node.cell(), type_url, sub.names.filter());
    if !force && sub.sent_version.as_deref() == Some(version.as_str()) {
        return true;
    }
    sub.nonce = out.nonce();
    sub.sent_version = Some(version.clone());
    out.nodes.sent(node.as_str(), type_url, &version);
    let resp = ds::DiscoveryResponse {
        version_info: version,
        resources: resources
            .into_iter()
            .map(|(_, v)| v.resource.clone())
            .collect(),
        type_url: type_url.to_owned(),
        nonce: sub.nonce.clone(),
    };
    out.send(resp).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(wildcard: bool, names: &[&str]) -> Names {
        Names::Given {
            wildcard,
            names: names.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn subscriptions_follow_the_xds_protocol() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        // Legacy wildcard: the first request names nothing, and stays while nothing is named.
        assert_eq!(Names::next(None, &[]), Names::Legacy);
        assert_eq!(Names::next(Some(&Names::Legacy), &[]), Names::Legacy);
        // `*` is the wildcard, not a name.
        assert_eq!(Names::next(None, &s(&["*"])), given(true, &[]));
        assert_eq!(Names::next(None, &s(&["*", "a"])), given(true, &["a"]));
        assert_eq!(given(true, &["a"]).filter(), None);
        // After names, none means none.
        let named = Names::next(None, &s(&["a"]));
        assert_eq!(named, given(false, &["a"]));
        let none = Names::next(Some(&named), &[]);
        assert_eq!(none, given(false, &[]));
        assert_eq!(none.filter().map(BTreeSet::len), Some(0));
        // From the legacy wildcard to names.
        assert_eq!(
            Names::next(Some(&Names::Legacy), &s(&["b"])),
            given(false, &["b"])
        );
    }
}
