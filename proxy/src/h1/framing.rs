//! HTTP/1.1 message body framing (RFC 9112 §6 and §7.1): how a body is delimited, and a
//! decoder that reads it frame by frame from any buffered source. Shared by the server's
//! request bodies and the client's response bodies.

use super::H1Error;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Frame;
use std::task::{Context, Poll, ready};

/// Longest chunk-size line or trailer section accepted.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked(Chunk),
    /// No length: the body ends when the upstream closes the connection.
    UntilClose,
}

impl Framing {
    pub fn chunked() -> Self {
        Framing::Chunked(Chunk::Size)
    }
}

#[derive(Debug)]
pub enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// Where a body decoder reads from: a buffer, and a way to read more into it.
pub trait Source {
    fn buf(&mut self) -> &mut BytesMut;
    /// Reads more into the buffer; `Ok(0)` is end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>>;
}

/// One step of a body decoder.
pub enum Step {
    Frame(Frame<Bytes>),
    /// The body ended as its framing said.
    End,
    /// A close-delimited body ended with the connection.
    Closed,
}

/// Decodes the next frame of an HTTP/1.1 body (RFC 9112 §6 and §7.1) from `src`, leaving
/// `framing` at `Empty` once the body is complete. Shared by the upstream client's response
/// bodies and the downstream server's request bodies.
pub fn poll_decode<S: Source + ?Sized>(
    framing: &mut Framing,
    src: &mut S,
    cx: &mut Context<'_>,
) -> Poll<Result<Step, H1Error>> {
    loop {
        match framing {
            Framing::Empty => return Poll::Ready(Ok(Step::End)),
            Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                if src.buf().is_empty() {
                    let n = ready!(src.poll_fill(cx))?;
                    if n == 0 {
                        return Poll::Ready(Err(H1Error::Protocol(
                            "the connection closed in the middle of the body",
                        )));
                    }
                }
                let buf = src.buf();
                let take = (*left).min(buf.len() as u64) as usize;
                let data = buf.split_to(take).freeze();
                *left -= take as u64;
                if *left == 0 {
                    *framing = match framing {
                        Framing::Length(_) => Framing::Empty,
                        _ => Framing::Chunked(Chunk::DataEnd),
                    };
                }
                return Poll::Ready(Ok(Step::Frame(Frame::data(data))));
            }
            Framing::UntilClose => {
                if src.buf().is_empty() {
                    let n = ready!(src.poll_fill(cx))?;
                    if n == 0 {
                        *framing = Framing::Empty;
                        return Poll::Ready(Ok(Step::Closed));
                    }
                }
                let data = src.buf().split().freeze();
                return Poll::Ready(Ok(Step::Frame(Frame::data(data))));
            }
            Framing::Chunked(Chunk::Size) => match find_crlf(src.buf()) {
                Some(end) => {
                    let size = parse_chunk_size(&src.buf()[..end])?;
                    let _ = src.buf().split_to(end + 2);
                    *framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                None => {
                    if src.buf().len() > MAX_LINE {
                        return Poll::Ready(Err(H1Error::Protocol("chunk size line too long")));
                    }
                    ready!(fill_or_fail(src, cx))?;
                }
            },
            Framing::Chunked(Chunk::DataEnd) => {
                if src.buf().len() < 2 {
                    ready!(fill_or_fail(src, cx))?;
                    continue;
                }
                if &src.buf()[..2] != b"\r\n" {
                    return Poll::Ready(Err(H1Error::Protocol("chunk not followed by CRLF")));
                }
                let _ = src.buf().split_to(2);
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(Chunk::Trailers) => {
                // Either an empty line, or trailer fields ending with an empty line.
                if src.buf().starts_with(b"\r\n") {
                    let _ = src.buf().split_to(2);
                    *framing = Framing::Empty;
                    return Poll::Ready(Ok(Step::End));
                }
                match find_blank_line(src.buf()) {
                    Some(end) => {
                        let block = src.buf().split_to(end + 4);
                        let trailers = parse_trailers(&block)?;
                        *framing = Framing::Empty;
                        return Poll::Ready(Ok(Step::Frame(Frame::trailers(trailers))));
                    }
                    None => {
                        if src.buf().len() > MAX_TRAILERS {
                            return Poll::Ready(Err(H1Error::Protocol("trailers too large")));
                        }
                        ready!(fill_or_fail(src, cx))?;
                    }
                }
            }
        }
    }
}

/// Reads more; end of stream in the middle of a chunked body is an error.
fn fill_or_fail<S: Source + ?Sized>(
    src: &mut S,
    cx: &mut Context<'_>,
) -> Poll<Result<(), H1Error>> {
    match ready!(src.poll_fill(cx)) {
        Ok(0) => Poll::Ready(Err(H1Error::Protocol(
            "the connection closed in the middle of a chunked body",
        ))),
        Ok(_) => Poll::Ready(Ok(())),
        Err(e) => Poll::Ready(Err(e.into())),
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

fn find_blank_line(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n")
}

/// `1a;ext=1` → 26. Extensions are ignored; sizes over 2^60 are refused.
fn parse_chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.split(|&b| b == b';').next().unwrap_or(&[]);
    let digits = digits.trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(H1Error::Protocol("invalid chunk size"));
    }
    let mut n: u64 = 0;
    for &d in digits {
        let v = (d as char)
            .to_digit(16)
            .ok_or(H1Error::Protocol("invalid chunk size"))?;
        n = n * 16 + v as u64;
    }
    Ok(n)
}

fn parse_trailers(block: &[u8]) -> Result<HeaderMap, H1Error> {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    match httparse::parse_headers(block, &mut slots) {
        Ok(httparse::Status::Complete((_, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for f in fields {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(f.name.as_bytes()),
                    http::HeaderValue::from_bytes(f.value),
                ) {
                    map.append(n, v);
                }
            }
            Ok(map)
        }
        _ => Err(H1Error::Protocol("malformed trailers")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"FF;name=value").unwrap(), 255);
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"xyz").is_err());
        assert!(parse_chunk_size(b"1234567890abcdef0").is_err());
    }
}
