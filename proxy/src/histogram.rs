//! The request latency histogram: fixed buckets of atomics, so observing never blocks
//! (prometheus-client's own histogram takes a mutex on every observation), and its count is
//! the sum of its buckets, taken at scrape (one atomic update less per request).

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub(crate) const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket histogram built from atomics, so observing never blocks.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    inner: Arc<HistogramCells>,
}

#[derive(Debug, Default)]
struct HistogramCells {
    /// One more than the bounds: the last bucket is +Inf. The count is their sum, taken
    /// when the histogram is encoded (one atomic update less per observation).
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// The bucket `secs` falls in (the last is `+Inf`).
#[inline]
pub(crate) fn bucket_of(secs: f64) -> usize {
    BOUNDS
        .iter()
        .position(|&b| secs <= b)
        .unwrap_or(BOUNDS.len())
}

impl LatencyHistogram {
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = bucket_of(secs);
        let c = &self.inner;
        c.buckets[i].fetch_add(1, Ordering::Relaxed);
        c.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.inner;
        let mut buckets = [(0.0, 0u64); BOUNDS.len() + 1];
        for (i, slot) in buckets.iter_mut().enumerate() {
            // The last bucket is `+Inf` (prometheus-client writes it so for `INFINITY` only; with
            // `f64::MAX` every `histogram_quantile` over it was NaN).
            let bound = BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
            *slot = (bound, c.buckets[i].load(Ordering::Relaxed));
        }
        let sum = c.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
