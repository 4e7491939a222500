//! The HTTP/1.1 codec, shared by Membrane's own server loop (`downstream`) and its own client
//! (`upstream::h1`): request heads parsed in place (`request`), response heads parsed in
//! place with their framing decided (`response`), body framing and a decoder over any
//! buffered source (`framing`), and the field-level pieces both sides use (`fields`).
//! It knows nothing of sockets, routing or policy.

pub mod fields;
pub mod framing;
pub mod request;
pub mod response;

use std::io;

/// Why reading or writing an HTTP/1.1 message failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection before a response")]
    ClosedBeforeResponse,
    #[error("invalid message: {0}")]
    Protocol(&'static str),
}
