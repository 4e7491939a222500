//! OTLP/gRPC export from a bounded queue. The request path writes a finished span's
//! protobuf straight into one of a few buffers (picked per thread, so workers do not
//! share one; an uncontended lock, no allocation, no wake-up): when the spans queued reach
//! the bound, the span is dropped and counted, so a slow or absent collector never slows a
//! request. One thread per exporter takes the buffers by polling (a few milliseconds apart
//! while spans come, so writers never wake it), sends a batch when it has `batch` spans or
//! its oldest waited `interval`, with a timeout; a failed export drops its batch and
//! counts it (no retry: the spans behind it matter more). The thread ends, after sending
//! what is queued, when the last handle is dropped.

use crate::grpc::{Channel, Message};
use crate::span::SpanRecord;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where and how to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    /// The collector's OTLP/gRPC address, `http://host:4317`.
    pub endpoint: String,
    /// Resource attributes (`service.name` and the like).
    pub resource: Vec<(String, String)>,
    /// Spans queued at most (written and not yet sent or dropped).
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

/// Buffers the request path writes into: one per thread index modulo this.
const SHARDS: usize = 8;

/// Framed spans written and not yet taken by the exporter's thread.
#[derive(Debug, Default)]
struct Shard {
    bytes: Vec<u8>,
    spans: usize,
}

/// What the request path and the exporter's thread share.
#[derive(Debug)]
struct Shared {
    shards: [Mutex<Shard>; SHARDS],
    /// Spans written and not yet sent or dropped, against `ExportConfig::queue`.
    queued: AtomicUsize,
    /// The last handle is gone: send what is left and end.
    closed: AtomicBool,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's buffer (workers are assigned in turn, so up to `SHARDS` of them never
    /// share one).
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// The request path's handle.
#[derive(Debug)]
pub struct Exporter {
    shared: Arc<Shared>,
    /// Asks the thread to send what it holds now; answered on the `()` sender.
    flush: Mutex<SyncSender<SyncSender<()>>>,
    pub counters: Counters,
    pub config: ExportConfig,
}

impl Exporter {
    pub fn start(config: ExportConfig, counters: Counters) -> Result<Self, ExportError> {
        let uri: http::Uri = config
            .endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| {
                ExportError::Endpoint(config.endpoint.clone(), e.to_string())
            })?;
        if !matches!(uri.scheme_str(), Some("http")) || uri.authority().is_none() {
            return Err(ExportError::Endpoint(
                config.endpoint.clone(),
                "give http://host:port (OTLP over gRPC, plaintext, to a local collector)".into(),
            ));
        }
        let shared = Arc::new(Shared {
            shards: Default::default(),
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ExportError::Thread)?;
        let (c, cfg, sh) = (counters.clone(), config.clone(), shared.clone());
        let (flush, flushes) = sync_channel(4);
        std::thread::Builder::new()
            .name("membrane-otlp".into())
            .spawn(move || run(rt, uri, cfg, sh, flushes, c))
            .map_err(ExportError::Thread)?;
        Ok(Self {
            shared,
            flush: Mutex::new(flush),
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

    /// Queues `spans` spans that `write` writes (each with [`crate::SpanWriter`]), or drops and
    /// counts them when the queue is full.
    pub fn write(&self, spans: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let before = self.shared.queued.fetch_add(spans, Ordering::Relaxed);
        if before + spans > self.config.queue {
            self.shared.queued.fetch_sub(spans, Ordering::Relaxed);
            self.counters.dropped_queue_full.inc_by(spans as u64);
            return;
        }
        let i = SHARD.with(|s| *s);
        // A writer that panicked cannot have left a span half-written that matters more
        // than the rest: the buffer is used as it is.
        let mut shard = match self.shared.shards[i].lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        write(&mut shard.bytes);
        shard.spans += spans;
    }

    /// Queues a span record, or drops and counts it when the queue is full.
    pub fn record(&self, span: SpanRecord) {
        self.write(1, |out| crate::wire::span(out, &span));
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// The gRPC method, written out: the request body is the bytes `wire` made.
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

fn run(
    rt: tokio::runtime::Runtime,
    uri: http::Uri,
    cfg: ExportConfig,
    shared: Arc<Shared>,
    flushes: Receiver<SyncSender<()>>,
    counters: Counters,
) {
    let mut out = Out {
        grpc: Channel::new(uri, cfg.timeout),
        rt,
        cfg,
        counters,
        shared,
        taken: Vec::new(),
        spans: 0,
        last: [64 << 10; SHARDS],
    };
    // The buffers are taken by polling, not by waiting to be woken: a thread that waits
    // is woken (a futex call) by every span written, on the request path; one that sleeps
    // is not. It sleeps a few milliseconds while spans come, up to `interval` when none do.
    let busy = Duration::from_millis(5).min(out.cfg.interval);
    let idle = Duration::from_millis(50).min(out.cfg.interval);
    let mut since = Instant::now();
    loop {
        let closed = out.shared.closed.load(Ordering::Acquire);
        let before = out.spans;
        out.take();
        // A flush sends everything written, then answers.
        if let Ok(ack) = flushes.try_recv() {
            out.send_all();
            let _ = ack.try_send(());
            since = Instant::now();
            continue;
        }
        if closed {
            out.send_all();
            return;
        }
        if out.spans == 0 {
            since = Instant::now();
        }
        let due = out.spans > 0 && since.elapsed() >= out.cfg.interval;
        if out.spans < out.cfg.batch && !due {
            std::thread::sleep(if out.spans > before { busy } else { idle });
            continue;
        }
        since = Instant::now();
        out.send_all();
    }
}

/// The exporter thread's side: the spans taken from the buffers and the way out.
struct Out {
    grpc: Channel,
    rt: tokio::runtime::Runtime,
    cfg: ExportConfig,
    counters: Counters,
    shared: Arc<Shared>,
    /// Buffers of framed spans taken and not yet sent.
    taken: Vec<Bytes>,
    spans: usize,
    /// Room for each buffer swapped in: twice what it held the last time, so a writer
    /// seldom grows it (and copies it) as it fills.
    last: [usize; SHARDS],
}

/// Largest export request body; the collector's default limit on a gRPC message is 4 MiB.
const MAX_REQUEST: usize = 1 << 20;

impl Out {
    /// Takes what the buffers hold (each buffer's lock held for a swap only).
    fn take(&mut self) {
        for (shard, last) in self.shared.shards.iter().zip(&mut self.last) {
            let (n, fresh) = {
                let mut s = match shard.lock() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if s.spans == 0 {
                    continue;
                }
                let fresh = std::mem::replace(&mut s.bytes, Vec::with_capacity(*last));
                (std::mem::take(&mut s.spans), fresh)
            };
            *last = (fresh.len() * 2).clamp(64 << 10, MAX_REQUEST);
            self.taken.push(Bytes::from(fresh));
            self.spans += n;
        }
    }

    /// Sends everything taken, in requests of at most `batch` spans and `MAX_REQUEST`
    /// bytes (a single larger span goes alone).
    fn send_all(&mut self) {
        let mut parts: Vec<Bytes> = Vec::new();
        let (mut n, mut len) = (0, 0);
        for buf in std::mem::take(&mut self.taken) {
            // Spans next to each other in one buffer go as one slice: `seg..at`.
            let (mut seg, mut at) = (0, 0);
            while at < buf.len() {
                let Some(one) = crate::wire::framed_len(&buf[at..]) else {
                    // Not a whole span: cannot happen with what `SpanWriter` writes; the
                    // rest of this buffer is dropped (its spans are counted below).
                    break;
                };
                if n > 0 && (n >= self.cfg.batch || len + one > MAX_REQUEST) {
                    if at > seg {
                        parts.push(buf.slice(seg..at));
                    }
                    self.export(std::mem::take(&mut parts), n, len);
                    (n, len, seg) = (0, 0, at);
                }
                at += one;
                n += 1;
                len += one;
            }
            if at > seg {
                parts.push(buf.slice(seg..at));
            }
        }
        if n > 0 {
            self.export(parts, n, len);
        }
        // What could not be read as spans.
        if self.spans > 0 {
            self.counters
                .dropped_export_failed
                .inc_by(self.spans as u64);
            self.done(self.spans);
        }
    }

    /// Sends `n` framed spans, `len` bytes in `parts`, and counts the outcome.
    fn export(&mut self, mut parts: Vec<Bytes>, n: usize, len: usize) {
        let head = crate::wire::request_head(&self.cfg.resource, env!("CARGO_PKG_VERSION"), len);
        parts.insert(0, Bytes::from(head));
        match self
            .rt
            .block_on(self.grpc.unary(EXPORT, Message::new(parts)))
        {
            Ok(()) => {
                self.counters.exported.inc_by(n as u64);
            }
            Err(e) => {
                self.counters.dropped_export_failed.inc_by(n as u64);
                tracing::debug!(error = %e, spans = n, "OTLP export failed; the batch is dropped");
            }
        }
        self.done(n);
    }

    /// `n` spans are sent or dropped: room for as many in the queue.
    fn done(&mut self, n: usize) {
        self.spans -= n;
        self.shared.queued.fetch_sub(n, Ordering::Relaxed);
    }
}
