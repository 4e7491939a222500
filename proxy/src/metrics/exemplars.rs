//! OpenMetrics exemplars on `membrane_request_duration_seconds`: the last traced request of
//! each bucket of each series, as `# {trace_id="…"} <seconds> <timestamp>` after the
//! bucket's line, so a dashboard can jump from a latency bucket to a trace.
//!
//! Why written into the text: prometheus-client cannot make an exemplar outside its own
//! histogram type, which takes a lock on every observation. Here only exported requests
//! touch a slot (a `try_lock`: a busy slot skips the exemplar rather than wait), and the
//! scrape adds them to the bucket lines of the series they belong to.

use crate::histogram::{BOUNDS, bucket_of};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
struct Exemplar {
    trace_id: [u8; 16],
    seconds: f64,
    unix: f64,
}

/// One series' exemplars, a slot per bucket.
#[derive(Debug, Default)]
pub struct Slots([Mutex<Option<Exemplar>>; BOUNDS.len() + 1]);

impl Slots {
    /// Keeps `trace_id` as the exemplar of the bucket `d` falls in.
    pub fn record(&self, d: Duration, trace_id: [u8; 16]) {
        let seconds = d.as_secs_f64();
        if let Ok(mut slot) = self.0[bucket_of(seconds)].try_lock() {
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |t| t.as_secs_f64());
            *slot = Some(Exemplar {
                trace_id,
                seconds,
                unix,
            });
        }
    }
}

/// Every series' slots, by its labels as the exposition writes them (less `le`).
#[derive(Debug, Default)]
pub struct Table(Mutex<HashMap<String, Arc<Slots>>>);

impl Table {
    /// The slots of the series `listener`, `route`, `cluster` (one per series, kept across
    /// generations).
    pub fn slots(&self, listener: &str, route: &str, cluster: &str) -> Arc<Slots> {
        let key = format!("listener=\"{listener}\",route=\"{route}\",cluster=\"{cluster}\"");
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.entry(key).or_default().clone()
    }

    /// Adds the exemplars to the bucket lines of `metric` in the OpenMetrics `text`.
    pub fn annotate(&self, metric: &str, text: &str) -> String {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let prefix = format!("{metric}_bucket{{le=\"");
        let mut out = String::with_capacity(text.len() + 1024);
        for line in text.lines() {
            out.push_str(line);
            if let Some(rest) = line.strip_prefix(&prefix)
                && let Some((le, tail)) = rest.split_once("\",")
                && let Some((labels, _)) = tail.split_once('}')
                && let Some(slots) = t.get(labels)
                && let Some(i) = bucket_index(le)
                && let Ok(slot) = slots.0[i].lock()
                && let Some(e) = *slot
            {
                let _ = write!(out, " # {{trace_id=\"");
                for b in e.trace_id {
                    let _ = write!(out, "{b:02x}");
                }
                let _ = write!(out, "\"}} {} {:.3}", e.seconds, e.unix);
            }
            out.push('\n');
        }
        out
    }
}

fn bucket_index(le: &str) -> Option<usize> {
    if le == "+Inf" {
        return Some(BOUNDS.len());
    }
    let v: f64 = le.parse().ok()?;
    BOUNDS.iter().position(|b| (b - v).abs() < 1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_lines_get_their_exemplar() {
        let t = Table::default();
        let s = t.slots("main", "api", "c");
        s.record(Duration::from_millis(3), [0xab; 16]);
        let text = "membrane_d_bucket{le=\"0.0025\",listener=\"main\",route=\"api\",cluster=\"c\"} 0\nmembrane_d_bucket{le=\"0.005\",listener=\"main\",route=\"api\",cluster=\"c\"} 1\nmembrane_d_bucket{le=\"0.005\",listener=\"other\",route=\"api\",cluster=\"c\"} 1\n";
        let out = t.annotate("membrane_d", text);
        let lines: Vec<&str> = out.lines().collect();
        assert!(!lines[0].contains(" # "), "{out}");
        assert!(
            lines[1].starts_with(&format!(
                "membrane_d_bucket{{le=\"0.005\",listener=\"main\",route=\"api\",cluster=\"c\"}} 1 # {{trace_id=\"{}\"}} 0.003 ",
                "ab".repeat(16)
            )),
            "{out}"
        );
        assert!(!lines[2].contains(" # "), "{out}");
    }
}
