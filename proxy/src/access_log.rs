//! One JSON line per request, for listeners that turn it on (`access_log: stdout|stderr`).
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

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// Lines waiting for the writer; past this, new lines are dropped.
const QUEUE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogTarget {
    #[default]
    Off,
    Stdout,
    Stderr,
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

/// Queues a line for `target`.
pub fn write(target: AccessLogTarget, line: &Line<'_>, dropped: &Counter) {
    let Some(tx) = sender(target) else { return };
    let Ok(mut text) = serde_json::to_string(line) else {
        return;
    };
    text.push('\n');
    match tx.try_send(text) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            dropped.inc();
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}

fn sender(target: AccessLogTarget) -> Option<&'static SyncSender<String>> {
    static STDOUT: OnceLock<Option<SyncSender<String>>> = OnceLock::new();
    static STDERR: OnceLock<Option<SyncSender<String>>> = OnceLock::new();
    let cell = match target {
        AccessLogTarget::Off => return None,
        AccessLogTarget::Stdout => &STDOUT,
        AccessLogTarget::Stderr => &STDERR,
    };
    cell.get_or_init(|| {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("membrane-access-log".into())
            .spawn(move || drain(rx, target))
            .map_err(|e| tracing::error!(error = %e, "cannot start the access log writer"))
            .ok()?;
        Some(tx)
    })
    .as_ref()
}

/// Writes lines as they come, in batches: flushed whenever the queue runs empty.
fn drain(rx: Receiver<String>, target: AccessLogTarget) {
    let mut out: Box<dyn Write> = match target {
        AccessLogTarget::Stderr => Box::new(std::io::BufWriter::new(std::io::stderr())),
        _ => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
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
