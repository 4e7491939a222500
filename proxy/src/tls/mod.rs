//! TLS on both sides of the proxy, with rustls and one crypto provider (aws-lc-rs) for the
//! whole process.
//!
//! - [`server`]: termination on listeners, SNI, ALPN, client certificates with SPIFFE
//!   trust domains, session resumption that survives certificate rotation.
//! - [`client`]: origination to clusters, verifying the upstream by SPIFFE ID, trust domain
//!   or DNS name, with an optional client certificate.
//! - [`peer`]: what a verified client proved (`PeerIdentity`) and its XFCC header.
//! - [`failure`]: handshake errors sorted into a small, fixed set of metric reasons.
//! - [`devca`], [`svid`]: from `membrane-identity` (the development CA, the X.509-SVID rules).

pub mod cert_info;
pub mod client;
pub mod failure;
pub mod material;
pub mod metrics;
pub mod peer;
pub mod server;
pub use membrane_identity::{devca, svid};

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

pub use membrane_identity::provider;

fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY_13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        TlsVersion::Tls12 => &BOTH,
        TlsVersion::Tls13 => &ONLY_13,
    }
}
