//! JWK set parsing and JWS verification: no input may panic. The input is a key set and a
//! token separated by the first NUL; a token is never accepted against an empty key set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use membrane_policy::jwt::{KeySet, verify_jws};

fuzz_target!(|data: &[u8]| {
    let (jwks, token) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let (Ok(jwks), Ok(token)) = (std::str::from_utf8(jwks), std::str::from_utf8(token)) else {
        return;
    };
    let keys = KeySet::from_json(jwks).map(|(k, _)| k).unwrap_or_default();
    let verified = verify_jws(token, &keys);
    if keys.keys.is_empty() {
        assert!(verified.is_err(), "a token verified without a key");
    }
});
