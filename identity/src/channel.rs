//! TLS for the control channel (ADS and the certificate service), both ends.
//!
//! - The control server presents its own SVID (`spiffe://<trust domain>/membrane/control`)
//!   and asks every client for a certificate from its CA. A client without one may connect
//!   (first contact with a join token has nothing to show yet), but only the certificate
//!   service answers it; ADS refuses a stream without a verified SPIFFE ID.
//! - A gateway verifies the control server's chain against the CA bundle it was given and
//!   then its SPIFFE ID, and presents its own SVID once it has one.
//!
//! Both ends speak HTTP/2 only (ALPN `h2`). Certificates rotate through [`Rotating`]: a
//! renewal swaps the key in for new handshakes; open connections keep theirs.

use crate::verify::{Expect, SpiffeClientVerifier, SpiffeServerVerifier};
use membrane_policy::identity::SpiffeId;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, RwLock};

/// Why a control-channel TLS configuration or key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("PEM: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error("no certificate in the PEM text")]
    NoCertificate,
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the trust bundle holds no usable root")]
    NoRoot,
}

/// A certificate chain and key in rustls' form.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, ChannelError> {
    let chain =
        CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(ChannelError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let provider = crate::provider();
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider)?))
}

/// The roots of a PEM bundle.
pub fn roots(bundle_pem: &str) -> Result<Arc<RootCertStore>, ChannelError> {
    let mut store = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()) {
        // A certificate rustls cannot use as an anchor is skipped; none at all is an error.
        let _ = store.add(der?);
    }
    if store.is_empty() {
        return Err(ChannelError::NoRoot);
    }
    Ok(Arc::new(store))
}

/// A certificate that a renewal replaces for the handshakes that follow.
#[derive(Debug)]
pub struct Rotating(RwLock<Arc<CertifiedKey>>);

impl Rotating {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self(RwLock::new(key)))
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut k) = self.0.write() {
            *k = key;
        }
    }

    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| k.clone())
    }
}

impl ResolvesServerCert for Rotating {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl ResolvesClientCert for Rotating {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

const H2: &[u8] = b"h2";

/// The control server's side: its own certificate, client certificates from `roots`
/// verified when offered (and held to the X.509-SVID rules), not required.
pub fn server_config(
    own: Arc<Rotating>,
    roots: Arc<RootCertStore>,
) -> Result<ServerConfig, ChannelError> {
    let provider = crate::provider();
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()?;
    let verifier = Arc::new(SpiffeClientVerifier::new(inner, Vec::new()));
    let mut c = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(own);
    c.alpn_protocols = vec![H2.to_vec()];
    Ok(c)
}

/// A gateway's side: the control server must chain to `roots` and prove `expect`; the
/// gateway shows `own` when it has a certificate.
pub fn client_config(
    roots: Arc<RootCertStore>,
    expect: Expect,
    own: Option<Arc<Rotating>>,
) -> Result<ClientConfig, ChannelError> {
    let provider = crate::provider();
    let b = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(roots, expect)));
    let mut c = match own {
        Some(own) => b.with_client_cert_resolver(own),
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = vec![H2.to_vec()];
    Ok(c)
}

/// The SPIFFE ID a verified peer proved, if it showed a certificate with one. (The
/// verifiers above already refused a certificate that claims an ID without being an SVID.)
pub fn peer_id(certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = certs?.first()?;
    crate::svid::check_leaf(leaf).ok().flatten()
}
