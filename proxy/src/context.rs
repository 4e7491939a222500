//! What a downstream connection knows, shared by its requests: its listener, the config
//! generations, the client's address, and what its TLS handshake established.

use crate::snapshot::{Listener, Snapshot};
use crate::tls::peer::PeerTls;
use arc_swap::ArcSwap;
use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::Arc;

/// What a downstream connection knows, shared by its requests.
pub struct ConnContext {
    pub listener: Arc<str>,
    pub state: Arc<ArcSwap<Snapshot>>,
    /// The client's address, made into a header value once per connection.
    pub client_ip: HeaderValue,
    pub peer_ip: std::net::IpAddr,
    /// `x-forwarded-proto`: `https` on TLS connections.
    pub scheme: HeaderValue,
    /// What the TLS handshake established; `None` on plain connections.
    pub tls: Option<PeerTls>,
}

impl ConnContext {
    pub fn new(listener: Arc<str>, state: Arc<ArcSwap<Snapshot>>, peer: SocketAddr) -> Self {
        let client_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Self {
            listener,
            state,
            client_ip,
            peer_ip: peer.ip(),
            scheme: HeaderValue::from_static("http"),
            tls: None,
        }
    }

    pub fn set_tls(&mut self, peer: PeerTls) {
        self.scheme = HeaderValue::from_static("https");
        self.tls = Some(peer);
    }

    /// Whether the listener's deny list refuses this connection's client certificate (its
    /// SPIFFE ID or its hash). False on plain connections and without a client certificate.
    pub fn revoked_by(&self, listener: &Listener) -> bool {
        match (&listener.tls, &self.tls) {
            (Some(tls), Some(peer)) if !tls.revoked.is_empty() => tls
                .revoked
                .denies(
                    peer.identity.spiffe.as_ref(),
                    peer.identity.cert_sha256.as_deref(),
                )
                .is_some(),
            _ => false,
        }
    }

    /// `revoked_by` under the generation serving now (a deny list pushed since the
    /// connection's last request). A listener no longer served revokes nothing here: its
    /// stop closes the connection.
    pub fn revoked_now(&self) -> bool {
        if self.tls.is_none() {
            return false;
        }
        let snap = self.state.load();
        snap.listeners
            .get(&self.listener)
            .is_some_and(|l| self.revoked_by(l))
    }
}

/// Set on a response (as an extension) that must be the connection's last: the HTTP/1.1
/// server closes after writing it (a revoked peer keeps nothing open).
#[derive(Debug, Clone, Copy)]
pub struct CloseConnection;
