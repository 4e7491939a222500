//! The gRPC stream both ends of the ADS connection use, and the message limits they agree
//! on.

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::Stream;

/// A gRPC message stream fed through a channel: the server's responses (fed by each
/// stream's task) and a client's requests.
pub struct ChannelStream<T>(pub mpsc::Receiver<T>);

impl<T> Stream for ChannelStream<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// Largest request accepted: a reconnecting gateway lists every resource it holds in
/// `initial_resource_versions` (10,000 resources take about 0.6 MB). A larger one ends its
/// stream with RESOURCE_EXHAUSTED.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Largest response: a cell's listener grows with the endpoints it routes to (an east
/// listener of an org with 10,000 endpoints is about 1 MB).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
