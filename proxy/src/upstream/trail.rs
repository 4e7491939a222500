//! What a traced request's upstream attempts leave for their client spans: the attempts
//! before the last (retried ones), and when the last began. The last is the request's
//! exchange, whose answer the caller has. Kept only for requests with tracing configured,
//! and written only when an attempt is retried.

use std::time::Instant;

/// An attempt that was tried again.
#[derive(Debug, Clone)]
pub struct Earlier {
    pub start: Instant,
    pub end: Instant,
    /// The endpoint's index in its cluster.
    pub endpoint: usize,
    /// The response's status, or the failure's code.
    pub outcome: Result<u16, &'static str>,
}

#[derive(Debug, Default)]
pub struct Trail {
    pub earlier: Vec<Earlier>,
    /// When the last attempt began, when it was not the first.
    pub last_start: Option<Instant>,
}

impl Trail {
    /// Attempts made in all, once the request's exchange has ended.
    pub fn attempts(&self) -> usize {
        self.earlier.len() + 1
    }
}
