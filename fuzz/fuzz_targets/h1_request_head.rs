//! The HTTP/1 request-head parser, then normalization of what it accepted: no input may
//! panic, and a request that normalization accepts is in its one canonical form (its path
//! normalizes to itself), since policy and the upstream both see that form.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use membrane_proxy::h1::request::parse_request;
use membrane_proxy::normalize::{self, Rules};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut scratch = Vec::new();
    let Ok(Some(head)) = parse_request(&mut buf, &mut scratch) else {
        return;
    };
    let mut req = http::Request::from_parts(head.parts, ());
    let rules = Rules::default();
    for tls in [false, true] {
        if normalize::request(&mut req, &rules, tls).is_ok() {
            let path = req.uri().path().to_owned();
            let again = normalize::path::normalize(&path, &rules.path);
            assert_eq!(again.as_deref(), Ok(path.as_str()), "not canonical: {path}");
            // A second pass over the whole request changes nothing either.
            let before = req.uri().clone();
            assert!(normalize::request(&mut req, &rules, tls).is_ok());
            assert_eq!(req.uri(), &before);
        }
    }
});
