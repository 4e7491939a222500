//! State-of-the-world ADS on one stream. Per type URL the client subscribes to a list of
//! names (empty: all); it is sent the whole set for that type whenever its version changes
//! or its subscription does. A request carrying a nonce other than the last one sent for its
//! type is stale and ignored; one with `error_detail` is a NACK (recorded, and the same
//! version is not sent again); one with the last nonce and no error is an ACK.

use super::cell_of;
use super::status::NodeTable;
use crate::compile::{Compiled, Versioned};
use crate::proto::envoy::service::discovery::v3 as ds;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

#[derive(Default)]
struct Sub {
    /// `None`: every resource of the type.
    names: Option<BTreeSet<String>>,
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
        for ((t, name), v) in res {
            if t == type_url && names.is_none_or(|n| n.contains(name)) {
                (name, &v.version).hash(&mut h);
                out.push((name, v));
            }
        }
    }
    (out, format!("{:016x}", h.finish()))
}

pub(super) async fn run(
    mut input: Streaming<ds::DiscoveryRequest>,
    tx: mpsc::Sender<Result<ds::DiscoveryResponse, Status>>,
    mut snapshot: watch::Receiver<Arc<Compiled>>,
    nodes: Arc<NodeTable>,
) {
    let mut node: Option<String> = None;
    let mut subs: BTreeMap<String, Sub> = BTreeMap::new();
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            req = input.message() => {
                let Ok(Some(req)) = req else { break };
                if !super::identify(&mut node, req.node.as_ref(), "sotw", &nodes, &tx).await {
                    return;
                }
                let Some(id) = node.as_deref() else { break };
                let first = !subs.contains_key(&req.type_url);
                let sub = subs.entry(req.type_url.clone()).or_default();
                if !req.response_nonce.is_empty() && req.response_nonce != sub.nonce {
                    continue; // stale: answers a response that was superseded
                }
                if !req.response_nonce.is_empty() {
                    match &req.error_detail {
                        Some(e) => nodes.nacked(id, &req.type_url, &req.version_info, &e.message),
                        None => nodes.acked(id, &req.type_url, &req.version_info),
                    }
                }
                let names = (!req.resource_names.is_empty())
                    .then(|| req.resource_names.iter().cloned().collect::<BTreeSet<_>>());
                let changed = sub.names != names;
                sub.names = names;
                if first || changed {
                    let snap = snapshot.borrow().clone();
                    if !send(&tx, &snap, id, &req.type_url, sub, &mut nonce, &nodes, true).await {
                        break;
                    }
                }
            }
            changed = snapshot.changed() => {
                if changed.is_err() { break }
                let Some(id) = node.as_deref() else { continue };
                let snap = snapshot.borrow_and_update().clone();
                let mut ok = true;
                for (type_url, sub) in subs.iter_mut() {
                    ok &= send(&tx, &snap, id, type_url, sub, &mut nonce, &nodes, false).await;
                }
                if !ok { break }
            }
        }
    }
    if let Some(id) = node {
        nodes.disconnected(&id);
    }
}

/// Sends the type's resources when their version differs from what was sent (or `force`).
#[allow(clippy::too_many_arguments)]
async fn send(
    tx: &mpsc::Sender<Result<ds::DiscoveryResponse, Status>>,
    snap: &Compiled,
    node: &str,
    type_url: &str,
    sub: &mut Sub,
    nonce: &mut u64,
    nodes: &NodeTable,
    force: bool,
) -> bool {
    let (resources, version) = select(snap, cell_of(node), type_url, sub.names.as_ref());
    if !force && sub.sent_version.as_deref() == Some(version.as_str()) {
        return true;
    }
    *nonce += 1;
    sub.nonce = nonce.to_string();
    sub.sent_version = Some(version.clone());
    nodes.sent(node, type_url, &version);
    let resp = ds::DiscoveryResponse {
        version_info: version,
        resources: resources
            .into_iter()
            .map(|(_, v)| v.resource.clone())
            .collect(),
        type_url: type_url.to_owned(),
        nonce: sub.nonce.clone(),
    };
    tx.send(Ok(resp)).await.is_ok()
}
