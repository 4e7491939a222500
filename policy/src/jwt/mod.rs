//! JWT verification: keys (JWK sets), the JWS signature, the claims, and a cache of verified
//! tokens. Pure: keys arrive as text, time arrives as a number.

pub mod alg;
pub mod b64;
pub mod cache;
pub mod jwk;
pub mod sign;
pub mod verify;

pub use alg::Alg;
pub use cache::TokenCache;
pub use jwk::{JwkError, Key, KeySet};
pub use sign::Signer;
pub use verify::{Claims, JwtError, Validation, validate_claims, verify_jws};

/// Signature, then claims: the whole check of one token.
pub fn verify(
    token: &str,
    keys: &KeySet,
    validation: &Validation,
    now: u64,
) -> Result<Claims, JwtError> {
    let jws = verify_jws(token, keys)?;
    validate_claims(&jws.payload, validation, now)
}
