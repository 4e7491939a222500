//! The headers a proxied request gains on its way upstream.

use crate::h1::fields::write_line;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// What this proxy adds to `Via` (RFC 9110 §7.6.3).
pub static VIA_HTTP1: HeaderValue = HeaderValue::from_static("1.1 membrane");
pub static VIA_HTTP2: HeaderValue = HeaderValue::from_static("2 membrane");

pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// `x-forwarded-for` gets the client's address appended, `via` this proxy appended,
/// `x-forwarded-proto` is set (a client must not claim a scheme it did not use), and
/// `x-request-id` is set when the proxy made the id. `x-forwarded-client-cert` is removed
/// from every request (a client could forge it) and set only from a verified client
/// certificate.
///
/// The values are borrowed from the connection and the request (no reference count is
/// touched per request); a `Forwarding` lives no longer than the request's exchange.
#[derive(Clone)]
pub struct Forwarding<'a> {
    pub client_ip: &'a HeaderValue,
    pub via: &'static HeaderValue,
    /// `None` when the request carries one from a trusted hop (`trusted_hops`), kept as it is.
    pub proto: Option<&'a HeaderValue>,
    /// `None` when the request carries its own id already.
    pub request_id: Option<&'a HeaderValue>,
    /// XFCC for the connection's verified client certificate, if any.
    pub client_cert: Option<&'a HeaderValue>,
    /// The trace context to send (`traceparent`), in place of the request's; with
    /// `drop_tracestate`, the request's `tracestate` is not sent either.
    pub trace: Option<[u8; 55]>,
    pub drop_tracestate: bool,
}

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

impl Forwarding<'_> {
    /// Applies the headers to a request that hyper will send (HTTP/2, upgrades).
    pub fn apply(&self, h: &mut HeaderMap) {
        append_list(h, X_FORWARDED_FOR, self.client_ip);
        if let Some(p) = self.proto {
            h.insert(X_FORWARDED_PROTO, p.clone());
        }
        append_list(h, header::VIA, self.via);
        if let Some(id) = self.request_id {
            h.insert(X_REQUEST_ID, id.clone());
        }
        h.remove(X_FORWARDED_CLIENT_CERT);
        if let Some(c) = self.client_cert {
            h.insert(X_FORWARDED_CLIENT_CERT, c.clone());
        }
        if let Some(tp) = &self.trace
            && let Ok(v) = HeaderValue::from_bytes(tp)
        {
            h.insert(TRACEPARENT.clone(), v);
        }
        if self.drop_tracestate {
            h.remove(&TRACESTATE);
        }
    }

    /// Writes the request's headers with these applied, for Membrane's HTTP/1.1 client:
    /// straight into the outgoing head, without touching the header map.
    pub fn encode_headers(&self, h: &HeaderMap, out: &mut Vec<u8>) {
        let mut seen_xff = false;
        let mut seen_via = false;
        for (name, value) in h {
            // Several lines of one list header are joined into one, then extended.
            if name == X_FORWARDED_FOR {
                if !seen_xff {
                    seen_xff = true;
                    write_joined(out, name, h, self.client_ip);
                }
                continue;
            }
            if name == header::VIA {
                if !seen_via {
                    seen_via = true;
                    write_joined(out, name, h, self.via);
                }
                continue;
            }
            if (self.proto.is_some() && name == X_FORWARDED_PROTO)
                || name == X_FORWARDED_CLIENT_CERT
                || (self.request_id.is_some() && name == X_REQUEST_ID)
                || (self.trace.is_some()
                    && (name == TRACEPARENT || (self.drop_tracestate && name == TRACESTATE)))
            {
                continue;
            }
            write_line(out, name.as_str().as_bytes(), value.as_bytes());
        }
        if !seen_xff {
            write_line(out, b"x-forwarded-for", self.client_ip.as_bytes());
        }
        if !seen_via {
            write_line(out, b"via", self.via.as_bytes());
        }
        if let Some(p) = self.proto {
            write_line(out, b"x-forwarded-proto", p.as_bytes());
        }
        if let Some(id) = self.request_id {
            write_line(out, b"x-request-id", id.as_bytes());
        }
        if let Some(tp) = &self.trace {
            write_line(out, b"traceparent", tp);
        }
        if let Some(c) = self.client_cert {
            write_line(out, b"x-forwarded-client-cert", c.as_bytes());
        }
    }
}

fn write_joined(out: &mut Vec<u8>, name: &HeaderName, h: &HeaderMap, last: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    for v in h.get_all(name) {
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(last.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `value` to a list-valued header (`x-forwarded-for`, `via`).
pub fn append_list(headers: &mut HeaderMap, name: HeaderName, value: &HeaderValue) {
    match headers.entry(name) {
        header::Entry::Vacant(v) => {
            v.insert(value.clone());
        }
        header::Entry::Occupied(mut o) => {
            let mut joined = Vec::new();
            for old in o.iter() {
                joined.extend_from_slice(old.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(value.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                o.insert(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static CLIENT: HeaderValue = HeaderValue::from_static("127.0.0.1");
    static VIA: HeaderValue = HeaderValue::from_static("1.1 membrane");
    static PROTO: HeaderValue = HeaderValue::from_static("http");
    static NEW_ID: HeaderValue = HeaderValue::from_static("new-id");

    fn fwd(request_id: Option<&'static HeaderValue>) -> Forwarding<'static> {
        Forwarding {
            client_ip: &CLIENT,
            via: &VIA,
            proto: Some(&PROTO),
            request_id,
            client_cert: None,
            trace: None,
            drop_tracestate: false,
        }
    }

    fn encoded(h: &HeaderMap, f: &Forwarding) -> String {
        let mut out = Vec::new();
        f.encode_headers(h, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encoding_and_applying_agree() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("x"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-request-id", HeaderValue::from_static("bad id"));
        let f = fwd(Some(&NEW_ID));
        assert_eq!(
            encoded(&h, &f),
            "host: x\r\nx-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\nvia: 1.1 membrane\r\nx-forwarded-proto: http\r\nx-request-id: new-id\r\n"
        );
        let mut applied = h.clone();
        f.apply(&mut applied);
        assert_eq!(applied["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(applied["x-forwarded-proto"], "http");
        assert_eq!(applied["via"], "1.1 membrane");
        assert_eq!(applied["x-request-id"], "new-id");
        // A kept id stays as it came.
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("keep-me"));
        h.insert("via", HeaderValue::from_static("1.0 edge"));
        assert_eq!(
            encoded(&h, &fwd(None)),
            "x-request-id: keep-me\r\nvia: 1.0 edge, 1.1 membrane\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n"
        );
    }
}
