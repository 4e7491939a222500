//! Request heads: parsed in place from the connection's read buffer.

use crate::h1::fields::FieldSpan;
use crate::h1::framing::Framing;
use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use std::mem::MaybeUninit;

/// Most request headers the parser takes at all; the listener's own limit is checked per
/// request with a JSON 431.
pub const MAX_HEADERS: usize = 256;

pub struct RequestHead {
    pub parts: http::request::Parts,
    /// Empty when the request has no body.
    pub framing: Framing,
    /// The client allows the connection to carry another request.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// The client accepts trailer fields (`TE: trailers`).
    pub trailers: bool,
    /// An HTTP/1.1 protocol switch: `Connection: upgrade` and an `Upgrade` field. The
    /// request path passes it on only for the listener's allowed protocols.
    pub upgrade: bool,
}

#[derive(Debug)]
pub enum HeadError {
    Malformed(&'static str),
    TooManyHeaders,
}

/// Parses a request head at the start of `buf`; `Ok(None)` when it is not complete yet. On
/// success the head's bytes leave `buf`, and the URI and header values point into them.
pub fn parse_request(
    buf: &mut BytesMut,
    scratch: &mut Vec<FieldSpan>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let status = parsed
        .parse_with_uninit_headers(buf, &mut slots)
        .map_err(|e| match e {
            httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
            httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
            httparse::Error::Token => HeadError::Malformed("invalid method or header name"),
            _ => HeadError::Malformed("malformed request head"),
        })?;
    let httparse::Status::Complete(head_len) = status else {
        return Ok(None);
    };
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    if method == Method::CONNECT {
        // A tunnel to wherever the client names is not a gateway's job (Envoy, too, refuses
        // CONNECT unless configured for it).
        return Err(HeadError::Malformed("CONNECT is not supported"));
    }
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let path = parsed.path.unwrap_or("");
    if path.contains('#') {
        // RFC 9112 §3.2: a request target has no fragment. The URI parser would drop it
        // silently; refusing says so (as Envoy does).
        return Err(HeadError::Malformed(
            "the request target has a fragment (`#`)",
        ));
    }
    let target = (path.as_ptr() as usize - base, path.len());
    scratch.clear();
    for h in parsed.headers.iter() {
        scratch.push(FieldSpan::within(base, h.name.as_bytes(), h.value));
    }
    let head = buf.split_to(head_len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(scratch.len());
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let (mut close, mut keep_alive_token, mut expect_continue, mut trailers) =
        (false, false, false, false);
    let (mut upgrade_token, mut upgrade_field) = (false, false);
    for f in scratch.iter() {
        let name = HeaderName::from_bytes(f.name(&head))
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        let raw = f.value(&head);
        if name == header::CONTENT_LENGTH {
            let len = parse_length(raw)?;
            if length.is_some_and(|l| l != len) {
                return Err(HeadError::Malformed("conflicting content-length headers"));
            }
            length = Some(len);
        } else if name == header::TRANSFER_ENCODING {
            chunked = Some(crate::h1::fields::ends_chunked(raw));
        } else if name == header::CONNECTION {
            for token in raw.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name == header::EXPECT {
            expect_continue = raw.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name == header::UPGRADE {
            upgrade_field = true;
        } else if name == header::TE {
            trailers = raw
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
        let value = HeaderValue::from_maybe_shared(head.slice(f.value..f.value + f.value_len))
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    // RFC 9112 §6.1 and §6.3: both framings at once, or a final coding other than chunked,
    // cannot be read reliably (request smuggling lives here): refuse.
    let framing = match (chunked, length) {
        (Some(_), Some(_)) => {
            return Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        (Some(false), None) => {
            return Err(HeadError::Malformed("transfer coding other than chunked"));
        }
        (Some(true), None) if version == Version::HTTP_10 => {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        (Some(true), None) => Framing::chunked(),
        (None, Some(0)) | (None, None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    let keep_alive = if version == Version::HTTP_10 {
        keep_alive_token && !close
    } else {
        !close
    };
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    let (parts, ()) = req.into_parts();
    Ok(Some(RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue,
        trailers,
        upgrade: upgrade_token && upgrade_field && version == Version::HTTP_11,
    }))
}

fn parse_length(raw: &[u8]) -> Result<u64, HeadError> {
    crate::h1::fields::content_length(raw).ok_or(HeadError::Malformed("invalid content-length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request(&mut BytesMut::from(text), &mut Vec::new())
    }

    #[test]
    fn heads_framings_and_refusals() {
        let h = parse("GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.parts.uri, "/a?b=1");
        assert_eq!(h.parts.headers["host"], "x");
        assert!(h.keep_alive && matches!(h.framing, Framing::Empty));
        let h = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive && matches!(h.framing, Framing::Length(5)));
        let h = parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nTE: trailers\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(matches!(h.framing, Framing::Chunked(_)) && h.expect_continue && h.trailers);
        let h = parse(
            "GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.upgrade);
        let h = parse("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.upgrade);

        let h = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        for bad in [
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "NOT HTTP\r\n\r\n",
            "GET / HTTP/3.0\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            "GET /admin#x HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(9);
        let pieces: [&[u8]; 8] = [
            b"GET / HTTP/1.1\r\n",
            b"POST /x HTTP/1.0\r\n",
            b"Content-Length: 3\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Connection: close\r\n",
            b"\r\n",
            b"Host: \xff\r\n",
            b"\x00",
        ];
        for _ in 0..5000 {
            let mut input = Vec::new();
            for _ in 0..rng.usize(0..8) {
                input.extend_from_slice(pieces[rng.usize(0..pieces.len())]);
            }
            let junk: Vec<u8> = (0..rng.usize(0..8)).map(|_| rng.u8(..)).collect();
            input.extend(junk);
            let _ = parse_request(&mut BytesMut::from(&input[..]), &mut Vec::new());
        }
    }
}
