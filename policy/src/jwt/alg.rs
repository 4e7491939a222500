//! The signature algorithms Membrane accepts in JWTs. HMAC (`HS*`) is not among them: a
//! gateway verifies tokens from identity providers with their public keys, and refusing
//! HMAC outright closes the classic confusion of an RSA public key used as an HMAC secret.
//! `none` is refused as well.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// The kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

pub const ALL: [Alg; 9] = [
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
    Alg::ES256,
    Alg::ES384,
    Alg::EdDSA,
];

impl Alg {
    pub fn parse(s: &str) -> Option<Alg> {
        ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn key_kind(self) -> KeyKind {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                KeyKind::Rsa
            }
            Alg::ES256 => KeyKind::P256,
            Alg::ES384 => KeyKind::P384,
            Alg::EdDSA => KeyKind::Ed25519,
        }
    }

    /// aws-lc-rs's verification algorithm. RSA keys from 2048 to 8192 bits; ECDSA signatures
    /// in the fixed-width `r || s` form JWS uses (RFC 7518 §3.4), never DER.
    pub(crate) fn verification(self) -> &'static dyn aws_lc_rs::signature::VerificationAlgorithm {
        use aws_lc_rs::signature as s;
        match self {
            Alg::RS256 => &s::RSA_PKCS1_2048_8192_SHA256,
            Alg::RS384 => &s::RSA_PKCS1_2048_8192_SHA384,
            Alg::RS512 => &s::RSA_PKCS1_2048_8192_SHA512,
            Alg::PS256 => &s::RSA_PSS_2048_8192_SHA256,
            Alg::PS384 => &s::RSA_PSS_2048_8192_SHA384,
            Alg::PS512 => &s::RSA_PSS_2048_8192_SHA512,
            Alg::ES256 => &s::ECDSA_P256_SHA256_FIXED,
            Alg::ES384 => &s::ECDSA_P384_SHA384_FIXED,
            Alg::EdDSA => &s::ED25519,
        }
    }

    pub(crate) fn rsa_params(self) -> Option<&'static aws_lc_rs::signature::RsaParameters> {
        use aws_lc_rs::signature as s;
        Some(match self {
            Alg::RS256 => &s::RSA_PKCS1_2048_8192_SHA256,
            Alg::RS384 => &s::RSA_PKCS1_2048_8192_SHA384,
            Alg::RS512 => &s::RSA_PKCS1_2048_8192_SHA512,
            Alg::PS256 => &s::RSA_PSS_2048_8192_SHA256,
            Alg::PS384 => &s::RSA_PSS_2048_8192_SHA384,
            Alg::PS512 => &s::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        })
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
