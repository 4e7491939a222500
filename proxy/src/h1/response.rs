//! Response heads: parsed in place from a connection's read buffer, their framing decided
//! (RFC 9112 §6.3), hop-by-hop fields left out as they are read.

use super::H1Error;
use super::fields::{FieldSpan, content_length, ends_chunked, write_line};
use super::framing::Framing;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::response;
use http::{Response, StatusCode, Version};
use std::mem::MaybeUninit;

/// Most response headers accepted; more is a protocol error.
const MAX_HEADERS: usize = 100;

/// A parsed response head.
pub enum Parsed {
    /// 100 Continue and friends: the final response follows.
    Informational,
    Final(Box<FinalHead>),
}

/// A final response head. Its header fields stay as bytes of the head (positions in the
/// connection's scratch vector) until someone needs a header map: Membrane's HTTP/1.1 server
/// writes them out as they came, without building one.
pub struct FinalHead {
    /// Status and version; the header map is empty (see `RawFields`).
    pub parts: response::Parts,
    pub framing: Framing,
    /// The connection can carry another request once the body is read.
    pub keep_alive: bool,
    pub fields: RawFields,
}

/// End-to-end header fields of a response, as slices of its head.
pub struct RawFields {
    pub head: Bytes,
    pub has_date: bool,
    pub has_length: bool,
}

/// Where each field sits within the head.
pub type Positions = Vec<FieldSpan>;

impl RawFields {
    /// Writes the fields as `name: value` lines.
    pub fn write(&self, positions: &Positions, out: &mut Vec<u8>) {
        for f in positions {
            write_line(out, f.name(&self.head), f.value(&self.head));
        }
    }

    /// Builds a header map (for hyper's HTTP/2 server, which needs one).
    pub fn to_map(&self, positions: &Positions) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(positions.len());
        for f in positions {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(f.name(&self.head)),
                HeaderValue::from_maybe_shared(self.head.slice(f.value..f.value + f.value_len)),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

/// Parses a response head at the start of `buf` and decides how its body is delimited
/// (RFC 9112 §6.3). On success the head's bytes are taken out of `buf`; `positions` then
/// holds where each end-to-end field sits in them. Hop-by-hop fields are read for framing
/// and keep-alive and left out. `Ok(None)` means the head is not complete yet.
pub fn parse_response(
    buf: &mut BytesMut,
    positions: &mut Positions,
    is_head: bool,
) -> Result<Option<Parsed>, H1Error> {
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
    if status.is_informational() {
        let _ = buf.split_to(head_len);
        return Ok(Some(Parsed::Informational));
    }
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let (mut close, mut keep_alive_token, mut has_date) = (false, false, false);
    let mut named: Vec<Vec<u8>> = Vec::new();
    positions.clear();
    // httparse has checked names (tokens) and values (no control characters) already.
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        let raw = h.value;
        match field_kind(name) {
            Field::ContentLength => {
                let len = parse_length(raw)?;
                if length.is_some_and(|l| l != len) {
                    return Err(H1Error::Protocol("conflicting content-length headers"));
                }
                length = Some(len);
            }
            Field::TransferEncoding => {
                chunked = Some(ends_chunked(raw));
                continue;
            }
            Field::Connection => {
                for token in raw.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive_token = true;
                    } else if !token.is_empty() {
                        named.push(token.to_ascii_lowercase());
                    }
                }
                continue;
            }
            Field::HopByHop => continue,
            Field::Date => has_date = true,
            Field::Other => {}
        }
        positions.push(FieldSpan::within(base, name, raw));
    }
    let head = buf.split_to(head_len).freeze();
    if !named.is_empty() {
        positions.retain(|f| !named.iter().any(|t| t.eq_ignore_ascii_case(f.name(&head))));
    }
    let mut keep_alive = if version == Version::HTTP_10 {
        keep_alive_token
    } else {
        !close
    };
    let no_body = is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut has_length = length.is_some();
    let framing = if no_body {
        Framing::Empty
    } else if let Some(chunked) = chunked {
        if length.is_some() {
            // Both framings: Transfer-Encoding wins, the length goes, and the connection
            // must not be reused.
            positions.retain(|f| !f.name(&head).eq_ignore_ascii_case(b"content-length"));
            has_length = false;
            keep_alive = false;
        }
        if chunked {
            Framing::chunked()
        } else {
            keep_alive = false;
            Framing::UntilClose
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => {
                keep_alive = false;
                Framing::UntilClose
            }
        }
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    let (parts, ()) = response.into_parts();
    Ok(Some(Parsed::Final(Box::new(FinalHead {
        parts,
        framing,
        keep_alive,
        fields: RawFields {
            head,
            has_date,
            has_length,
        },
    }))))
}

enum Field {
    ContentLength,
    TransferEncoding,
    Connection,
    /// Keep-Alive, Proxy-Connection, TE, Upgrade (RFC 9110 §7.6.1).
    HopByHop,
    Date,
    Other,
}

/// Classifies a field name without building a `HeaderName`: by length first, then a
/// case-insensitive compare.
fn field_kind(name: &[u8]) -> Field {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        2 if is("te") => Field::HopByHop,
        4 if is("date") => Field::Date,
        7 if is("upgrade") => Field::HopByHop,
        10 if is("connection") => Field::Connection,
        10 if is("keep-alive") => Field::HopByHop,
        14 if is("content-length") => Field::ContentLength,
        16 if is("proxy-connection") => Field::HopByHop,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        _ => Field::Other,
    }
}

fn parse_length(raw: &[u8]) -> Result<u64, H1Error> {
    content_length(raw).ok_or(H1Error::Protocol("invalid content-length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, is_head: bool) -> Result<(response::Parts, Framing, bool), H1Error> {
        let mut b = BytesMut::from(text);
        let mut positions = Vec::new();
        match parse_response(&mut b, &mut positions, is_head)? {
            Some(Parsed::Final(f)) => {
                let FinalHead {
                    mut parts,
                    framing,
                    keep_alive,
                    fields,
                } = *f;
                parts.headers = fields.to_map(&positions);
                Ok((parts, framing, keep_alive))
            }
            _ => Err(H1Error::Protocol("not a final response")),
        }
    }

    #[test]
    fn heads_parse_and_leave_the_body_in_the_buffer() {
        let mut b = BytesMut::from(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\nhello",
        );
        let mut positions = Vec::new();
        let Some(Parsed::Final(f)) = parse_response(&mut b, &mut positions, false).unwrap() else {
            panic!("not a final response");
        };
        assert_eq!(f.parts.status, 200);
        let mut written = Vec::new();
        f.fields.write(&positions, &mut written);
        assert_eq!(written, b"Content-Length: 5\r\nX-A: b\r\n");
        let parts_headers = f.fields.to_map(&positions);
        assert_eq!(parts_headers["x-a"], "b");
        // Hop-by-hop headers, and those `Connection` names, are left out.
        let names: Vec<&str> = parts_headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["content-length", "x-a"]);
        assert_eq!(&b[..], b"hello");
        let mut cont = BytesMut::from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
        assert!(matches!(
            parse_response(&mut cont, &mut Vec::new(), false),
            Ok(Some(Parsed::Informational))
        ));
        assert_eq!(&cont[..], b"HTTP/1.1 200 OK\r\n\r\n");
        let mut partial = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(
            parse_response(&mut partial, &mut Vec::new(), false)
                .unwrap()
                .is_none()
        );
        assert_eq!(partial.len(), 27);
        let mut bad = BytesMut::from("HTTP/1.1 abc OK\r\n\r\n");
        assert!(parse_response(&mut bad, &mut Vec::new(), false).is_err());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |t: &str, head: bool| parse(t, head).map(|(_, f, k)| (f, k));
        let cl7 = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n";
        assert!(matches!(f(cl7, false), Ok((Framing::Length(7), true))));
        assert!(matches!(f(cl7, true), Ok((Framing::Empty, true))));
        let nc = "HTTP/1.1 204 No Content\r\n\r\n";
        assert!(matches!(f(nc, false), Ok((Framing::Empty, true))));
        let te = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(f(te, false), Ok((Framing::Chunked(_), true))));
        let both = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        let (parts, framing, keep) = parse(both, false).unwrap();
        assert!(matches!(framing, Framing::Chunked(_)) && !keep);
        assert!(!parts.headers.contains_key("content-length"));
        let gz = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert!(matches!(f(gz, false), Ok((Framing::UntilClose, false))));
        let none = "HTTP/1.1 200 OK\r\n\r\n";
        assert!(matches!(f(none, false), Ok((Framing::UntilClose, false))));
        let close = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n";
        assert!(matches!(f(close, false), Ok((Framing::Length(1), false))));
        let old = "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n";
        assert!(matches!(f(old, false), Ok((Framing::Length(1), false))));
        let old_ka = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n";
        assert!(matches!(f(old_ka, false), Ok((Framing::Length(1), true))));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(f(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(3);
        let pieces: [&[u8]; 10] = [
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.0 100 Continue\r\n",
            b"Content-Length: 12\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Connection: close, x\r\n",
            b"\r\n",
            b": \r\n",
            b"\x00\xff",
            b"X: \x7f\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
        ];
        for _ in 0..5000 {
            let mut input = Vec::new();
            for _ in 0..rng.usize(0..8) {
                input.extend_from_slice(pieces[rng.usize(0..pieces.len())]);
            }
            if rng.bool() {
                let junk: Vec<u8> = (0..rng.usize(0..16)).map(|_| rng.u8(..)).collect();
                input.extend(junk);
            }
            let mut b = BytesMut::from(&input[..]);
            let _ = parse_response(&mut b, &mut Vec::new(), rng.bool());
        }
    }
}
