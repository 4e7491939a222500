//! Incremental (delta) ADS on one stream. Per type URL the client subscribes and
//! unsubscribes by name (`*`, or an empty first subscription, is a wildcard); the server
//! sends only resources whose version the client does not have, and the names of removed
//! ones. The first request of a type on a new stream may carry `initial_resource_versions`:
//! what the client kept from an earlier stream, so nothing it already has is sent again.
//! What was sent counts as known once sent (a NACKed version is not sent again until it
//! changes); ACKs and NACKs are recorded by nonce. A name subscribed to that does not exist
//! is answered in `removed_resources`, so the client learns it is absent rather than
//! waiting for it.

use super::node_id::NodeId;
use super::stream::{Out, Variant};
use crate::compile::Compiled;
use crate::proto::envoy::service::discovery::v3 as ds;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
struct Sub {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Name → version the client has (or was sent).
    known: BTreeMap<String, String>,
    nonce: String,
    /// The system version of the last response, for the ACK record.
    sent_version: String,
}

/// The delta variant: per type, what the client subscribed to and has.
#[derive(Default)]
pub(super) struct Delta {
    subs: BTreeMap<String, Sub>,
}

impl Variant for Delta {
    type Request = ds::DeltaDiscoveryRequest;
    type Response = ds::DeltaDiscoveryResponse;
    const PROTOCOL: &'static str = "delta";

    async fn request(
        &mut self,
        req: ds::DeltaDiscoveryRequest,
        id: &NodeId,
        snap: &Compiled,
        out: &mut Out<ds::DeltaDiscoveryResponse>,
    ) -> bool {
        let first = !self.subs.contains_key(&req.type_url);
        let sub = self.subs.entry(req.type_url.clone()).or_default();
        if first {
            sub.known = req.initial_resource_versions.clone().into_iter().collect();
            sub.wildcard = req.resource_names_subscribe.is_empty();
        }
        if !first && !req.response_nonce.is_empty() && req.response_nonce == sub.nonce {
            match &req.error_detail {
                Some(e) => {
                    out.nodes
                        .nacked(id.as_str(), &req.type_url, &sub.sent_version, &e.message)
                }
                None => out
                    .nodes
                    .acked(id.as_str(), &req.type_url, &sub.sent_version),
            }
        }
        let mut forced = BTreeSet::new();
        for n in &req.resource_names_subscribe {
            if n == "*" {
                sub.wildcard = true;
            } else {
                sub.names.insert(n.clone());
                forced.insert(n.clone());
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(n);
                sub.known.remove(n);
            }
        }
        let must_answer = first && req.initial_resource_versions.is_empty();
        send(out, snap, id, &req.type_url, sub, &forced, must_answer).await
    }

    async fn changed(
        &mut self,
        id: &NodeId,
        snap: &Compiled,
        out: &mut Out<ds::DeltaDiscoveryResponse>,
    ) -> bool {
        let mut ok = true;
        for (type_url, sub) in self.subs.iter_mut() {
            ok &= send(out, snap, id, type_url, sub, &BTreeSet::new(), false).await;
        }
        ok
    }
}

/// Sends what the client lacks and what was removed; nothing when there is nothing (unless
/// `must_answer`).
async fn send(
    out: &mut Out<ds::DeltaDiscoveryResponse>,
    snap: &Compiled,
    node: &NodeId,
    type_url: &str,
    sub: &mut Sub,
    forced: &BTreeSet<String>,
    must_answer: bool,
) -> bool {
    let (all, system_version) = super::sotw::select(snap, node.cell(), type_url, None);
    let wanted = |name: &str| sub.wildcard || sub.names.contains(name);
    let mut resources = Vec::new();
    let mut present = BTreeSet::new();
    for (name, v) in &all {
        if !wanted(name) {
            continue;
        }
        present.insert((*name).clone());
        if forced.contains(*name) || sub.known.get(*name) != Some(&v.version) {
            resources.push(ds::Resource {
                version: v.version.clone(),
                resource: Some(v.resource.clone()),
                name: (*name).clone(),
                aliases: Vec::new(),
            });
        }
    }
    let mut removed: Vec<String> = sub
        .known
        .keys()
        .filter(|n| !present.contains(*n))
        .cloned()
        .collect();
    // Names just subscribed to that do not exist: said so, once.
    for n in forced {
        if !present.contains(n) && !removed.contains(n) {
            removed.push(n.clone());
        }
    }
    if resources.is_empty() && removed.is_empty() && !must_answer {
        return true;
    }
    for r in &resources {
        sub.known.insert(r.name.clone(), r.version.clone());
    }
    for n in &removed {
        sub.known.remove(n);
    }
    sub.nonce = out.nonce();
    sub.sent_version = system_version.clone();
    out.nodes.sent(node.as_str(), type_url, &system_version);
    let resp = ds::DeltaDiscoveryResponse {
        system_version_info: system_version,
        resources,
        type_url: type_url.to_owned(),
        nonce: sub.nonce.clone(),
        removed_resources: removed,
    };
    out.send(resp).await
}
