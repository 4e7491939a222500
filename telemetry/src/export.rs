//! OTLP/gRPC export from a bounded queue. The request path only `try_send`s a finished span
//! (no lock held while waiting, no allocation beyond the span's own): when the queue is
//! full the span is dropped and counted, so a slow or absent collector never slows a
//! request. One thread per exporter takes batches (up to `batch` spans, or whatever is
//! there after `interval`), turns them into OTLP and sends them with a timeout; a failed
//! export drops its batch and counts it (no retry: the queue behind it matters more).
//! The thread ends, after sending what is queued, when the last handle is dropped.

use crate::span::{Kind, SpanRecord, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prometheus_client::metrics::counter::Counter;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

/// Where and how to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    /// The collector's OTLP/gRPC address, `http://host:4317`.
    pub endpoint: String,
    /// Resource attributes (`service.name` and the like).
    pub resource: Vec<(String, String)>,
    pub queue: usize,
    pub batch: usize,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Counts for the metrics (prometheus counters, shared with the family they were taken
/// from).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub exported: Counter,
    /// Spans refused because the queue was full.
    pub dropped_queue_full: Counter,
    /// Spans in batches the collector did not take.
    pub dropped_export_failed: Counter,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("OTLP endpoint `{0}`: {1}")]
    Endpoint(String, String),
    #[error("cannot start the exporter's thread: {0}")]
    Thread(std::io::Error),
}

/// The request path's handle.
#[derive(Debug)]
pub struct Exporter {
    tx: SyncSender<SpanRecord>,
    pub counters: Counters,
    pub config: ExportConfig,
}

impl Exporter {
    pub fn start(config: ExportConfig, counters: Counters) -> Result<Self, ExportError> {
        let uri: tonic::transport::Uri =
            config
                .endpoint
                .parse()
                .map_err(|e: http_uri_error::Error| {
                    ExportError::Endpoint(config.endpoint.clone(), e.to_string())
                })?;
        if !matches!(uri.scheme_str(), Some("http")) || uri.authority().is_none() {
            return Err(ExportError::Endpoint(
                config.endpoint.clone(),
                "give http://host:port (OTLP over gRPC, plaintext, to a local collector)".into(),
            ));
        }
        let (tx, rx) = sync_channel(config.queue.max(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ExportError::Thread)?;
        let (c, cfg) = (counters.clone(), config.clone());
        std::thread::Builder::new()
            .name("membrane-otlp".into())
            .spawn(move || run(rt, uri, cfg, rx, c))
            .map_err(ExportError::Thread)?;
        Ok(Self {
            tx,
            counters,
            config,
        })
    }

    /// Queues a span, or drops and counts it when the queue is full.
    pub fn record(&self, span: SpanRecord) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(span) {
            self.counters.dropped_queue_full.inc();
        }
    }
}

mod http_uri_error {
    pub type Error = tonic::codegen::http::uri::InvalidUri;
}

fn run(
    rt: tokio::runtime::Runtime,
    uri: tonic::transport::Uri,
    cfg: ExportConfig,
    rx: Receiver<SpanRecord>,
    counters: Counters,
) {
    let channel = {
        let _entered = rt.enter();
        tonic::transport::Channel::builder(uri)
            .connect_timeout(cfg.timeout)
            .timeout(cfg.timeout)
            .connect_lazy()
    };
    let mut client = TraceServiceClient::new(channel);
    let resource = Resource {
        attributes: cfg
            .resource
            .iter()
            .map(|(k, v)| kv(k, any(v.clone())))
            .collect(),
        ..Resource::default()
    };
    let mut batch = Vec::with_capacity(cfg.batch);
    let mut open = true;
    while open {
        let until = Instant::now() + cfg.interval;
        while batch.len() < cfg.batch {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(s) => batch.push(s),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        let req = request(&resource, std::mem::take(&mut batch));
        match rt.block_on(client.export(req)) {
            Ok(_) => {
                counters.exported.inc_by(n);
            }
            Err(e) => {
                counters.dropped_export_failed.inc_by(n);
                tracing::debug!(error = %e, spans = n, "OTLP export failed; the batch is dropped");
            }
        }
    }
}

fn any(s: String) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    }
}

fn kv(k: &str, v: AnyValue) -> KeyValue {
    KeyValue {
        key: k.to_owned(),
        value: Some(v),
        ..KeyValue::default()
    }
}

fn value(v: Value) -> AnyValue {
    let v = match v {
        Value::Shared(s) => any_value::Value::StringValue(s.to_string()),
        Value::Text(s) => any_value::Value::StringValue(s),
        Value::Static(s) => any_value::Value::StringValue(s.to_owned()),
        Value::Int(i) => any_value::Value::IntValue(i),
        Value::Bool(b) => any_value::Value::BoolValue(b),
    };
    AnyValue { value: Some(v) }
}

/// The OTLP request for one batch.
pub fn request(resource: &Resource, spans: Vec<SpanRecord>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "membrane".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                spans: spans.into_iter().map(otlp_span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn otlp_span(s: SpanRecord) -> Span {
    let kind = match s.kind {
        Kind::Internal => span::SpanKind::Internal,
        Kind::Server => span::SpanKind::Server,
        Kind::Client => span::SpanKind::Client,
    };
    let status = match s.error {
        Some(message) => Status {
            message,
            code: status::StatusCode::Error as i32,
        },
        None => Status::default(),
    };
    Span {
        trace_id: s.trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        trace_state: s.trace_state.unwrap_or_default(),
        parent_span_id: s.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
        // W3C flags (sampled: an exported span was recorded) in the low byte.
        flags: 0x01,
        name: s.name,
        kind: kind as i32,
        start_time_unix_nano: s.start_unix_nanos,
        end_time_unix_nano: s.end_unix_nanos,
        attributes: s
            .attributes
            .into_iter()
            .map(|(k, v)| kv(k, value(v)))
            .collect(),
        links: s
            .link
            .map(|l| span::Link {
                trace_id: l.trace_id.0.to_vec(),
                span_id: l.parent_id.0.to_vec(),
                flags: u32::from(l.flags),
                ..span::Link::default()
            })
            .into_iter()
            .collect(),
        status: Some(status),
        ..Span::default()
    }
}
