//! What a TLS client proved about itself, as the request path sees it.

use super::cert_info::CertInfo;
use http::HeaderValue;
use membrane_policy::identity::{PeerIdentity, SpiffeId};
use rustls_pki_types::CertificateDer;

/// Per connection: the peer's identity and its `x-forwarded-client-cert` value, made once.
#[derive(Debug, Clone)]
pub struct PeerTls {
    pub identity: PeerIdentity,
    /// Envoy's XFCC format: `By=<this listener's SPIFFE ID>;Hash=<hex SHA-256 of the
    /// client's leaf certificate>;URI=<the client's SPIFFE ID>` (each part only when known).
    pub xfcc: Option<HeaderValue>,
    pub sni: Option<String>,
}

impl PeerTls {
    /// From the verified chain rustls reports (none when the client sent no certificate).
    pub fn new(
        peer_certs: Option<&[CertificateDer<'_>]>,
        own_id: Option<&SpiffeId>,
        sni: Option<&str>,
    ) -> Self {
        let leaf = peer_certs.and_then(|c| c.first());
        let mut identity = PeerIdentity::default();
        if let Some(leaf) = leaf {
            identity.cert_sha256 = Some(membrane_identity::sha256_hex(leaf.as_ref()));
            identity.spiffe = CertInfo::parse(leaf).ok().and_then(|i| i.spiffe);
        }
        let xfcc = identity.cert_sha256.as_ref().and_then(|hash| {
            let mut v = String::with_capacity(160);
            if let Some(by) = own_id {
                v.push_str("By=");
                v.push_str(by.as_str());
                v.push(';');
            }
            v.push_str("Hash=");
            v.push_str(hash);
            if let Some(uri) = &identity.spiffe {
                // SPIFFE IDs hold no `,`, `;`, `=` or `"`, so no quoting is needed.
                v.push_str(";URI=");
                v.push_str(uri.as_str());
            }
            HeaderValue::from_str(&v).ok()
        });
        Self {
            identity,
            xfcc,
            sni: sni.map(str::to_owned),
        }
    }
}
