//! The aggregated discovery service: state of the world (`StreamAggregatedResources`) and
//! incremental (`DeltaAggregatedResources`), over one shared, swappable set of compiled
//! resources. Each gateway (node id `<cell>/<instance>`) sees only its cell's resources.
//! What was sent, ACKed and NACKed per node and type is kept in a [`NodeTable`].

mod delta;
pub mod node_id;
mod sotw;
pub mod status;
mod stream;

use crate::channel::ChannelPeer;
use crate::compile::Compiled;
use crate::proto::envoy::service::discovery::v3 as ds;
use crate::reasons::ByReason;
use crate::revoked::DenyList;
use ds::aggregated_discovery_service_server::AggregatedDiscoveryService;
use membrane_policy::identity::SpiffeId;
use node_id::NodeId;
use status::NodeTable;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

pub use ds::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
pub use membrane_api::stream::{ChannelStream, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};

/// The service; cheap to clone.
#[derive(Clone)]
pub struct Ads {
    snapshot: watch::Receiver<Arc<Compiled>>,
    pub nodes: Arc<NodeTable>,
    /// Streams need a client certificate whose SPIFFE ID is their cell's (set when the
    /// control channel is TLS).
    require_peer: bool,
    /// Streams refused before they were served, by reason.
    pub refused: Arc<ByReason>,
    /// Revoked identities and certificates (with peers required).
    deny: Option<DenyList>,
}

impl Ads {
    /// A service over `snapshot`; publish new resources by sending on its sender.
    pub fn new(snapshot: watch::Receiver<Arc<Compiled>>) -> Self {
        Self {
            snapshot,
            nodes: Arc::new(NodeTable::default()),
            require_peer: false,
            refused: Arc::default(),
            deny: None,
        }
    }

    /// Serves only streams whose client certificate is their node's cell's identity, and
    /// is not on the deny list.
    pub fn requiring_peers(mut self, deny: DenyList) -> Self {
        self.require_peer = true;
        self.deny = Some(deny);
        self
    }

    /// What a stream's client must be: `None` when peers are not required, else the
    /// SPIFFE ID its certificate proved. Without one the stream is refused at once.
    fn credential<T>(&self, request: &Request<T>) -> Result<Guard, Status> {
        let guard = |bound| Guard {
            bound,
            refused: self.refused.clone(),
        };
        if !self.require_peer {
            return Ok(guard(None));
        }
        let peer = request.extensions().get::<ChannelPeer>();
        match peer.and_then(|p| p.id.clone()) {
            Some(id) => {
                let hash = peer.and_then(|p| p.cert_sha256.as_deref());
                if let Some(entry) = self.deny.as_ref().and_then(|d| d.denies(&id, hash)) {
                    self.refused.add("revoked");
                    tracing::warn!(%id, entry, "ADS stream refused: revoked");
                    return Err(Status::permission_denied(format!(
                        "the client certificate ({id}) is revoked by the deny list entry `{entry}`"
                    )));
                }
                Ok(guard(Some(id)))
            }
            None => {
                self.refused.add("no_client_certificate");
                tracing::warn!("ADS stream refused: no client certificate");
                Err(Status::unauthenticated(
                    "ADS needs a client certificate from the control server's CA: join with a token first (`membrane proxy --join-token`)",
                ))
            }
        }
    }
}

/// Who may open a stream: the identity its certificate proved (when peers are required),
/// and where refusals are counted.
#[derive(Clone)]
pub(crate) struct Guard {
    bound: Option<SpiffeId>,
    refused: Arc<ByReason>,
}

/// Takes the stream's node id from its first request (later requests may leave it out) and
/// checks it: its syntax, that its cell exists, and the node table's bounds. A stream that
/// fails is answered with the reason as a gRPC status and must end: returns false.
async fn identify<T>(
    node: &mut Option<NodeId>,
    from: Option<&crate::proto::envoy::config::core::v3::Node>,
    protocol: &'static str,
    nodes: &NodeTable,
    snapshot: &Compiled,
    guard: &Guard,
    tx: &mpsc::Sender<Result<T, Status>>,
) -> bool {
    if node.is_some() {
        return true;
    }
    let raw = from.map_or("", |n| n.id.as_str());
    let checked = NodeId::parse(raw)
        .and_then(|id| {
            if snapshot.gateways.contains_key(id.cell()) {
                Ok(id)
            } else {
                Err(Status::not_found(format!(
                    "no cell `{}` is defined: node.id `{}` names a cell the control server does not serve",
                    id.cell(),
                    id.as_str()
                )))
            }
        })
        .and_then(|id| match &guard.bound {
            // The node's cell must be the one its certificate was issued to: a gateway can
            // read only its own cell's resources.
            Some(cert) if snapshot.identities.get(id.cell()).map(String::as_str) != Some(cert.as_str()) => {
                guard.refused.add("wrong_cell");
                Err(Status::permission_denied(format!(
                    "node.id `{}` names cell `{}`; the client certificate is {cert}, not that cell's",
                    id.as_str(),
                    id.cell()
                )))
            }
            _ => Ok(id),
        })
        .and_then(|id| nodes.connected(id.as_str(), protocol).map(|()| id));
    match checked {
        Ok(id) => {
            *node = Some(id);
            true
        }
        Err(status) => {
            tracing::warn!(code = ?status.code(), reason = status.message(), "ADS stream refused");
            let _ = tx.send(Err(status)).await;
            false
        }
    }
}

/// What the stream loops need of a request of either variant.
pub(crate) trait AdsRequest {
    fn node(&self) -> Option<&crate::proto::envoy::config::core::v3::Node>;
}

impl AdsRequest for ds::DiscoveryRequest {
    fn node(&self) -> Option<&crate::proto::envoy::config::core::v3::Node> {
        self.node.as_ref()
    }
}

impl AdsRequest for ds::DeltaDiscoveryRequest {
    fn node(&self) -> Option<&crate::proto::envoy::config::core::v3::Node> {
        self.node.as_ref()
    }
}

/// A stream's next request, its node checked on the first (`identify`). `None` when the
/// stream is to end: the client closed it, or its request was unreadable or its node refused
/// (each answered with a non-OK status).
pub(crate) async fn next_request<R: AdsRequest, T>(
    read: Result<Option<R>, Status>,
    node: &mut Option<NodeId>,
    protocol: &'static str,
    nodes: &NodeTable,
    snapshot: &Compiled,
    guard: &Guard,
    tx: &mpsc::Sender<Result<T, Status>>,
) -> Option<R> {
    let req = match read {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(status) => {
            unreadable(status, node.as_ref(), tx).await;
            return None;
        }
    };
    identify(node, req.node(), protocol, nodes, snapshot, guard, tx)
        .await
        .then_some(req)
}

/// Ends a stream whose request could not be read (it did not decode, or was over the size
/// limit): the client gets a non-OK status that says so, and the log says which node.
/// (Ending with OK, as before, told a client its stream had simply finished.)
async fn unreadable<T>(
    status: Status,
    node: Option<&NodeId>,
    tx: &mpsc::Sender<Result<T, Status>>,
) {
    let code = match status.code() {
        // tonic reports a message that does not decode as INTERNAL: it is the client's.
        tonic::Code::Internal | tonic::Code::Ok | tonic::Code::Unknown => {
            tonic::Code::InvalidArgument
        }
        c => c,
    };
    if code == tonic::Code::Cancelled {
        return; // the client went away
    }
    tracing::warn!(
        node = node.map_or("-", NodeId::as_str),
        ?code,
        reason = status.message(),
        "ADS request unreadable; ending the stream"
    );
    let _ = tx
        .send(Err(Status::new(
            code,
            format!("the request could not be read: {}", status.message()),
        )))
        .await;
}

/// Concurrent gRPC streams on one connection (a gateway needs one).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// The ADS service with its message size limits.
pub fn service(ads: Ads) -> AggregatedDiscoveryServiceServer<Ads> {
    AggregatedDiscoveryServiceServer::new(ads)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
}

/// The gRPC server the ADS service runs in, with its per-connection stream limit (the
/// node table bounds streams per node and in all).
pub fn transport() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
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
        let guard = self.credential(&request)?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(stream::drive(
            request.into_inner(),
            tx,
            self.snapshot.clone(),
            self.nodes.clone(),
            guard,
            sotw::Sotw::default(),
        ));
        Ok(Response::new(ChannelStream(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<ds::DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let guard = self.credential(&request)?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(stream::drive(
            request.into_inner(),
            tx,
            self.snapshot.clone(),
            self.nodes.clone(),
            guard,
            delta::Delta::default(),
        ));
        Ok(Response::new(ChannelStream(rx)))
    }
}
