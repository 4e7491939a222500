//! OTLP/gRPC export from a bounded queue. The request path only `try_send`s a finished span
//! (no lock held while waiting, no allocation beyond the span's own): when the queue is
//! full the span is dropped and counted, so a slow or absent collector never slows a
//! request. One thread per exporter drains the queue by polling (a few milliseconds apart
//! while spans come, so senders never wake it), sends a batch when it has `batch` spans or
//! its oldest waited `interval`, encoded straight to OTLP's protobuf, with a timeout; a failed
//! export drops its batch and counts it (no retry: the queue behind it matters more).
//! The thread ends, after sending what is queued, when the last handle is dropped.

use crate::span::SpanRecord;
use prometheus_client::metrics::counter::Counter;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
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
    /// Asks the thread to send what it holds now; answered on the `()` sender.
    flush: std::sync::Mutex<SyncSender<SyncSender<()>>>,
    pub counters: Counters,
    pub config: ExportConfig,
}

impl Exporter {
    pub fn start(config: ExportConfig, counters: Counters) -> Result<Self, ExportError> {
        let uri: tonic::transport::Uri =
            config
                .endpoint
                .parse()
                .map_err(|e: tonic::codegen::http::uri::InvalidUri| {
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
        let (flush, flushes) = sync_channel(4);
        std::thread::Builder::new()
            .name("membrane-otlp".into())
            .spawn(move || run(rt, uri, cfg, rx, flushes, c))
            .map_err(ExportError::Thread)?;
        Ok(Self {
            tx,
            flush: std::sync::Mutex::new(flush),
            counters,
            config,
        })
    }

    /// Sends what is queued now and waits for it, at most `wait` (a process about to exit;
    /// never called on the request path).
    pub fn flush(&self, wait: Duration) {
        let (ack, acked) = sync_channel(1);
        let asked = self
            .flush
            .lock()
            .map(|f| f.try_send(ack).is_ok())
            .unwrap_or(false);
        if asked {
            let _ = acked.recv_timeout(wait);
        }
    }

    /// Queues a span, or drops and counts it when the queue is full.
    pub fn record(&self, span: SpanRecord) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(span) {
            self.counters.dropped_queue_full.inc();
        }
    }
}

/// The gRPC method, written out: the request body is the bytes `wire` made.
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A codec that sends a message already encoded and ignores the reply's body (an
/// `ExportTraceServiceResponse`; a partial success is not acted on).
#[derive(Clone, Copy, Default)]
struct Raw;
struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = ();
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        use bytes::Buf;
        let n = src.remaining();
        src.advance(n);
        Ok(Some(()))
    }
}

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

async fn send(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    body: Vec<u8>,
) -> Result<(), tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT);
    grpc.unary(tonic::Request::new(body), path, Raw)
        .await
        .map(|_| ())
}

fn run(
    rt: tokio::runtime::Runtime,
    uri: tonic::transport::Uri,
    cfg: ExportConfig,
    rx: Receiver<SpanRecord>,
    flushes: Receiver<SyncSender<()>>,
    counters: Counters,
) {
    let channel = {
        let _entered = rt.enter();
        tonic::transport::Channel::builder(uri)
            .connect_timeout(cfg.timeout)
            .timeout(cfg.timeout)
            .connect_lazy()
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut wire = crate::wire::Batch::default();
    let mut batch = Vec::with_capacity(cfg.batch);
    let mut open = true;
    // The queue is drained by polling, not by a blocking receive: a receiver that waits is
    // woken (a futex call) by every span sent, on the request path; one that sleeps is not.
    // It sleeps a few milliseconds while spans come, up to `interval` when none do.
    let busy = Duration::from_millis(5).min(cfg.interval);
    let idle = Duration::from_millis(50).min(cfg.interval);
    let mut since = Instant::now();
    while open {
        let before = batch.len();
        while batch.len() < cfg.batch {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // A flush takes everything queued, in as many batches as it takes, then answers.
        if let Ok(ack) = flushes.try_recv() {
            while let Ok(s) = rx.try_recv() {
                batch.push(s);
                if batch.len() >= cfg.batch {
                    export(&rt, &mut grpc, &mut wire, &cfg, &mut batch, &counters);
                }
            }
            export(&rt, &mut grpc, &mut wire, &cfg, &mut batch, &counters);
            let _ = ack.try_send(());
            since = Instant::now();
            continue;
        }
        let full = batch.len() >= cfg.batch;
        if batch.is_empty() {
            since = Instant::now();
        }
        let due = !batch.is_empty() && since.elapsed() >= cfg.interval;
        if open && !full && !due {
            std::thread::sleep(if batch.len() > before { busy } else { idle });
            continue;
        }
        if batch.is_empty() {
            continue;
        }
        since = Instant::now();
        export(&rt, &mut grpc, &mut wire, &cfg, &mut batch, &counters);
    }
}

/// Sends `batch` (emptied) and counts the outcome.
fn export(
    rt: &tokio::runtime::Runtime,
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    wire: &mut crate::wire::Batch,
    cfg: &ExportConfig,
    batch: &mut Vec<SpanRecord>,
    counters: &Counters,
) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let body = wire.encode(&cfg.resource, env!("CARGO_PKG_VERSION"), batch);
    batch.clear();
    match rt.block_on(send(grpc, body)) {
        Ok(()) => {
            counters.exported.inc_by(n);
        }
        Err(e) => {
            counters.dropped_export_failed.inc_by(n);
            tracing::debug!(error = %e, spans = n, "OTLP export failed; the batch is dropped");
        }
    }
}
