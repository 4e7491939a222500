//! Workload identities, shared by the gateway and the control server:
//!
//! - [`svid`]: a leaf certificate held to the X.509-SVID standard before its SPIFFE ID
//!   counts as anyone's identity.
//! - [`verify`]: rustls verifiers that check a peer's SPIFFE ID after path validation.
//! - [`devca`]: the development CA behind `membrane cert`.
//! - [`authority`]: the CA that signs gateways' certificate requests (`membrane control
//!   --ca`), for exactly the identity their credential is bound to.
//! - [`csr`]: a gateway's fresh key and its certificate request.
//! - [`channel`]: TLS for the control channel, both ends, with certificates that rotate.
//! - [`revoked`]: the deny list of peers that still chain to a trusted root.
//!
//! One crypto provider (aws-lc-rs) for the whole process: [`provider`].

pub mod authority;
pub mod channel;
pub mod csr;
pub mod devca;
pub mod revoked;
pub mod svid;
pub mod verify;

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

/// The path of the control server's SPIFFE ID (`spiffe://<trust domain>/membrane/control`):
/// gateways and operators' clients check it.
pub const CONTROL_PATH: &str = "/membrane/control";

/// The hex SHA-256 of `bytes`: a certificate's fingerprint as XFCC's `Hash=` and the deny
/// list write it, and how join tokens are stored.
pub fn sha256_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut s = String::with_capacity(64);
    for b in digest.as_ref() {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}
