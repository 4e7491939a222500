//! OTLP's protobuf written straight from span records into one buffer per batch, and sent
//! over gRPC as those bytes. Why: building `opentelemetry-proto`'s message structs (a
//! `String` per attribute key) and letting prost size every nested message again at each
//! level cost about 20k instructions per exported span pair, more than the request itself.
//! Field numbers are OTLP's (`opentelemetry/proto/trace/v1/trace.proto`); the tests decode
//! what is written here with `opentelemetry-proto`'s types.

use crate::span::{Kind, SpanRecord, Value};

const LEN: u8 = 2;
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const FIXED32: u8 = 5;

/// A field's key (a varint: fields from 16 on take two bytes).
fn key(out: &mut Vec<u8>, field: u8, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn bytes_field(out: &mut Vec<u8>, field: u8, b: &[u8]) {
    key(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// The AnyValue body of `v`, its length first known.
fn any_len(v: &Value) -> usize {
    match v {
        Value::Int(i) => 1 + varint_len(*i as u64),
        Value::Bool(_) => 2,
        other => {
            let n = other.as_str().map_or(0, str::len);
            1 + varint_len(n as u64) + n
        }
    }
}

fn any(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Int(i) => {
            key(out, 3, VARINT);
            varint(out, *i as u64);
        }
        Value::Bool(b) => {
            key(out, 2, VARINT);
            out.push(u8::from(*b));
        }
        other => bytes_field(out, 1, other.as_str().unwrap_or("").as_bytes()),
    }
}

/// A `KeyValue` as field `field` of its parent.
fn attribute(out: &mut Vec<u8>, field: u8, k: &str, v: &Value) {
    let al = any_len(v);
    let body = 1 + varint_len(k.len() as u64) + k.len() + 1 + varint_len(al as u64) + al;
    key(out, field, LEN);
    varint(out, body as u64);
    bytes_field(out, 1, k.as_bytes());
    key(out, 2, LEN);
    varint(out, al as u64);
    any(out, v);
}

/// One `Span` message body.
fn span(out: &mut Vec<u8>, s: &SpanRecord) {
    bytes_field(out, 1, &s.trace_id.0);
    bytes_field(out, 2, &s.span_id.0);
    if let Some(ts) = &s.trace_state {
        bytes_field(out, 3, ts.as_bytes());
    }
    if let Some(p) = &s.parent {
        bytes_field(out, 4, &p.0);
    }
    bytes_field(out, 5, s.name.as_bytes());
    key(out, 6, VARINT);
    out.push(match s.kind {
        Kind::Internal => 1,
        Kind::Server => 2,
        Kind::Client => 3,
    });
    key(out, 7, FIXED64);
    out.extend_from_slice(&s.start_unix_nanos.to_le_bytes());
    key(out, 8, FIXED64);
    out.extend_from_slice(&s.end_unix_nanos.to_le_bytes());
    for (k, v) in &s.attributes {
        attribute(out, 9, k, v);
    }
    if let Some(l) = &s.link {
        // Link: trace_id 1, span_id 2, flags 6 (fixed32).
        key(out, 13, LEN);
        varint(out, (2 + 16 + 2 + 8 + 1 + 4) as u64);
        bytes_field(out, 1, &l.trace_id.0);
        bytes_field(out, 2, &l.parent_id.0);
        key(out, 6, FIXED32);
        out.extend_from_slice(&u32::from(l.flags).to_le_bytes());
    }
    // Status: message 2, code 3 (2 = error); absent is unset.
    if let Some(m) = &s.error {
        let body = 1 + varint_len(m.len() as u64) + m.len() + 2;
        key(out, 15, LEN);
        varint(out, body as u64);
        bytes_field(out, 2, m.as_bytes());
        key(out, 3, VARINT);
        out.push(2);
    }
    // W3C flags: sampled (an exported span was recorded).
    key(out, 16, FIXED32);
    out.extend_from_slice(&1u32.to_le_bytes());
}

/// Reusable buffers for one exporter thread.
#[derive(Default)]
pub struct Batch {
    spans: Vec<u8>,
    one: Vec<u8>,
}

impl Batch {
    /// The `ExportTraceServiceRequest` for `spans`, under one resource and one scope. Each
    /// span is written once into a scratch buffer and copied once into the span list; the
    /// list is copied once more, behind headers whose lengths are computed, not written
    /// and copied (nested buffers copied every span three more times).
    pub fn encode(
        &mut self,
        resource: &[(String, String)],
        scope_version: &str,
        spans: &[SpanRecord],
    ) -> Vec<u8> {
        self.spans.clear();
        for s in spans {
            self.one.clear();
            span(&mut self.one, s);
            bytes_field(&mut self.spans, 2, &self.one);
        }
        // Resource { attributes 1 }.
        self.one.clear();
        for (k, v) in resource {
            attribute(&mut self.one, 1, k, &Value::Text(v.clone()));
        }
        let field = |len: usize| 1 + varint_len(len as u64) + len;
        // InstrumentationScope { name 1, version 2 }.
        let scope = field("membrane".len()) + field(scope_version.len());
        // ScopeSpans { scope 1, spans 2 (already framed) }.
        let scope_spans = field(scope) + self.spans.len();
        // ResourceSpans { resource 1, scope_spans 2 }.
        let resource_spans = field(self.one.len()) + field(scope_spans);
        let mut out = Vec::with_capacity(field(resource_spans));
        key(&mut out, 1, LEN);
        varint(&mut out, resource_spans as u64);
        bytes_field(&mut out, 1, &self.one);
        key(&mut out, 2, LEN);
        varint(&mut out, scope_spans as u64);
        key(&mut out, 1, LEN);
        varint(&mut out, scope as u64);
        bytes_field(&mut out, 1, b"membrane");
        bytes_field(&mut out, 2, scope_version.as_bytes());
        out.extend_from_slice(&self.spans);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{SpanId, TraceId, TraceParent};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message;

    #[test]
    fn varint_lengths() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut b = Vec::new();
            varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    /// What is written decodes with `opentelemetry-proto`'s types to the same span.
    #[test]
    fn decodes_as_otlp() {
        let parent = SpanId::random();
        let long = "x".repeat(300);
        let s = SpanRecord {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent: Some(parent),
            trace_state: Some("vendor=abc".into()),
            name: "GET orders".into(),
            kind: Kind::Server,
            start_unix_nanos: 1_700_000_000_000_000_000,
            end_unix_nanos: 1_700_000_000_000_500_000,
            attributes: vec![
                ("http.request.method", Value::Static("GET")),
                ("http.response.status_code", Value::Int(503)),
                ("negative", Value::Int(-5)),
                ("flag", Value::Bool(true)),
                ("long", Value::Text(long.clone())),
            ],
            error: Some("upstream_reset".into()),
            link: Some(TraceParent {
                trace_id: TraceId::random(),
                parent_id: SpanId::random(),
                flags: 1,
            }),
        };
        let mut b = Batch::default();
        let resource = [("service.name".to_owned(), "membrane".to_owned())];
        let bytes = b
            .encode(&resource, "0.1.0", &[s.clone(), s.clone()])
            .to_vec();
        let req = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let rs = &req.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes[0].key,
            "service.name"
        );
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "membrane");
        assert_eq!(ss.scope.as_ref().unwrap().version, "0.1.0");
        assert_eq!(ss.spans.len(), 2);
        let got = &ss.spans[0];
        assert_eq!(got.trace_id, s.trace_id.0);
        assert_eq!(got.span_id, s.span_id.0);
        assert_eq!(got.parent_span_id, parent.0);
        assert_eq!(got.trace_state, "vendor=abc");
        assert_eq!(got.name, "GET orders");
        assert_eq!(got.kind, 2);
        assert_eq!(got.start_time_unix_nano, s.start_unix_nanos);
        assert_eq!(got.end_time_unix_nano, s.end_unix_nanos);
        assert_eq!(got.flags, 1);
        let v = |i: usize| {
            got.attributes[i]
                .value
                .as_ref()
                .unwrap()
                .value
                .clone()
                .unwrap()
        };
        assert_eq!(v(0), any_value::Value::StringValue("GET".into()));
        assert_eq!(v(1), any_value::Value::IntValue(503));
        assert_eq!(v(2), any_value::Value::IntValue(-5));
        assert_eq!(v(3), any_value::Value::BoolValue(true));
        assert_eq!(v(4), any_value::Value::StringValue(long));
        let st = got.status.as_ref().unwrap();
        assert_eq!((st.code, st.message.as_str()), (2, "upstream_reset"));
        let l = &got.links[0];
        assert_eq!(l.span_id, s.link.unwrap().parent_id.0);
        assert_eq!(l.flags, 1);
    }
}
