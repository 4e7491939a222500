//! TLS origination for a cluster: the upstream's certificate is verified against the
//! cluster's trust bundle and then by SPIFFE ID, trust domain or DNS name; a client
//! certificate is presented for mTLS when configured.

use super::cert_info::CertInfo;
use super::material::LoadedCert;
use super::provider;
use crate::config::TlsVersion;
pub use membrane_identity::verify::Expect;
use membrane_identity::verify::SpiffeServerVerifier;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use rustls_pki_types::ServerName;
use std::sync::Arc;

/// A cluster's compiled TLS origination.
#[derive(Debug)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    /// The client certificate's facts, for expiry metrics.
    pub client_cert: Option<CertInfo>,
    /// The trust bundle's certificates, for expiry metrics.
    pub bundle: Vec<CertInfo>,
}

pub fn build(
    roots: Arc<RootCertStore>,
    expect: Expect,
    server_name: ServerName<'static>,
    client_cert: Option<LoadedCert>,
    min_version: TlsVersion,
    alpn: Vec<Vec<u8>>,
    revoked: Arc<membrane_identity::revoked::Revoked>,
) -> Result<ClientTls, super::BuildError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(super::versions(min_version))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            SpiffeServerVerifier::new(roots, expect).with_revoked(revoked),
        ));
    let info = client_cert.as_ref().map(|c| c.info.clone());
    let mut config = match client_cert {
        Some(c) => builder.with_client_cert_resolver(Arc::new(OneClientCert(c.key))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn;
    Ok(ClientTls {
        config: Arc::new(config),
        server_name,
        client_cert: info,
        bundle: Vec::new(),
    })
}

#[derive(Debug)]
struct OneClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OneClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
