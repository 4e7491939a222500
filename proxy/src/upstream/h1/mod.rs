//! Membrane's own HTTP/1.1 client for upstream exchanges.
//!
//! Why not hyper's client: measured with callgrind, hyper's HTTP/1.1 client cost about 12k
//! instructions per proxied request here (a driver task per connection, a channel hand-off
//! each way, its own header parsing), which alone kept the proxy from the instruction target
//! against nginx. This client runs inside the request's own task: it writes the request head
//! from one reused buffer, parses the response head with httparse straight out of a
//! per-connection read buffer (header values are slices of it, not copies), and streams the
//! body back frame by frame, giving the connection back to the worker's pool once the body
//! has ended. hyper still serves downstream, speaks HTTP/2 upstream, and carries upgrades.
//!
//! What it does (RFC 9112): Content-Length and chunked bodies both ways, close-delimited
//! responses, 1xx responses skipped, no body for HEAD, 204 and 304, `Connection: close`
//! honoured. Assumption: the request body is sent in full before the response is read (as
//! nginx does); an upstream that answers early and stops reading fails the exchange.

pub(crate) mod body;
mod conn;
mod encode;

pub(crate) use conn::exchange;

pub use body::H1Body;
pub use conn::H1Conn;

use crate::body::RequestBodyError;
use crate::h1::H1Error;

/// Why an exchange on one connection failed: the HTTP/1.1 messages, or the client's request
/// body that was being sent.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Message(#[from] H1Error),
    #[error("reading the request body failed: {0}")]
    RequestBody(RequestBodyError),
}
