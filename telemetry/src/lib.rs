//! Membrane's traces: W3C Trace Context in and out ([`context`]), the sampling decision
//! ([`sampler`]), finished spans as the request path records them ([`span`]) and their
//! OTLP/gRPC export from a bounded queue that never blocks a request ([`export`]). Used by
//! the gateway (a server span per request, a client span per upstream exchange) and by the
//! control server (a spec change from file event to push).
//!
//! Why not the `opentelemetry` SDK's tracer: its spans are built through dynamic
//! dispatch, with attributes as owned key-value pairs and a processor behind a lock; on a
//! request that costs about 16k instructions in all, the budget for a sampled request's
//! tracing is 15% of that. Spans are written as OTLP's protobuf directly ([`wire`]);
//! `opentelemetry-proto`'s types check that encoding in the tests and serve the receivers.

pub mod context;
pub mod export;
mod grpc;
pub mod process;
pub mod sampler;
pub mod span;
pub mod wire;

pub use context::{SpanId, TraceId, TraceParent};
pub use export::{Counters, ExportConfig, Exporter};
pub use sampler::Sampler;
pub use span::{Kind, SpanRecord, Value};
pub use wire::{Attributes, SpanHead, SpanWriter};

/// Nanoseconds since the Unix epoch, now.
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One reading of both clocks, to turn the monotonic `Instant`s a span was timed with into
/// the Unix times OTLP wants (read once per exported span set, never per request).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    now: std::time::Instant,
    unix: u64,
}

impl WallClock {
    pub fn now() -> Self {
        Self::at(std::time::Instant::now())
    }

    /// With `now` just read (a request's end): one clock read less.
    pub fn at(now: std::time::Instant) -> Self {
        Self {
            now,
            unix: unix_nanos(),
        }
    }

    /// `at`, in nanoseconds since the Unix epoch.
    pub fn unix(&self, at: std::time::Instant) -> u64 {
        let ago = u64::try_from(self.now.saturating_duration_since(at).as_nanos());
        self.unix.saturating_sub(ago.unwrap_or(u64::MAX))
    }
}
