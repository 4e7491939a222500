//! Traces (`tracing:` at the top of the file, or `membrane proxy --otlp-endpoint` for a
//! gateway configured over xDS), and how each listener treats an incoming trace context.

use super::{Dur, Located};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The OpenTelemetry collector's OTLP/gRPC address, `http://host:4317`.
    pub otlp_endpoint: Located<String>,
    /// Share of new traces recorded, 0 to 1. A continued trace keeps its caller's decision.
    #[serde(default = "sample_ratio")]
    pub sample_ratio: f64,
    /// Record failed and refused requests whether sampled or not.
    #[serde(default = "yes")]
    pub always_sample_errors: bool,
    /// `service.name` of the spans.
    #[serde(default = "service_name")]
    pub service_name: String,
    /// The cell this gateway guards (`membrane.cell` on every span).
    #[serde(default)]
    pub cell: Option<String>,
    /// Put the verified JWT's `sub` on spans (`enduser.id`): off by default, as traces
    /// often travel further than access logs.
    #[serde(default)]
    pub jwt_subject: bool,
    /// Finished spans waiting for export; past this they are dropped and counted.
    #[serde(default = "queue_size")]
    pub queue_size: usize,
    #[serde(default = "batch_size")]
    pub batch_size: usize,
    /// How long a batch may wait to fill before it is sent.
    #[serde(default = "flush_interval")]
    pub flush_interval: Dur,
}

/// Whether a listener continues the trace a request comes with.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TraceContextTrust {
    /// Continue it: the server span is the caller's child (peers that are authenticated).
    Continue,
    /// Start a new trace, linked to the caller's (the public side: a client must not pick
    /// the trace id or the sampling decision).
    Restart,
}

fn yes() -> bool {
    true
}
fn sample_ratio() -> f64 {
    0.01
}
fn service_name() -> String {
    "membrane".into()
}
fn queue_size() -> usize {
    4096
}
fn batch_size() -> usize {
    512
}
fn flush_interval() -> Dur {
    Dur(Duration::from_secs(1))
}

impl TracingConfig {
    /// Settings given on the command line: the endpoint, the ratio and the cell; every
    /// other field at the default a file would get.
    pub fn new(otlp_endpoint: String, sample_ratio: f64, cell: Option<String>) -> Self {
        Self {
            otlp_endpoint: otlp_endpoint.into(),
            sample_ratio,
            always_sample_errors: true,
            service_name: service_name(),
            cell,
            jwt_subject: false,
            queue_size: queue_size(),
            batch_size: batch_size(),
            flush_interval: flush_interval(),
        }
    }
}
