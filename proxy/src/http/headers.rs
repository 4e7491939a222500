//! Header rules applied on the way through: hop-by-hop headers end here, forwarding headers
//! are added, and every request carries an `x-request-id`.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::cell::RefCell;

pub use crate::upstream::forwarding::X_REQUEST_ID;
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub use crate::upstream::forwarding::{VIA_HTTP1, VIA_HTTP2};

/// The protocol of an `Upgrade` request to pass on: the first one the client offers that the
/// listener allows (lower-case names). `h2c` is never allowed (the config refuses it): after
/// the upstream's 101 the connection would carry HTTP/2 requests no route or policy sees.
pub fn allowed_upgrade(headers: &HeaderMap, allowed: &[Box<str>]) -> Option<HeaderValue> {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| {
            let name = p.split('/').next().unwrap_or("");
            allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .and_then(|p| HeaderValue::from_str(p).ok())
}

/// Longest incoming `x-request-id` that is kept; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): those named in `Connection`, and the
/// fixed list. `Trailer` is end-to-end (it declares the trailer fields) and stays. With
/// `upgrade_to`, `Upgrade` is set to that protocol and `Connection: upgrade` again, so that
/// an allowed protocol switch passes through, and only to that protocol.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade_to: Option<&HeaderValue>) {
    // One pass over the names finds which hop-by-hop headers are there (standard names compare
    // as small integers); only those are then removed, each removal being a hashed lookup.
    let present = headers.keys().fold(0u8, |acc, name| acc | hop_bit(name));
    strip_known_hop_by_hop(headers, upgrade_to, present);
}

/// The same, for a request whose hop-by-hop fields are known already (`present`: the
/// `normalize::headers::hop` bits its one pass over the names found).
pub fn strip_known_hop_by_hop(
    headers: &mut HeaderMap,
    upgrade_to: Option<&HeaderValue>,
    present: u8,
) {
    let keep_upgrade = upgrade_to.is_some();
    if present == 0 && !keep_upgrade {
        return;
    }
    if present & bit::CONNECTION != 0 {
        // Headers that `Connection` names are hop-by-hop too. `close`, `keep-alive` and
        // `upgrade` are the usual tokens and are handled with the fixed list below.
        let mut named = Vec::new();
        for v in headers.get_all(header::CONNECTION) {
            for token in v.to_str().unwrap_or("").split(',') {
                let t = token.trim();
                if t.is_empty()
                    || t.eq_ignore_ascii_case("close")
                    || t.eq_ignore_ascii_case("keep-alive")
                    || t.eq_ignore_ascii_case("upgrade")
                {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(t.as_bytes()) {
                    named.push(n);
                }
            }
        }
        headers.remove(header::CONNECTION);
        for n in named {
            headers.remove(n);
        }
    }
    for (b, name) in [
        (bit::KEEP_ALIVE, KEEP_ALIVE),
        (bit::PROXY_CONNECTION, PROXY_CONNECTION),
        (bit::TE, header::TE),
        (bit::TRANSFER_ENCODING, header::TRANSFER_ENCODING),
    ] {
        if present & b != 0 {
            headers.remove(name);
        }
    }
    if let Some(to) = upgrade_to {
        // Only the allowed protocol: an `Upgrade` that also offered `h2c` must not let the
        // upstream choose it.
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, to.clone());
    } else if present & bit::UPGRADE != 0 {
        headers.remove(header::UPGRADE);
    }
}

use crate::normalize::headers::hop as bit;

fn hop_bit(name: &HeaderName) -> u8 {
    if name == header::CONNECTION {
        bit::CONNECTION
    } else if name == header::TRANSFER_ENCODING {
        bit::TRANSFER_ENCODING
    } else if name == header::TE {
        bit::TE
    } else if name == header::UPGRADE {
        bit::UPGRADE
    } else if name == KEEP_ALIVE {
        bit::KEEP_ALIVE
    } else if name == PROXY_CONNECTION {
        bit::PROXY_CONNECTION
    } else {
        0
    }
}

/// The request's id: the incoming one when it is a sane token, a new UUID v4 otherwise.
/// `sent`: the request has an `x-request-id` field (so that the common request, without
/// one, costs no lookup).
pub fn request_id(headers: &HeaderMap, sent: bool) -> RequestId {
    if sent
        && let Some(v) = headers.get(X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return RequestId {
            value: v.clone(),
            from_client: true,
        };
    }
    RequestId {
        value: new_request_id(),
        from_client: false,
    }
}

#[derive(Debug, Clone)]
pub struct RequestId {
    pub value: HeaderValue,
    /// The request carries this id already; it need not be set again.
    pub from_client: bool,
}

fn new_request_id() -> HeaderValue {
    let mut bits = fastrand::u128(..);
    // Version 4, variant 1 (RFC 9562).
    bits = (bits & !(0xf << 76)) | (0x4 << 76);
    bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let bytes = bits.to_be_bytes();
    // Byte i goes to these output positions (dashes at 8, 13, 18 and 23).
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    for (b, &at) in bytes.iter().zip(&AT) {
        out[at] = HEX[(b >> 4) as usize];
        out[at + 1] = HEX[(b & 0xf) as usize];
    }
    // Ids are carved from a per-worker buffer: one allocation per 256 ids instead of one
    // per request. Hex digits and dashes are always a valid header value.
    ID_ARENA
        .try_with(|arena| {
            let mut arena = arena.borrow_mut();
            if arena.capacity() - arena.len() < out.len() {
                *arena = BytesMut::with_capacity(out.len() * 256);
            }
            arena.extend_from_slice(&out);
            HeaderValue::from_maybe_shared(arena.split().freeze()).ok()
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("invalid"))
        })
}

thread_local! {
    static ID_ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::TRAILER, HeaderValue::from_static("x-sum"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, None);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept", "trailer"]);
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_connection() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c, WebSocket"));
        let allowed: Vec<Box<str>> = vec!["websocket".into()];
        let to = allowed_upgrade(&h, &allowed).unwrap();
        assert_eq!(to, "WebSocket");
        strip_hop_by_hop(&mut h, Some(&to));
        assert_eq!(h[header::UPGRADE], "WebSocket");
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert_eq!(allowed_upgrade(&h, &allowed), None);
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        let kept = request_id(&h, true);
        assert_eq!(kept.value, "abc-123");
        assert!(kept.from_client);
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        let made = request_id(&h, true);
        assert!(!made.from_client);
        let s = made.value.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_ne!(
            request_id(&HeaderMap::new(), false).value,
            request_id(&HeaderMap::new(), false).value
        );
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_left_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        let before = h.clone();
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h, before);
    }
}
