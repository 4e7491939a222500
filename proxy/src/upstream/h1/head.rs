//! Request heads out, response heads in.

use super::H1Error;
use super::body::Framing;
use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::response;
use http::{Response, StatusCode, Version};
use std::mem::MaybeUninit;

/// Most response headers accepted; more is a protocol error.
const MAX_HEADERS: usize = 100;

/// Writes `METHOD path HTTP/1.1`, the headers, the framing header when the body is chunked,
/// and the blank line.
pub fn encode_request(out: &mut Vec<u8>, parts: &Parts, chunked: bool) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    match parts.uri.path_and_query() {
        Some(pq) if !pq.as_str().is_empty() => out.extend_from_slice(pq.as_str().as_bytes()),
        _ => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// What the head says about framing, noted while the headers are copied so that no header
/// needs looking up again.
#[derive(Debug, Default, Clone, Copy)]
pub struct FramingHeaders {
    transfer_encoding: bool,
    content_length: bool,
    connection: bool,
}

/// A parsed response head.
pub struct Head {
    pub response: Response<()>,
    seen: FramingHeaders,
}

impl Head {
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }
}

/// Parses a response head at the start of `buf`. On success the head's bytes are taken out
/// of `buf` and the header values point into them (no copy per header); `Ok(None)` means the
/// head is not complete yet. `scratch` is reused between calls to hold header positions.
pub fn parse_response(
    buf: &mut BytesMut,
    scratch: &mut Vec<(usize, usize, usize, usize)>,
) -> Result<Option<Head>, H1Error> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut parsed, buf, &mut slots)
        .map_err(|e| match e {
            httparse::Error::TooManyHeaders => H1Error::Protocol("more than 100 response headers"),
            _ => H1Error::Protocol("malformed response head"),
        })?;
    let httparse::Status::Complete(head_len) = status else {
        return Ok(None);
    };
    let code = parsed.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| H1Error::Protocol("invalid status code"))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Positions of names and values inside the head, taken before the head is split off.
    let base = buf.as_ptr() as usize;
    scratch.clear();
    for h in parsed.headers.iter() {
        let n = h.name.as_ptr() as usize - base;
        let v = h.value.as_ptr() as usize - base;
        scratch.push((n, h.name.len(), v, h.value.len()));
    }
    let head = buf.split_to(head_len).freeze();
    let mut headers = HeaderMap::with_capacity(scratch.len());
    let mut seen = FramingHeaders::default();
    for &(n, nl, v, vl) in scratch.iter() {
        let name = HeaderName::from_bytes(&head[n..n + nl])
            .map_err(|_| H1Error::Protocol("invalid header name"))?;
        if name == header::TRANSFER_ENCODING {
            seen.transfer_encoding = true;
        } else if name == header::CONTENT_LENGTH {
            seen.content_length = true;
        } else if name == header::CONNECTION {
            seen.connection = true;
        }
        let value = HeaderValue::from_maybe_shared(head.slice(v..v + vl))
            .map_err(|_| H1Error::Protocol("invalid header value"))?;
        headers.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some(Head { response, seen }))
}

/// How the body of this response is delimited (RFC 9112 §6.3), and whether the connection
/// can carry another request afterwards.
pub fn framing(head: Head, is_head: bool) -> Result<(response::Parts, Framing, bool), H1Error> {
    let seen = head.seen;
    let (mut parts, ()) = head.response.into_parts();
    let h = &parts.headers;
    let mut keep_alive = match (parts.version, seen.connection) {
        (Version::HTTP_10, false) => false,
        (Version::HTTP_10, true) => has_token(h, "keep-alive"),
        (_, false) => true,
        (_, true) => !has_token(h, "close"),
    };
    let status = parts.status;
    if is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((parts, Framing::Empty, keep_alive));
    }
    if seen.transfer_encoding
        && let Some(te) = last_value(h, &header::TRANSFER_ENCODING)
    {
        let chunked = te
            .rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        if seen.content_length {
            // Both framings: Transfer-Encoding wins and the connection must not be reused.
            parts.headers.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        return Ok(if chunked {
            (parts, Framing::chunked(), keep_alive)
        } else {
            (parts, Framing::UntilClose, false)
        });
    }
    if !seen.content_length {
        return Ok((parts, Framing::UntilClose, false));
    }
    let mut length: Option<u64> = None;
    for v in parts.headers.get_all(header::CONTENT_LENGTH) {
        let n = std::str::from_utf8(v.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(H1Error::Protocol("invalid content-length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(H1Error::Protocol("conflicting content-length headers"));
        }
        length = Some(n);
    }
    Ok(match length {
        Some(0) => (parts, Framing::Empty, keep_alive),
        Some(n) => (parts, Framing::Length(n), keep_alive),
        None => (parts, Framing::UntilClose, false),
    })
}

fn last_value<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get_all(name)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
}

fn has_token(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Head {
        let mut b = BytesMut::from(text);
        parse_response(&mut b, &mut Vec::new()).unwrap().unwrap()
    }

    #[test]
    fn heads_parse_and_leave_the_body_in_the_buffer() {
        let mut b = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello");
        let r = parse_response(&mut b, &mut Vec::new()).unwrap().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.response.headers()["x-a"], "b");
        assert_eq!(&b[..], b"hello");
        let mut partial = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(
            parse_response(&mut partial, &mut Vec::new())
                .unwrap()
                .is_none()
        );
        assert_eq!(partial.len(), 27);
        let mut bad = BytesMut::from("HTTP/1.1 abc OK\r\n\r\n");
        assert!(parse_response(&mut bad, &mut Vec::new()).is_err());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |t: &str, head: bool| framing(parse(t), head).map(|(_, f, k)| (f, k));
        assert!(matches!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", false),
            Ok((Framing::Length(7), true))
        ));
        assert!(matches!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true),
            Ok((Framing::Empty, true))
        ));
        assert!(matches!(
            f("HTTP/1.1 204 No Content\r\n\r\n", false),
            Ok((Framing::Empty, true))
        ));
        assert!(matches!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Ok((Framing::Chunked(_), true))
        ));
        assert!(matches!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            Ok((Framing::Chunked(_), false))
        ));
        assert!(matches!(
            f("HTTP/1.1 200 OK\r\n\r\n", false),
            Ok((Framing::UntilClose, false))
        ));
        assert!(matches!(
            f(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false
            ),
            Ok((Framing::Length(1), false))
        ));
        assert!(matches!(
            f("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            Ok((Framing::Length(1), false))
        ));
        assert!(matches!(
            f(
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                false
            ),
            Ok((Framing::Length(1), true))
        ));
        assert!(
            f(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false).is_err());
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", false).is_err());
    }

    #[test]
    fn request_heads_are_encoded_with_framing() {
        let (mut parts, ()) = http::Request::post("/a?b=1")
            .header("host", "x")
            .body(())
            .unwrap()
            .into_parts();
        let mut out = Vec::new();
        encode_request(&mut out, &parts, true);
        assert_eq!(
            out,
            b"POST /a?b=1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        parts.uri = http::Uri::from_static("http://h");
        out.clear();
        encode_request(&mut out, &parts, false);
        assert_eq!(out, b"POST / HTTP/1.1\r\nhost: x\r\n\r\n");
    }
}
