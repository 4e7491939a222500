//! Request heads out: the method line, the fields with the forwarding headers applied, and
//! the framing header, written into the connection's reused buffer.

use crate::upstream::forwarding::Forwarding;
use http::request::Parts;

/// Writes `METHOD path HTTP/1.1`, the headers with the forwarding headers applied, the
/// framing header when the body is chunked, and the blank line.
pub fn encode_request(out: &mut Vec<u8>, parts: &Parts, fwd: &Forwarding<'_>, chunked: bool) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    match parts.uri.path_and_query() {
        Some(pq) if !pq.as_str().is_empty() => out.extend_from_slice(pq.as_str().as_bytes()),
        _ => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    fwd.encode_headers(&parts.headers, out);
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn request_heads_are_encoded_with_framing() {
        let (mut parts, ()) = http::Request::post("/a?b=1")
            .header("host", "x")
            .body(())
            .unwrap()
            .into_parts();
        static CLIENT: HeaderValue = HeaderValue::from_static("10.1.1.1");
        static PROTO: HeaderValue = HeaderValue::from_static("http");
        let fwd = Forwarding {
            client_ip: &CLIENT,
            via: &crate::upstream::forwarding::VIA_HTTP1,
            proto: Some(&PROTO),
            request_id: None,
            client_cert: None,
            trace: None,
            drop_tracestate: false,
        };
        let mut out = Vec::new();
        encode_request(&mut out, &parts, &fwd, true);
        let fwd_lines =
            "x-forwarded-for: 10.1.1.1\r\nvia: 1.1 membrane\r\nx-forwarded-proto: http\r\n";
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            format!(
                "POST /a?b=1 HTTP/1.1\r\nhost: x\r\n{fwd_lines}transfer-encoding: chunked\r\n\r\n"
            )
        );
        parts.uri = http::Uri::from_static("http://h");
        out.clear();
        encode_request(&mut out, &parts, &fwd, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("POST / HTTP/1.1\r\nhost: x\r\n{fwd_lines}\r\n")
        );
    }
}
