//! Certificate verifiers that hold a peer's SPIFFE ID to the X.509-SVID rules after
//! rustls' WebPKI path validation: [`SpiffeServerVerifier`] for the client side (an
//! upstream, the control server), [`SpiffeClientVerifier`] for the server side (a listener,
//! the control server's clients).
//!
//! Their refusals are rustls errors carrying [`BadSan`] or [`crate::svid::SvidError`], so
//! that whoever counts handshake failures can tell the reasons apart.

use membrane_policy::identity::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

/// What the server's certificate must prove beyond a valid chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expect {
    SpiffeId(SpiffeId),
    TrustDomain(String),
    /// A SPIFFE ID with this path in whatever trust domain the roots vouch for (the
    /// control server's `/membrane/control`, before a gateway knows its trust domain).
    Path(String),
    Dns(ServerName<'static>),
}

#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expect: Expect,
    provider: Arc<CryptoProvider>,
    revoked: Arc<crate::revoked::Revoked>,
}

impl SpiffeServerVerifier {
    pub fn new(roots: Arc<RootCertStore>, expect: Expect) -> Self {
        Self {
            roots,
            expect,
            provider: crate::provider(),
            revoked: Arc::default(),
        }
    }

    /// Also refuses servers on `revoked` (rustls' `CertificateError::Revoked`).
    pub fn with_revoked(mut self, revoked: Arc<crate::revoked::Revoked>) -> Self {
        self.revoked = revoked;
        self
    }
}

/// The server's SPIFFE ID, if any, must satisfy `ok`; `wanted` says what was expected.
fn expect_id(
    got: Option<SpiffeId>,
    ok: impl Fn(&SpiffeId) -> bool,
    wanted: impl Fn() -> String,
) -> Result<(), rustls::Error> {
    match got {
        Some(got) if ok(&got) => Ok(()),
        Some(got) => Err(bad_san(format!(
            "the server's SPIFFE ID is {got}, expected {}",
            wanted()
        ))),
        None => Err(bad_san(format!(
            "the server's certificate has no SPIFFE ID, expected {}",
            wanted()
        ))),
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
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
        // The server's SPIFFE ID counts only from a valid X.509-SVID.
        let spiffe = || crate::svid::check_leaf(end_entity).map_err(not_svid);
        if !self.revoked.is_empty() {
            let hash = crate::sha256_hex(end_entity);
            if self
                .revoked
                .denies(spiffe()?.as_ref(), Some(&hash))
                .is_some()
            {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
            }
        }
        match &self.expect {
            Expect::Dns(name) => rustls::client::verify_server_name(&cert, name)?,
            Expect::SpiffeId(want) => expect_id(spiffe()?, |g| g == want, || want.to_string())?,
            Expect::Path(want) => expect_id(
                spiffe()?,
                |g| g.path() == want,
                || format!("one with path {want}"),
            )?,
            Expect::TrustDomain(want) => expect_id(
                spiffe()?,
                |g| g.trust_domain() == want,
                || format!("one in trust domain {want}"),
            )?,
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

/// Why a certificate's names were refused (carried inside rustls' error, so that the
/// handshake failure can be counted under `bad_san`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadSan(pub String);

/// rustls' WebPKI verifier, then the SPIFFE trust-domain check.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domains: Vec<String>,
    revoked: Arc<crate::revoked::Revoked>,
}

impl SpiffeClientVerifier {
    /// `inner` is rustls' WebPKI verifier (mandatory or optional client certificates);
    /// `trust_domains` empty: any.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, trust_domains: Vec<String>) -> Self {
        Self {
            inner,
            trust_domains,
            revoked: Arc::default(),
        }
    }

    /// Also refuses the peers on `revoked` (rustls' `CertificateError::Revoked`).
    pub fn with_revoked(mut self, revoked: Arc<crate::revoked::Revoked>) -> Self {
        self.revoked = revoked;
        self
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        // A certificate that claims a SPIFFE ID must be a valid X.509-SVID, trust domains
        // or not: its ID becomes the peer's identity in policy and XFCC.
        let id = crate::svid::check_leaf(end_entity).map_err(not_svid)?;
        if !self.revoked.is_empty() {
            let hash = crate::sha256_hex(end_entity);
            if self.revoked.denies(id.as_ref(), Some(&hash)).is_some() {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
            }
        }
        if self.trust_domains.is_empty() {
            return Ok(ok);
        }
        match id {
            None => Err(bad_san(
                "the client certificate carries no SPIFFE ID (one URI SAN)".into(),
            )),
            Some(id) if !self.trust_domains.iter().any(|d| d == id.trust_domain()) => {
                Err(bad_san(format!(
                    "trust domain `{}` of {id} is not allowed here",
                    id.trust_domain()
                )))
            }
            Some(_) => Ok(ok),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A leaf that claims a SPIFFE ID without being a valid X.509-SVID (counted as `not_svid`).
pub fn not_svid(e: crate::svid::SvidError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

pub fn bad_san(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(BadSan(
        message,
    )))))
}
