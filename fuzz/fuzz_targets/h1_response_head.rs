//! The HTTP/1 response-head parser: no input may panic; an accepted head's end-to-end
//! fields can be written back and read as a header map.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use membrane_proxy::h1::response::{Parsed, parse_response};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut buf = BytesMut::from(rest);
    let mut positions = Vec::new();
    // Informational heads come before the final one: parse until a final head, an error or
    // an incomplete one.
    for _ in 0..8 {
        match parse_response(&mut buf, &mut positions, flags & 1 == 1) {
            Ok(Some(Parsed::Informational)) => continue,
            Ok(Some(Parsed::Final(head))) => {
                let mut out = Vec::new();
                head.fields.write(&positions, &mut out);
                let map = head.fields.to_map(&positions);
                assert!(map.len() <= positions.len());
                return;
            }
            Ok(None) | Err(_) => return,
        }
    }
});
