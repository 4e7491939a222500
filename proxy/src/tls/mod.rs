//! TLS on both sides of the proxy, with rustls and one crypto provider (aws-lc-rs) for the
//! whole process.
//!
//! - [`server`]: termination on listeners, SNI, ALPN, client certificates with SPIFFE
//!   trust domains, session resumption that survives certificate rotation.
//! - [`client`]: origination to clusters, verifying the upstream by SPIFFE ID, trust domain
//!   or DNS name, with an optional client certificate.
//! - [`peer`]: what a verified client proved (`PeerIdentity`) and its XFCC header.
//! - [`svid`]: a peer's leaf held to the X.509-SVID standard before its SPIFFE ID counts.
//! - [`failure`]: handshake errors sorted into a small, fixed set of metric reasons.
//! - [`devca`]: the development CA behind `membrane cert`.

pub mod cert_info;
pub mod client;
pub mod devca;
pub mod failure;
pub mod material;
pub mod metrics;
pub mod peer;
pub mod server;
pub mod svid;

use crate::config::TlsVersion;

/// Why a TLS configuration could not be built from its parts.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("client_auth needs a trust_bundle")]
    NoTrustBundle,
    #[error("a TLS listener needs a certificate")]
    NoCertificate,
}
use rustls::crypto::CryptoProvider;
use std::sync::{Arc, OnceLock};

/// The one crypto provider. Also installed as rustls' process default at start-up, so that
/// a library that asks for the default gets the same one.
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| {
        let p = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // Fails only when a default is installed already, which is then left as it is.
        let _ = CryptoProvider::install_default((*p).clone());
        p
    })
    .clone()
}

fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY_13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        TlsVersion::Tls12 => &BOTH,
        TlsVersion::Tls13 => &ONLY_13,
    }
}
