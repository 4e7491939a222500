//! The loop every ADS stream runs, whatever its variant: read a request (its node checked on
//! the first), or see the resources change; hand either to the variant (`sotw`, `delta`),
//! which answers on the stream; end when the client goes, a send fails or the node is
//! refused, and then take the node's stream off the table.

use super::node_id::NodeId;
use super::status::NodeTable;
use super::{AdsRequest, Guard, next_request};
use crate::compile::Compiled;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

/// What a variant's steps send with: the stream, the node table, the stream's nonces.
pub(super) struct Out<R> {
    pub tx: mpsc::Sender<Result<R, Status>>,
    pub nodes: Arc<NodeTable>,
    nonce: u64,
}

impl<R> Out<R> {
    /// The next nonce of the stream.
    pub fn nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    /// Sends a response; false when the stream is gone.
    pub async fn send(&self, resp: R) -> bool {
        self.tx.send(Ok(resp)).await.is_ok()
    }
}

/// One variant of the protocol: what it does with a request and with a change of the
/// resources. Each returns false to end the stream.
pub(super) trait Variant: Send {
    type Request: AdsRequest + Send + 'static;
    type Response: Send + 'static;
    /// Its name in the node table.
    const PROTOCOL: &'static str;

    fn request(
        &mut self,
        req: Self::Request,
        node: &NodeId,
        snap: &Compiled,
        out: &mut Out<Self::Response>,
    ) -> impl Future<Output = bool> + Send;

    fn changed(
        &mut self,
        node: &NodeId,
        snap: &Compiled,
        out: &mut Out<Self::Response>,
    ) -> impl Future<Output = bool> + Send;
}

pub(super) async fn drive<V: Variant>(
    mut input: Streaming<V::Request>,
    tx: mpsc::Sender<Result<V::Response, Status>>,
    mut snapshot: watch::Receiver<Arc<Compiled>>,
    nodes: Arc<NodeTable>,
    guard: Guard,
    mut variant: V,
) {
    let mut node: Option<NodeId> = None;
    let mut out = Out {
        tx,
        nodes,
        nonce: 0,
    };
    loop {
        tokio::select! {
            req = input.message() => {
                let snap = snapshot.borrow().clone();
                let Some(req) =
                    next_request(req, &mut node, V::PROTOCOL, &out.nodes, &snap, &guard, &out.tx).await
                else {
                    break;
                };
                let Some(id) = node.as_ref() else { break };
                if !variant.request(req, id, &snap, &mut out).await {
                    break;
                }
            }
            changed = snapshot.changed() => {
                if changed.is_err() { break }
                let Some(id) = node.as_ref() else { continue };
                let snap = snapshot.borrow_and_update().clone();
                if !variant.changed(id, &snap, &mut out).await {
                    break;
                }
            }
        }
    }
    if let Some(id) = node {
        out.nodes.disconnected(id.as_str());
    }
}
