//! `membrane.ca.v1.CertificateService`: a gateway's certificate request, authenticated by
//! a join token (first contact) or by its current certificate over mTLS (renewal), is signed
//! for its cell's SPIFFE ID and nothing else.
//!
//! The identity a request may get is fixed by its credential before the request is read:
//! the cell a join token was minted for, or the SPIFFE ID of the client certificate. The
//! node id must name that cell, and the request must ask for exactly that cell's ID.

use super::current::CurrentCa;
use super::shared_tokens::Tokens;
use super::tokens::TokenError;
use crate::channel::ChannelPeer;
use crate::compile::Compiled;
use crate::proto::membrane::ca::v1 as pb;
use crate::reasons::ByReason;
use crate::revoked::DenyList;
use crate::server::node_id::NodeId;
use membrane_identity::authority::IssueError;
use membrane_policy::identity::SpiffeId;
use pb::certificate_service_server::{CertificateService, CertificateServiceServer};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Issued and refused certificates, for the admin endpoint's metrics.
#[derive(Debug, Default)]
pub struct CaCounters {
    pub issued: AtomicU64,
    pub refused: ByReason,
    /// The expiry (unix seconds) of the last certificate issued to each node.
    expiries: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

/// Nodes remembered for the active-certificates gauge; past this, expired ones are dropped
/// first and then new nodes are not counted (a bound against node ids made up by a client).
const MAX_TRACKED_NODES: usize = 100_000;

impl CaCounters {
    fn issued_to(&self, node: &str, not_after: i64) {
        self.issued.fetch_add(1, Ordering::Relaxed);
        let Ok(mut m) = self.expiries.lock() else {
            return;
        };
        if m.len() >= MAX_TRACKED_NODES && !m.contains_key(node) {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            m.retain(|_, at| *at > now);
            if m.len() >= MAX_TRACKED_NODES {
                return;
            }
        }
        m.insert(node.to_owned(), not_after);
    }

    /// Nodes whose last certificate has not expired.
    pub fn active(&self) -> usize {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.expiries
            .lock()
            .map(|m| m.values().filter(|at| **at > now).count())
            .unwrap_or(0)
    }
}

#[derive(Clone)]
pub struct CertService {
    authority: Arc<CurrentCa>,
    tokens: Tokens,
    deny: DenyList,
    snapshot: watch::Receiver<Arc<Compiled>>,
    pub counters: Arc<CaCounters>,
}

/// Largest certificate request accepted, bytes (a P-256 request is under 1 KiB).
const MAX_REQUEST_BYTES: usize = 16 * 1024;

impl CertService {
    pub fn new(
        authority: Arc<CurrentCa>,
        tokens: Tokens,
        deny: DenyList,
        snapshot: watch::Receiver<Arc<Compiled>>,
    ) -> Self {
        Self {
            authority,
            tokens,
            deny,
            snapshot,
            counters: Arc::default(),
        }
    }

    pub fn server(self) -> CertificateServiceServer<Self> {
        CertificateServiceServer::new(self)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(membrane_api::stream::MAX_RESPONSE_BYTES)
    }

    fn refuse(&self, reason: &'static str, status: Status) -> Status {
        self.counters.refused.add(reason);
        tracing::warn!(
            reason,
            message = status.message(),
            "certificate request refused"
        );
        status
    }
}

fn issue_reason(e: &IssueError) -> &'static str {
    match e {
        IssueError::Csr(_) => "bad_csr",
        IssueError::Identity { .. } => "wrong_identity",
        IssueError::ExtraNames(_) => "extra_names",
        IssueError::Random | IssueError::Sign(_) | IssueError::NotSvid(_) => "internal",
    }
}

fn token_status(e: &TokenError) -> Status {
    match e {
        TokenError::Unknown | TokenError::Expired(_) | TokenError::Reused(_) => {
            Status::unauthenticated(e.to_string())
        }
        TokenError::WrongCell { .. } => Status::permission_denied(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl CertificateService for CertService {
    async fn create_certificate(
        &self,
        request: Request<pb::CreateCertificateRequest>,
    ) -> Result<Response<pb::CreateCertificateResponse>, Status> {
        let channel_peer = request.extensions().get::<ChannelPeer>();
        let peer = channel_peer.and_then(|p| p.id.clone());
        let peer_hash = channel_peer.and_then(|p| p.cert_sha256.clone());
        let req = request.into_inner();
        let node = NodeId::parse(&req.node).map_err(|s| self.refuse("bad_node", s))?;
        let cell = node.cell().to_owned();
        let bound = self.snapshot.borrow().identities.get(&cell).cloned();
        let Some(bound) = bound.and_then(|b| SpiffeId::parse(&b).ok()) else {
            return Err(self.refuse(
                "unknown_cell",
                Status::not_found(format!("no cell `{cell}` is defined")),
            ));
        };
        // A renewal: the certificate shown is the credential, and it must be the cell's.
        if let Some(id) = &peer
            && id != &bound
        {
            return Err(self.refuse(
                "wrong_identity",
                Status::permission_denied(format!(
                    "the client certificate is {id}; node `{}` belongs to cell `{cell}`, whose identity is {bound}",
                    node.as_str()
                )),
            ));
        }
        // A revoked identity gets nothing, by renewal or by token; a revoked certificate
        // cannot renew itself.
        if let Some(entry) = self.deny.denies(&bound, peer_hash.as_deref()) {
            return Err(self.refuse(
                "revoked",
                Status::permission_denied(format!(
                    "{bound} is revoked by the deny list entry `{entry}`"
                )),
            ));
        }
        if peer.is_none() && req.join_token.is_empty() {
            return Err(self.refuse(
                "no_credential",
                Status::unauthenticated(
                    "a certificate request needs a join token (`membrane control token`) or a client certificate from this CA",
                ),
            ));
        }
        let authority = self.authority.get();
        let signed = authority
            .sign_request(
                &req.csr,
                &bound,
                &[format!("{cell}.{}", bound.trust_domain())],
            )
            .map_err(|e| {
                let status = match &e {
                    IssueError::Csr(_) | IssueError::ExtraNames(_) => {
                        Status::invalid_argument(e.to_string())
                    }
                    IssueError::Identity { .. } => Status::permission_denied(e.to_string()),
                    _ => Status::internal(e.to_string()),
                };
                self.refuse(issue_reason(&e), status)
            })?;
        // The token is spent only on a request that could be signed; the certificate is
        // handed out only when the token was good.
        if peer.is_none() {
            let redeemed = self.tokens.redeem(&req.join_token, &cell).await;
            if let Err(e) = redeemed {
                return Err(self.refuse(e.reason(), token_status(&e)));
            }
        }
        self.counters
            .issued_to(node.as_str(), signed.not_after.unix_timestamp());
        tracing::info!(node = node.as_str(), id = %bound, renewal = peer.is_some(), "certificate issued");
        Ok(Response::new(pb::CreateCertificateResponse {
            cert_chain: signed.chain,
            trust_bundle: authority.bundle_pem().to_owned(),
            spiffe_id: bound.to_string(),
        }))
    }
}
