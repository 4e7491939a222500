//! One JSON line per request, for listeners that turn it on (`access_log: stdout | stderr |
//! <file path>`), with the fields a listener picks (`access_log_fields`, all by default)
//! and a share of allowed requests (`access_log_sample`, 1 by default; refused and failed
//! requests are always written).
//!
//! Lines are formatted on the worker and handed to a writer thread through a bounded queue,
//! so a slow terminal or pipe never blocks traffic: when the queue is full the line is
//! dropped and counted (`membrane_access_log_dropped_total`). Fields: `ts` (RFC 3339, UTC),
//! `listener`, `route`, `cluster`, `method`, `path` (normalized; the query's values
//! redacted, since tokens travel in them: `?access_token=redacted`), `protocol`, `status`,
//! `error` (the stable code of a failure), `duration_ms` (to response headers),
//! `request_id`, `client` (address), `peer` (the client certificate's SPIFFE ID) and
//! `peer_cell`, `subject` (a verified JWT's `sub`), `authz` and `authz_rule`. Assumption: a request that the client abandons before its response is
//! logged like any other (its status is the one the proxy produced).

mod sink;

pub use sink::reopen;

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{SyncSender, TrySendError};

/// Where a listener's lines go. Written in the file as `off`, `stdout`, `stderr` or a path
/// (absolute, or relative to the working directory), appended to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum AccessLogTarget {
    #[default]
    Off,
    Stdout,
    Stderr,
    File(std::path::PathBuf),
}

impl Serialize for AccessLogTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AccessLogTarget::Off => s.serialize_str("off"),
            AccessLogTarget::Stdout => s.serialize_str("stdout"),
            AccessLogTarget::Stderr => s.serialize_str("stderr"),
            AccessLogTarget::File(p) => s.serialize_str(&p.to_string_lossy()),
        }
    }
}

impl AccessLogTarget {
    /// `off`, `stdout`, `stderr` or a path (it has a `/`), as the file and cell specs write it.
    pub fn parse(v: &str) -> Result<Self, String> {
        Ok(match v {
            "off" => AccessLogTarget::Off,
            "stdout" => AccessLogTarget::Stdout,
            "stderr" => AccessLogTarget::Stderr,
            p if p.contains('/') => AccessLogTarget::File(p.into()),
            other => {
                return Err(format!(
                    "`{other}`: give off, stdout, stderr or a file path (with a `/`)"
                ));
            }
        })
    }
}

impl<'de> Deserialize<'de> for AccessLogTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AccessLogTarget::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

pub use membrane_api::access_log::FIELDS;

/// A listener's access log, compiled.
#[derive(Debug)]
pub struct AccessLog {
    sink: SyncSender<String>,
    /// Bits of `FIELDS` to write; all set by default.
    fields: u32,
    /// Share of allowed requests written.
    sample: f64,
}

impl AccessLog {
    pub const ALL: u32 = (1 << FIELDS.len()) - 1;

    /// `fields`: bits of [`FIELDS`]. Starts (or reuses) the target's writer; a file that
    /// cannot be opened for appending is an error.
    pub fn new(target: &AccessLogTarget, fields: u32, sample: f64) -> Result<Option<Self>, String> {
        let Some(sink) = sink::sender(target)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            sink,
            fields,
            sample: sample.clamp(0.0, 1.0),
        }))
    }

    /// Whether this request's line is written: always for a failure or a refusal, else
    /// for the sampled share.
    pub fn wants(&self, failed: bool) -> bool {
        failed || self.sample >= 1.0 || fastrand::f64() < self.sample
    }

    /// Queues the line, or drops and counts it when the writer is behind.
    pub fn write(&self, line: &Line<'_>, dropped: &Counter) {
        let text = if self.fields == Self::ALL {
            serde_json::to_string(line)
        } else {
            serde_json::to_value(line).and_then(|v| {
                let mut v = v;
                if let Some(m) = v.as_object_mut() {
                    m.retain(|k, _| {
                        FIELDS
                            .iter()
                            .position(|f| f == k)
                            .is_some_and(|i| self.fields & (1 << i) != 0)
                    });
                }
                serde_json::to_string(&v)
            })
        };
        let Ok(mut text) = text else { return };
        text.push('\n');
        if let Err(TrySendError::Full(_)) = self.sink.try_send(text) {
            dropped.inc();
        }
    }
}

#[derive(Serialize)]
pub struct Line<'a> {
    pub ts: String,
    pub listener: &'a str,
    pub route: &'a str,
    pub cluster: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    pub duration_ms: f64,
    pub request_id: &'a str,
    pub client: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_cell: Option<&'a str>,
    /// The verified token's `sub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    /// `allow`, `deny` or `dry_run_deny`, and the deciding rule (`default` when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz_rule: Option<&'a str>,
    /// The request's trace (32 hex digits), with tracing on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
}

/// The request target for the log: the query's parameter names are kept (they help to tell
/// requests apart), their values are replaced, as `access_token=`, `code=` and signed URLs
/// carry secrets there. Assumption: no query value is worth a leaked credential.
pub fn redact_query(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, _)) => {
                out.push_str(k);
                out.push_str("=redacted");
            }
            None => out.push_str(pair),
        }
    }
    out
}

/// Now, as RFC 3339 with milliseconds, UTC.
pub fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_redacted_and_names_kept() {
        use super::redact_query;
        assert_eq!(redact_query("/a"), "/a");
        assert_eq!(
            redact_query("/a?access_token=eyJ.x.y&page=2&flag"),
            "/a?access_token=redacted&page=redacted&flag"
        );
        assert_eq!(redact_query("/a?"), "/a?");
    }
}
