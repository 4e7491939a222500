//! Counters by reason, for the control server's refusals (certificate requests, ADS
//! streams). Reasons are `&'static str` from a fixed set each caller names, so the label
//! values stay bounded whatever clients send.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct ByReason(Mutex<BTreeMap<&'static str, u64>>);

impl ByReason {
    pub fn add(&self, reason: &'static str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    pub fn get(&self, reason: &str) -> u64 {
        self.0
            .lock()
            .map(|m| m.get(reason).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Appends a Prometheus counter family `name` with one sample per reason seen.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        if let Ok(m) = self.0.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
            }
        }
    }
}
