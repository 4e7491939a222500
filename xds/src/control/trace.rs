//! The control server's own traces (`membrane control --otlp-endpoint`): each spec change
//! is one trace, from the first file event to the last ACK of a gateway it reached. Spans:
//! `spec change` (the whole), `compile` (loading and compiling every spec) and `push` (from
//! the new resources published to the last gateway's ACK), all exported; a refused change
//! ends at `compile`, with the error. Spec changes are rare, so every one is recorded.

use super::state::ControlState;
use membrane_telemetry::{
    Counters, ExportConfig, Exporter, Kind, SpanId, SpanRecord, TraceId, Value, WallClock,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a push waits for ACKs before its span ends anyway.
const ACK_WAIT: Duration = Duration::from_secs(30);

pub struct ChangeTracer {
    exporter: Exporter,
}

/// One spec change, as the control loop saw it.
pub struct Change {
    pub event: Instant,
    pub compile: (Instant, Instant),
    /// The generation published, or why the change was refused.
    pub outcome: Result<u64, String>,
}

impl ChangeTracer {
    pub fn start(endpoint: &str) -> Result<Self, membrane_telemetry::export::ExportError> {
        let config = ExportConfig {
            endpoint: endpoint.to_owned(),
            resource: vec![("service.name".into(), "membrane-control".into())],
            queue: 1024,
            batch: 64,
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
        };
        Ok(Self {
            exporter: Exporter::start(config, Counters::default())?,
        })
    }

    /// Records the change: at once when refused, else after its gateways have ACKed.
    pub fn changed(self: &Arc<Self>, change: Change, state: Arc<ControlState>) {
        let published = change.compile.1;
        match change.outcome {
            Err(_) => self.record(change, None),
            Ok(_) => {
                let me = self.clone();
                tokio::spawn(async move {
                    let push = wait_for_acks(&state, published).await;
                    me.record(change, Some(push));
                });
            }
        }
    }

    fn record(&self, change: Change, push: Option<Push>) {
        let trace_id = TraceId::random();
        let root = SpanId::random();
        let clock = WallClock::now();
        let span = |id, parent, name: &str, from, to, attrs, error| SpanRecord {
            trace_id,
            span_id: id,
            parent,
            trace_state: None,
            name: name.to_owned(),
            kind: Kind::Internal,
            start_unix_nanos: clock.unix(from),
            end_unix_nanos: clock.unix(to),
            attributes: attrs,
            error,
            link: None,
        };
        let error = change.outcome.as_ref().err().cloned();
        let mut root_attrs = Vec::new();
        if let Ok(g) = &change.outcome {
            root_attrs.push((
                "membrane.generation",
                Value::Int(i64::try_from(*g).unwrap_or(i64::MAX)),
            ));
        }
        let end = push.as_ref().map_or(change.compile.1, |p| p.end);
        if let Some(p) = &push {
            let attrs = vec![
                ("membrane.gateways", Value::Int(p.total)),
                ("membrane.gateways_acked", Value::Int(p.acked)),
            ];
            self.exporter.record(span(
                SpanId::random(),
                Some(root),
                "push",
                change.compile.1,
                p.end,
                attrs,
                (p.acked < p.total).then(|| "not every gateway ACKed in time".to_owned()),
            ));
        }
        self.exporter.record(span(
            SpanId::random(),
            Some(root),
            "compile",
            change.compile.0,
            change.compile.1,
            Vec::new(),
            error.clone(),
        ));
        self.exporter.record(span(
            root,
            None,
            "spec change",
            change.event,
            end,
            root_attrs,
            error,
        ));
    }
}

struct Push {
    end: Instant,
    total: i64,
    acked: i64,
}

/// Waits until every gateway sent resources after `published` has ACKed them (or
/// `ACK_WAIT`); a change that reached no gateway ends after a second.
async fn wait_for_acks(state: &ControlState, published: Instant) -> Push {
    let start = Instant::now();
    loop {
        let nodes = state.nodes.snapshot();
        let (mut total, mut acked, mut last) = (0, 0, published);
        for n in nodes.values() {
            let sent: Vec<_> = n
                .types
                .values()
                .filter(|t| t.sent_at.is_some_and(|s| s >= published))
                .collect();
            if sent.is_empty() {
                continue;
            }
            total += 1;
            if sent
                .iter()
                .all(|t| t.acked_at.zip(t.sent_at).is_some_and(|(a, s)| a >= s))
            {
                acked += 1;
                for t in &sent {
                    if let Some(a) = t.acked_at {
                        last = last.max(a);
                    }
                }
            }
        }
        let waited = start.elapsed();
        if (total > 0 && acked == total)
            || (total == 0 && waited >= Duration::from_secs(1))
            || waited >= ACK_WAIT
        {
            let end = if total > 0 && acked == total {
                last
            } else {
                Instant::now()
            };
            return Push { end, total, acked };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
