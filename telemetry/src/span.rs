//! What a finished span is, as the request path records it: fixed fields and a short list
//! of attributes whose keys are static strings, turned into OTLP only on the exporter's
//! thread.

use crate::context::{SpanId, TraceId, TraceParent};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal,
    Server,
    Client,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Shared(Arc<str>),
    Text(String),
    Static(&'static str),
    Int(i64),
    Bool(bool),
}

impl From<&Arc<str>> for Value {
    fn from(v: &Arc<str>) -> Self {
        Value::Shared(v.clone())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&'static str> for Value {
    fn from(v: &'static str) -> Self {
        Value::Static(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Shared(s) => Some(s),
            Value::Text(s) => Some(s),
            Value::Static(s) => Some(s),
            _ => None,
        }
    }
}

/// A finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    /// `tracestate` of a continued trace.
    pub trace_state: Option<String>,
    pub name: String,
    pub kind: Kind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// The span's error, when it failed (OTLP status `Error` with this message).
    pub error: Option<String>,
    /// The incoming context of a request whose trace was not continued (a new trace
    /// started on an untrusted listener links to the caller's).
    pub link: Option<TraceParent>,
}

impl SpanRecord {
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}
