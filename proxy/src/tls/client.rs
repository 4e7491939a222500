//! TLS origination for a cluster: the upstream's certificate is verified against the
//! cluster's trust bundle and then by SPIFFE ID, trust domain or DNS name; a client
//! certificate is presented for mTLS when configured.

use super::cert_info::CertInfo;
use super::material::LoadedCert;
use super::provider;
use super::server::bad_san;
use crate::config::TlsVersion;
use membrane_policy::identity::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

/// What the upstream's certificate must prove beyond a valid chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expect {
    SpiffeId(SpiffeId),
    TrustDomain(String),
    Dns(ServerName<'static>),
}

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
) -> Result<ClientTls, super::BuildError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(super::versions(min_version))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UpstreamVerifier {
            roots,
            expect,
            provider: provider.clone(),
        }));
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

#[derive(Debug)]
struct UpstreamVerifier {
    roots: Arc<RootCertStore>,
    expect: Expect,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        // The upstream's SPIFFE ID counts only from a valid X.509-SVID.
        let spiffe = || super::svid::check_leaf(end_entity).map_err(super::server::not_svid);
        match &self.expect {
            Expect::Dns(name) => rustls::client::verify_server_name(&cert, name)?,
            Expect::SpiffeId(want) => match spiffe()? {
                Some(got) if &got == want => {}
                Some(got) => {
                    return Err(bad_san(format!(
                        "the upstream's SPIFFE ID is {got}, expected {want}"
                    )));
                }
                None => {
                    return Err(bad_san(format!(
                        "the upstream's certificate has no SPIFFE ID, expected {want}"
                    )));
                }
            },
            Expect::TrustDomain(want) => match spiffe()? {
                Some(got) if got.trust_domain() == want => {}
                Some(got) => {
                    return Err(bad_san(format!(
                        "the upstream's SPIFFE ID {got} is not in trust domain {want}"
                    )));
                }
                None => {
                    return Err(bad_san(format!(
                        "the upstream's certificate has no SPIFFE ID, expected one in {want}"
                    )));
                }
            },
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
