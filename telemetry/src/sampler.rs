//! Which requests are traced: parent-based (a continued trace keeps its caller's decision),
//! else a ratio of trace ids; failed requests can be kept whatever the decision was.

use crate::context::{TraceId, TraceParent};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Trace ids whose low 64 bits are below this are sampled (`u64::MAX` with `all`).
    threshold: u64,
    all: bool,
    /// Export the spans of failed and refused requests even when not sampled.
    pub errors: bool,
}

impl Sampler {
    /// `ratio` in [0, 1]; values outside are clamped.
    pub fn new(ratio: f64, errors: bool) -> Self {
        let r = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        Self {
            // 2^64 * r, in floating point; exact enough for a sampling ratio.
            threshold: (r * 18_446_744_073_709_551_616.0) as u64,
            all: r >= 1.0,
            errors,
        }
    }

    /// The head decision: the parent's when continuing, else the ratio's.
    pub fn sampled(&self, parent: Option<&TraceParent>, trace_id: &TraceId) -> bool {
        match parent {
            Some(p) => p.sampled(),
            None => self.all || trace_id.low64() < self.threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_parent_and_bounds() {
        let none = Sampler::new(0.0, false);
        let all = Sampler::new(1.0, false);
        let half = Sampler::new(0.5, false);
        let mut n = 0;
        for _ in 0..10_000 {
            let id = TraceId::random();
            assert!(!none.sampled(None, &id));
            assert!(all.sampled(None, &id));
            n += usize::from(half.sampled(None, &id));
        }
        assert!((4_500..5_500).contains(&n), "{n} of 10000 at 0.5");
        let parent = TraceParent {
            trace_id: TraceId::random(),
            parent_id: crate::context::SpanId::random(),
            flags: 1,
        };
        assert!(none.sampled(Some(&parent), &parent.trace_id));
        let unsampled = TraceParent { flags: 0, ..parent };
        assert!(!all.sampled(Some(&unsampled), &parent.trace_id));
        assert_eq!(Sampler::new(7.0, true), Sampler::new(1.0, true));
        assert!(!Sampler::new(f64::NAN, false).sampled(None, &parent.trace_id));
    }
}
