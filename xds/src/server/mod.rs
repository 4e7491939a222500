//! The aggregated discovery service: state of the world (`StreamAggregatedResources`) and
//! incremental (`DeltaAggregatedResources`), over one shared, swappable set of compiled
//! resources. Each gateway (node id `<cell>/<instance>`) sees only its cell's resources.
//! What was sent, ACKed and NACKed per node and type is kept in a [`NodeTable`].

mod delta;
mod sotw;
pub mod status;

use crate::compile::Compiled;
use crate::proto::envoy::service::discovery::v3 as ds;
use ds::aggregated_discovery_service_server::AggregatedDiscoveryService;
use status::NodeTable;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch};
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub use ds::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;

/// The service; cheap to clone.
#[derive(Clone)]
pub struct Ads {
    snapshot: watch::Receiver<Arc<Compiled>>,
    pub nodes: Arc<NodeTable>,
}

impl Ads {
    /// A service over `snapshot`; publish new resources by sending on its sender.
    pub fn new(snapshot: watch::Receiver<Arc<Compiled>>) -> Self {
        Self {
            snapshot,
            nodes: Arc::new(NodeTable::default()),
        }
    }
}

/// Takes the stream's node id from its first request (later requests may leave it out).
/// Without one, the stream is answered with an error and must end: returns false.
pub(crate) async fn identify<T>(
    node: &mut Option<String>,
    from: Option<&crate::proto::envoy::config::core::v3::Node>,
    protocol: &'static str,
    nodes: &NodeTable,
    tx: &mpsc::Sender<Result<T, Status>>,
) -> bool {
    if node.is_some() {
        return true;
    }
    match from.map(|n| n.id.clone()).filter(|id| !id.is_empty()) {
        Some(id) => {
            nodes.connected(&id, protocol);
            *node = Some(id);
            true
        }
        None => {
            let msg = "the first request needs node.id (`<cell>/<instance>`)";
            let _ = tx.send(Err(Status::invalid_argument(msg))).await;
            false
        }
    }
}

/// The cell part of a node id (`orders/gw-1` → `orders`).
pub(crate) fn cell_of(node_id: &str) -> &str {
    node_id.split('/').next().unwrap_or(node_id)
}

/// A gRPC message stream fed through a channel: the server's responses (fed by each
/// stream's task) and a client's requests.
pub struct ChannelStream<T>(pub mpsc::Receiver<T>);

impl<T> Stream for ChannelStream<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// Responses for one stream.
pub type ResponseStream<T> = ChannelStream<Result<T, Status>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<ds::DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<ds::DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<ds::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(sotw::run(
            request.into_inner(),
            tx,
            self.snapshot.clone(),
            self.nodes.clone(),
        ));
        Ok(Response::new(ChannelStream(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<ds::DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(delta::run(
            request.into_inner(),
            tx,
            self.snapshot.clone(),
            self.nodes.clone(),
        ));
        Ok(Response::new(ChannelStream(rx)))
    }
}
