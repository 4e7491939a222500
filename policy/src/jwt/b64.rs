//! Strict base64url without padding (RFC 7515 §2): padding, whitespace, characters outside
//! the URL-safe alphabet and non-zero trailing bits are all refused.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const STRICT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

pub fn decode(s: &str) -> Option<Vec<u8>> {
    STRICT.decode(s).ok()
}

pub fn encode(bytes: &[u8]) -> String {
    STRICT.encode(bytes)
}
