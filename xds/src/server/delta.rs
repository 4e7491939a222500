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
use super::status::NodeTable;
use crate::compile::Compiled;
use crate::proto::envoy::service::discovery::v3 as ds;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

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

pub(super) async fn run(
    mut input: Streaming<ds::DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<ds::DeltaDiscoveryResponse, Status>>,
    mut snapshot: watch::Receiver<Arc<Compiled>>,
    nodes: Arc<NodeTable>,
) {
    let mut node: Option<NodeId> = None;
    let mut subs: BTreeMap<String, Sub> = BTreeMap::new();
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            req = input.message() => {
                let snap = snapshot.borrow().clone();
                let Some(req) =
                    super::next_request(req, &mut node, "delta", &nodes, &snap, &tx).await
                else {
                    break;
                };
                let Some(id) = node.as_ref() else { break };
                let first = !subs.contains_key(&req.type_url);
                let sub = subs.entry(req.type_url.clone()).or_default();
                if first {
                    sub.known = req.initial_resource_versions.clone().into_iter().collect();
                    sub.wildcard = req.resource_names_subscribe.is_empty();
                }
                if !first && !req.response_nonce.is_empty() && req.response_nonce == sub.nonce {
                    match &req.error_detail {
                        Some(e) => nodes.nacked(id.as_str(), &req.type_url, &sub.sent_version, &e.message),
                        None => nodes.acked(id.as_str(), &req.type_url, &sub.sent_version),
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
                if !send(&tx, &snap, id, &req.type_url, sub, &forced, &mut nonce, &nodes, must_answer).await {
                    break;
                }
            }
            changed = snapshot.changed() => {
                if changed.is_err() { break }
                let Some(id) = node.as_ref() else { continue };
                let snap = snapshot.borrow_and_update().clone();
                let mut ok = true;
                for (type_url, sub) in subs.iter_mut() {
                    ok &= send(&tx, &snap, id, type_url, sub, &BTreeSet::new(), &mut nonce, &nodes, false).await;
                }
                if !ok { break }
            }
        }
    }
    if let Some(id) = node {
        nodes.disconnected(id.as_str());
    }
}

/// Sends what the client lacks and what was removed; nothing when there is nothing (unless
/// `must_answer`).
#[allow(clippy::too_many_arguments)]
async fn send(
    tx: &mpsc::Sender<Result<ds::DeltaDiscoveryResponse, Status>>,
    snap: &Compiled,
    node: &NodeId,
    type_url: &str,
    sub: &mut Sub,
    forced: &BTreeSet<String>,
    nonce: &mut u64,
    nodes: &NodeTable,
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
    *nonce += 1;
    sub.nonce = nonce.to_string();
    sub.sent_version = system_version.clone();
    nodes.sent(node.as_str(), type_url, &system_version);
    let resp = ds::DeltaDiscoveryResponse {
        system_version_info: system_version,
        resources,
        type_url: type_url.to_owned(),
        nonce: sub.nonce.clone(),
        removed_resources: removed,
    };
    tx.send(Ok(resp)).await.is_ok()
}
