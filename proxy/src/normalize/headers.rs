//! Request header fields made canonical before routing and policy, so that a rule and the
//! upstream read the same fields.
//!
//! - Names with `_`: CGI, WSGI and PHP upstreams turn `x_membrane_sub` and `x-membrane-sub`
//!   into the same variable, so an underscore spelling would slip past every rule about the
//!   dash one. The listener's `headers_with_underscores` says `drop` (the default, as nginx's
//!   `underscores_in_headers off`), `reject` (400) or `allow` (Envoy's default).
//! - Fields only the gateway may set: `x-membrane-*` (claims of a verified token) and
//!   `x-forwarded-client-cert` (the verified client certificate) are removed here, before
//!   policy, and set again on the way out from what Membrane verified.
//! - The forwarding family (`Forwarded`, `X-Forwarded-*`, `X-Real-IP` and its kin) says who
//!   the client is and what it asked for. With `trusted_hops: 0` (the default) no client is
//!   trusted to say so: all of them are removed, and Membrane's own `x-forwarded-for` and
//!   `x-forwarded-proto` go out. With `trusted_hops: N` the proxies in front are trusted: the
//!   family is kept, and `x-forwarded-for` keeps only its last N addresses (the ones those
//!   proxies appended) before Membrane appends the client's.
//! - Fields that make an upstream serve another method or path than the request line says
//!   (`X-HTTP-Method-Override`, `X-Original-URL`, `X-Rewrite-URL`, …) are always removed:
//!   policy decides on the request line, and so must the upstream.
//! - `HTTP2-Settings` belongs to an `h2c` upgrade, which is never passed on.
//! - More than one `Authorization` field is refused (RFC 9110 §11.6.2 allows one): an
//!   upstream could read a credential other than the one Membrane verified.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// What to do with header names that contain `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Underscores {
    #[default]
    Drop,
    Reject,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header `{0}` has an underscore in its name, which this listener refuses")]
    Underscore(String),
    #[error("the request has more than one Authorization header")]
    DuplicateAuthorization,
}

/// Forwarding-family fields other than `x-forwarded-for`: kept only from trusted hops.
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-real-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "true-client-ip",
    "x-url-scheme",
    "front-end-https",
];

/// Fields that tell an upstream to serve another method or path: never forwarded.
const OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-rewrite-url",
    "x-envoy-original-path",
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What the one pass over a request's field names found, for the phases after it: so
/// that none of them walks the names again or hashes a lookup for a field that is not there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields {
    /// An `x-request-id` came with the request.
    pub request_id: bool,
    /// A `traceparent` or `tracestate` came with the request.
    pub trace_context: bool,
    /// Which hop-by-hop fields are there (`hop::*` bits).
    pub hop_by_hop: u8,
}

/// Bits of [`Fields::hop_by_hop`].
pub mod hop {
    pub const CONNECTION: u8 = 1;
    pub const KEEP_ALIVE: u8 = 2;
    pub const PROXY_CONNECTION: u8 = 4;
    pub const TE: u8 = 8;
    pub const TRANSFER_ENCODING: u8 = 32;
    pub const UPGRADE: u8 = 64;
}

#[derive(PartialEq, Eq)]
enum Kind {
    Plain,
    Underscore,
    /// Removed whatever the settings.
    Remove,
    Forwarding,
    ForwardedFor,
    Authorization,
    RequestId,
    TraceContext,
    Hop(u8),
}

fn kind(name: &HeaderName) -> Kind {
    let s = name.as_str();
    let b = s.as_bytes();
    // Runs for every field of every request: one plain pass for `_`, then the first byte
    // picks the few names that can matter (standard names compare as small integers).
    let mut underscore = false;
    for &c in b {
        underscore |= c == b'_';
    }
    if underscore {
        return Kind::Underscore;
    }
    match b.first() {
        Some(b'a') if name == header::AUTHORIZATION => Kind::Authorization,
        Some(b'c') if name == header::CONNECTION => Kind::Hop(hop::CONNECTION),
        Some(b't') if name == header::TE => Kind::Hop(hop::TE),
        Some(b't') if name == header::TRANSFER_ENCODING => Kind::Hop(hop::TRANSFER_ENCODING),
        Some(b'u') if name == header::UPGRADE => Kind::Hop(hop::UPGRADE),
        Some(b'k') if s == "keep-alive" => Kind::Hop(hop::KEEP_ALIVE),
        Some(b'p') if s == "proxy-connection" => Kind::Hop(hop::PROXY_CONNECTION),
        Some(b'h') if s == "http2-settings" => Kind::Remove,
        Some(b't') if s == "traceparent" || s == "tracestate" => Kind::TraceContext,
        Some(b'f' | b't') if FORWARDING.contains(&s) => Kind::Forwarding,
        Some(b'x') if b.get(1) == Some(&b'-') => {
            if s == "x-request-id" {
                Kind::RequestId
            } else if s.starts_with("x-membrane-")
                || s == "x-forwarded-client-cert"
                || OVERRIDES.contains(&s)
            {
                Kind::Remove
            } else if name == X_FORWARDED_FOR {
                Kind::ForwardedFor
            } else if FORWARDING.contains(&s) {
                Kind::Forwarding
            } else {
                Kind::Plain
            }
        }
        _ => Kind::Plain,
    }
}

/// Applies the rules above to `h` in place, and says what else it saw.
pub fn canonicalize(
    h: &mut HeaderMap,
    underscores: Underscores,
    trusted_hops: u8,
) -> Result<Fields, HeaderError> {
    let mut remove: Vec<HeaderName> = Vec::new();
    let mut authorization = false;
    let mut forwarded_for = false;
    let mut fields = Fields::default();
    for name in h.keys() {
        match kind(name) {
            Kind::RequestId => fields.request_id = true,
            Kind::TraceContext => fields.trace_context = true,
            Kind::Hop(bit) => fields.hop_by_hop |= bit,
            Kind::Plain => {}
            Kind::Underscore => match underscores {
                Underscores::Allow => {}
                Underscores::Drop => remove.push(name.clone()),
                Underscores::Reject => {
                    return Err(HeaderError::Underscore(name.as_str().to_owned()));
                }
            },
            Kind::Remove => remove.push(name.clone()),
            Kind::Forwarding if trusted_hops == 0 => remove.push(name.clone()),
            Kind::Forwarding => {}
            Kind::ForwardedFor => forwarded_for = true,
            Kind::Authorization => authorization = true,
        }
    }
    if authorization && h.get_all(header::AUTHORIZATION).iter().nth(1).is_some() {
        return Err(HeaderError::DuplicateAuthorization);
    }
    if !remove.is_empty() {
        for name in remove {
            h.remove(name);
        }
    }
    if forwarded_for {
        trim_forwarded_for(h, trusted_hops);
    }
    Ok(fields)
}

/// Keeps the last `hops` addresses of `x-forwarded-for` (all lines taken as one list).
fn trim_forwarded_for(h: &mut HeaderMap, hops: u8) {
    if hops == 0 {
        h.remove(X_FORWARDED_FOR);
        return;
    }
    let all: Vec<String> = h
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let keep = &all[all.len().saturating_sub(hops as usize)..];
    h.remove(X_FORWARDED_FOR);
    if !keep.is_empty()
        && let Ok(v) = http::HeaderValue::from_str(&keep.join(", "))
    {
        h.insert(X_FORWARDED_FOR, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn untrusted_clients_lose_the_forwarding_family_and_the_gateways_fields() {
        let mut h = map(&[
            ("host", "a"),
            ("x_membrane_sub", "admin"),
            ("X_Forwarded_For", "1.2.3.4"),
            ("x-membrane-sub", "admin"),
            ("x-forwarded-client-cert", "By=x"),
            ("forwarded", "for=1.2.3.4;host=admin"),
            ("x-forwarded-host", "admin"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "1.2.3.4"),
            ("true-client-ip", "1.2.3.4"),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/admin"),
            ("http2-settings", "AAA"),
            ("authorization", "Bearer x"),
            ("accept", "*/*"),
        ]);
        let fields = canonicalize(&mut h, Underscores::Drop, 0).unwrap();
        assert_eq!(names(&h), vec!["accept", "authorization", "host"]);
        assert_eq!(fields, Fields::default());
        let mut h = map(&[
            ("x-request-id", "a"),
            ("connection", "close"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("keep-alive", "5"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "x"),
        ]);
        let fields = canonicalize(&mut h, Underscores::Drop, 0).unwrap();
        assert!(fields.request_id);
        assert_eq!(fields.hop_by_hop, 1 | 2 | 4 | 8 | 32 | 64);
    }

    #[test]
    fn trusted_hops_keep_the_family_and_the_last_addresses() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6, 10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.test"),
            ("x-original-url", "/admin"),
        ]);
        canonicalize(&mut h, Underscores::Drop, 2).unwrap();
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.test");
        assert!(!h.contains_key("x-original-url"));
    }

    #[test]
    fn underscores_by_the_listeners_rule_and_one_authorization() {
        let fields = [("x_user", "a"), ("accept", "b")];
        let mut h = map(&fields);
        assert_eq!(
            canonicalize(&mut h, Underscores::Reject, 0),
            Err(HeaderError::Underscore("x_user".into()))
        );
        let mut h = map(&fields);
        canonicalize(&mut h, Underscores::Allow, 0).unwrap();
        assert_eq!(names(&h), vec!["accept", "x_user"]);
        let mut h = map(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(
            canonicalize(&mut h, Underscores::Allow, 0),
            Err(HeaderError::DuplicateAuthorization)
        );
    }
}
