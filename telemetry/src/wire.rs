//! OTLP's protobuf written straight into the exporter's buffers, and sent over gRPC as
//! those bytes. Why: building `opentelemetry-proto`'s message structs (a `String` per
//! attribute key) and letting prost size every nested message again at each level cost
//! about 20k instructions per exported span pair, more than the request itself; owned span
//! records copied into the queue and encoded on the exporter's thread still cost 10k.
//! [`SpanWriter`] writes one `Span`, already framed as an entry of `ScopeSpans.spans`,
//! from borrowed fields: nothing is allocated or copied twice. Field numbers are OTLP's
//! (`opentelemetry/proto/trace/v1/trace.proto`); the tests decode what is written here
//! with `opentelemetry-proto`'s types.

use crate::context::{SpanId, TraceId, TraceParent};
use crate::span::{Kind, SpanRecord, Value};

const LEN: u8 = 2;
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const FIXED32: u8 = 5;

/// A field's key (a varint: fields from 16 on take two bytes).
#[inline]
fn key(out: &mut Vec<u8>, field: u8, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

#[inline]
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

#[inline]
fn bytes_field(out: &mut Vec<u8>, field: u8, b: &[u8]) {
    key(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// `KeyValue { key 1, value 2: AnyValue }` as attribute field `field` of its parent, the
/// AnyValue's body `al` bytes long and written by `any`.
#[inline]
fn attribute(out: &mut Vec<u8>, field: u8, k: &str, al: usize, any: impl FnOnce(&mut Vec<u8>)) {
    let body = 1 + varint_len(k.len() as u64) + k.len() + 1 + varint_len(al as u64) + al;
    key(out, field, LEN);
    varint(out, body as u64);
    bytes_field(out, 1, k.as_bytes());
    key(out, 2, LEN);
    varint(out, al as u64);
    any(out);
}

/// A string attribute. Most keys and values are short enough that every length is one
/// byte: those are written as two fixed headers and two copies.
fn str_attribute(out: &mut Vec<u8>, field: u8, k: &str, v: &str) {
    let (kl, vl) = (k.len(), v.len());
    // KeyValue body: key (2 + kl), value tag and length (2), AnyValue (2 + vl).
    if kl + vl <= 121 && field < 16 {
        out.reserve(8 + kl + vl);
        out.extend_from_slice(&[(field << 3) | LEN, (6 + kl + vl) as u8, 0x0a, kl as u8]);
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&[0x12, (2 + vl) as u8, 0x0a, vl as u8]);
        out.extend_from_slice(v.as_bytes());
        return;
    }
    let al = 1 + varint_len(vl as u64) + vl;
    attribute(out, field, k, al, |o| bytes_field(o, 1, v.as_bytes()));
}

fn int_attribute(out: &mut Vec<u8>, field: u8, k: &str, v: i64) {
    let kl = k.len();
    // Status codes and ports: a key of one-byte length and a value of one or two bytes.
    if kl <= 100 && (0..1 << 14).contains(&v) && field < 16 {
        let two = v >= 0x80;
        let vl = 1 + usize::from(two);
        out.reserve(8 + kl);
        out.extend_from_slice(&[(field << 3) | LEN, (5 + kl + vl) as u8, 0x0a, kl as u8]);
        out.extend_from_slice(k.as_bytes());
        let (lo, hi) = ((v as u8) | if two { 0x80 } else { 0 }, (v >> 7) as u8);
        let tail = [0x12, (1 + vl) as u8, (3 << 3) | VARINT, lo, hi];
        out.extend_from_slice(&tail[..4 + usize::from(two)]);
        return;
    }
    let al = 1 + varint_len(v as u64);
    attribute(out, field, k, al, |o| {
        key(o, 3, VARINT);
        varint(o, v as u64);
    });
}

/// Span attributes encoded once (when a config is compiled: a route's names, an
/// endpoint's address) and copied whole into every span that carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes(Box<[u8]>);

impl Attributes {
    pub fn builder() -> AttributesBuilder {
        AttributesBuilder(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes [`Attributes`] in the order given.
pub struct AttributesBuilder(Vec<u8>);

impl AttributesBuilder {
    pub fn str(mut self, k: &str, v: &str) -> Self {
        str_attribute(&mut self.0, 9, k, v);
        self
    }

    pub fn int(mut self, k: &str, v: i64) -> Self {
        int_attribute(&mut self.0, 9, k, v);
        self
    }

    pub fn build(self) -> Attributes {
        Attributes(self.0.into_boxed_slice())
    }
}

/// What opens a span: its ids, name (written from parts, joined by nothing), kind and times.
pub struct SpanHead<'a> {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub name: &'a [&'a str],
    pub kind: Kind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
}

/// Writes one `Span` at the end of a buffer, framed as field 2 of `ScopeSpans`: the head
/// first, then attributes and the rest in any order (protobuf readers take fields in any
/// order), and [`SpanWriter::end`] puts in the length.
pub struct SpanWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Where the body begins, after a two-byte length (spans are 128 B to 16 KiB; any
    /// other length is moved into place at the end).
    body: usize,
}

impl<'a> SpanWriter<'a> {
    pub fn begin(out: &'a mut Vec<u8>, h: &SpanHead<'_>) -> Self {
        let name_len: usize = h.name.iter().map(|p| p.len()).sum();
        out.reserve(768 + name_len);
        // The fixed fields go through one array and one copy: key and room for the length,
        // trace id, span id and parent.
        let mut head = [0u8; 42];
        head[0] = (2 << 3) | LEN;
        head[3..5].copy_from_slice(&[(1 << 3) | LEN, 16]);
        head[5..21].copy_from_slice(&h.trace_id.0);
        head[21..23].copy_from_slice(&[(2 << 3) | LEN, 8]);
        head[23..31].copy_from_slice(&h.span_id.0);
        let n = match &h.parent {
            Some(p) => {
                head[31..33].copy_from_slice(&[(4 << 3) | LEN, 8]);
                head[33..41].copy_from_slice(&p.0);
                41
            }
            None => 31,
        };
        out.extend_from_slice(&head[..n]);
        // The body starts after the key and the two bytes of room.
        let body = out.len() - n + 3;
        key(out, 5, LEN);
        varint(out, name_len as u64);
        for p in h.name {
            out.extend_from_slice(p.as_bytes());
        }
        // Kind, start and end times, and the W3C flags (sampled: an exported span was
        // recorded).
        let mut tail = [0u8; 26];
        tail[0] = (6 << 3) | VARINT;
        tail[1] = match h.kind {
            Kind::Internal => 1,
            Kind::Server => 2,
            Kind::Client => 3,
        };
        tail[2] = (7 << 3) | FIXED64;
        tail[3..11].copy_from_slice(&h.start_unix_nanos.to_le_bytes());
        tail[11] = (8 << 3) | FIXED64;
        tail[12..20].copy_from_slice(&h.end_unix_nanos.to_le_bytes());
        // Field 16, fixed32: a two-byte key.
        tail[20..26].copy_from_slice(&[(16 << 3 | FIXED32) | 0x80, 1, 1, 0, 0, 0]);
        out.extend_from_slice(&tail);
        Self { out, body }
    }

    /// Attributes encoded beforehand, copied in whole.
    pub fn attributes(&mut self, a: &Attributes) {
        self.out.extend_from_slice(&a.0);
    }

    /// The `tracestate` of a continued trace.
    pub fn trace_state(&mut self, ts: &str) {
        bytes_field(self.out, 3, ts.as_bytes());
    }

    pub fn str(&mut self, k: &str, v: &str) {
        str_attribute(self.out, 9, k, v);
    }

    pub fn int(&mut self, k: &str, v: i64) {
        int_attribute(self.out, 9, k, v);
    }

    pub fn value(&mut self, k: &str, v: &Value) {
        match v {
            Value::Int(i) => self.int(k, *i),
            Value::Bool(b) => attribute(self.out, 9, k, 2, |o| {
                key(o, 2, VARINT);
                o.push(u8::from(*b));
            }),
            other => self.str(k, other.as_str().unwrap_or("")),
        }
    }

    /// A link to the context a request came with when its trace was not continued.
    pub fn link(&mut self, l: &TraceParent) {
        // Link: trace_id 1, span_id 2, flags 6 (fixed32).
        key(self.out, 13, LEN);
        varint(self.out, (2 + 16 + 2 + 8 + 1 + 4) as u64);
        bytes_field(self.out, 1, &l.trace_id.0);
        bytes_field(self.out, 2, &l.parent_id.0);
        key(self.out, 6, FIXED32);
        self.out
            .extend_from_slice(&u32::from(l.flags).to_le_bytes());
    }

    /// Status `Error` (code 2) with `message`; a span without one is unset.
    pub fn error(&mut self, message: &str) {
        let body = 1 + varint_len(message.len() as u64) + message.len() + 2;
        key(self.out, 15, LEN);
        varint(self.out, body as u64);
        bytes_field(self.out, 2, message.as_bytes());
        key(self.out, 3, VARINT);
        self.out.push(2);
    }

    /// Puts the length in front of the body.
    pub fn end(self) {
        let len = self.out.len() - self.body;
        if (128..16_384).contains(&len) {
            self.out[self.body - 2] = (len as u8) | 0x80;
            self.out[self.body - 1] = (len >> 7) as u8;
        } else {
            let mut v = Vec::with_capacity(10);
            varint(&mut v, len as u64);
            self.out.splice(self.body - 2..self.body, v);
        }
    }
}

/// A span record, framed as [`SpanWriter`] frames it.
pub fn span(out: &mut Vec<u8>, s: &SpanRecord) {
    let mut w = SpanWriter::begin(
        out,
        &SpanHead {
            trace_id: s.trace_id,
            span_id: s.span_id,
            parent: s.parent,
            name: &[&s.name],
            kind: s.kind,
            start_unix_nanos: s.start_unix_nanos,
            end_unix_nanos: s.end_unix_nanos,
        },
    );
    if let Some(ts) = &s.trace_state {
        w.trace_state(ts);
    }
    for (k, v) in &s.attributes {
        w.value(k, v);
    }
    if let Some(l) = &s.link {
        w.link(l);
    }
    if let Some(m) = &s.error {
        w.error(m);
    }
    w.end();
}

/// The length of the framed span at the start of `b` (its key, length and body), or
/// `None` when `b` does not start with a whole one.
pub fn framed_len(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&((2 << 3) | LEN)) {
        return None;
    }
    let (mut len, mut shift, mut i) = (0usize, 0u32, 1usize);
    loop {
        let byte = *b.get(i)?;
        len |= usize::from(byte & 0x7f).checked_shl(shift)?;
        i += 1;
        if byte < 0x80 {
            break;
        }
        shift += 7;
        if shift > 35 {
            return None;
        }
    }
    let total = i.checked_add(len)?;
    (total <= b.len()).then_some(total)
}

/// The head of an `ExportTraceServiceRequest` whose spans (framed, as [`SpanWriter`]
/// writes them, `spans_len` bytes in all) follow it: one resource and one scope; lengths
/// are computed, not written and copied.
pub fn request_head(
    resource: &[(String, String)],
    scope_version: &str,
    spans_len: usize,
) -> Vec<u8> {
    let mut res = Vec::new();
    for (k, v) in resource {
        str_attribute(&mut res, 1, k, v);
    }
    let field = |len: usize| 1 + varint_len(len as u64) + len;
    // InstrumentationScope { name 1, version 2 }.
    let scope = field("membrane".len()) + field(scope_version.len());
    // ScopeSpans { scope 1, spans 2 (already framed) }.
    let scope_spans = field(scope) + spans_len;
    // ResourceSpans { resource 1, scope_spans 2 }.
    let resource_spans = field(res.len()) + field(scope_spans);
    let mut out = Vec::with_capacity(field(resource_spans) - spans_len);
    key(&mut out, 1, LEN);
    varint(&mut out, resource_spans as u64);
    bytes_field(&mut out, 1, &res);
    key(&mut out, 2, LEN);
    varint(&mut out, scope_spans as u64);
    key(&mut out, 1, LEN);
    varint(&mut out, scope as u64);
    bytes_field(&mut out, 1, b"membrane");
    bytes_field(&mut out, 2, scope_version.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{SpanId, TraceId, TraceParent};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message;

    fn request(resource: &[(String, String)], version: &str, spans: &[u8]) -> Vec<u8> {
        let mut out = request_head(resource, version, spans.len());
        out.extend_from_slice(spans);
        out
    }

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

    /// Attributes on either side of the one-byte-lengths shortcut decode alike.
    #[test]
    fn attribute_lengths_around_the_shortcut() {
        for kl in [1usize, 30, 121, 122, 200] {
            for vl in [0usize, 1, 60, 90, 91, 92, 121, 122, 130, 20_000] {
                let (k, v) = ("k".repeat(kl), "v".repeat(vl));
                let mut b = Vec::new();
                str_attribute(&mut b, 9, &k, &v);
                let mut body = &b[1..];
                let len = prost::encoding::decode_varint(&mut body).unwrap();
                assert_eq!(len as usize, body.len(), "{kl} {vl}");
                let kv = opentelemetry_proto::tonic::common::v1::KeyValue::decode(body).unwrap();
                assert_eq!(kv.key, k);
                assert_eq!(
                    kv.value.and_then(|a| a.value),
                    Some(any_value::Value::StringValue(v)),
                    "{kl} {vl}"
                );
            }
        }
    }

    /// Integer attributes on either side of the short form decode alike.
    #[test]
    fn int_attributes_around_the_short_form() {
        for (k, v) in [
            ("a", 0i64),
            ("http.response.status_code", 127),
            ("p", 128),
            ("server.port", 16_383),
            ("x", 16_384),
            ("y", -1),
            (&"k".repeat(101), 200),
        ] {
            let mut b = Vec::new();
            int_attribute(&mut b, 9, k, v);
            let mut body = &b[1..];
            let len = prost::encoding::decode_varint(&mut body).unwrap();
            assert_eq!(len as usize, body.len(), "{k} {v}");
            let kv = opentelemetry_proto::tonic::common::v1::KeyValue::decode(body).unwrap();
            assert_eq!(kv.key, k);
            assert_eq!(
                kv.value.and_then(|a| a.value),
                Some(any_value::Value::IntValue(v))
            );
        }
    }

    /// Attributes encoded beforehand decode as the span's, after those written one by one.
    #[test]
    fn encoded_attributes_are_the_spans() {
        let a = Attributes::builder()
            .str("membrane.route", "orders")
            .int("server.port", 8080)
            .build();
        let mut framed = Vec::new();
        let mut w = SpanWriter::begin(
            &mut framed,
            &SpanHead {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                parent: None,
                name: &["GET"],
                kind: Kind::Client,
                start_unix_nanos: 1,
                end_unix_nanos: 2,
            },
        );
        w.str("first", "1");
        w.attributes(&a);
        w.end();
        let req = ExportTraceServiceRequest::decode(request(&[], "v", &framed).as_slice()).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["first", "membrane.route", "server.port"]);
        assert_eq!((span.kind, span.parent_span_id.len()), (3, 0));
    }

    /// A span under 128 bytes and one over 16 KiB get their lengths moved into place.
    #[test]
    fn short_and_long_spans_are_framed() {
        for n in [0usize, 20_000, 3_000_000] {
            let s = SpanRecord {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                parent: None,
                trace_state: None,
                name: "x".repeat(n),
                kind: Kind::Internal,
                start_unix_nanos: 1,
                end_unix_nanos: 2,
                attributes: Vec::new(),
                error: None,
                link: None,
            };
            let mut framed = vec![7u8];
            span(&mut framed, &s);
            assert_eq!(framed_len(&framed[1..]), Some(framed.len() - 1), "{n}");
            let req = ExportTraceServiceRequest::decode(request(&[], "v", &framed[1..]).as_slice())
                .unwrap();
            assert_eq!(req.resource_spans[0].scope_spans[0].spans[0].name.len(), n);
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
        let resource = [("service.name".to_owned(), "membrane".to_owned())];
        let mut framed = Vec::new();
        span(&mut framed, &s);
        let one = framed.len();
        span(&mut framed, &s);
        assert_eq!(framed_len(&framed), Some(one));
        assert_eq!(framed_len(&framed[one..]), Some(one));
        assert_eq!(framed_len(&framed[..one - 1]), None);
        let bytes = request(&resource, "0.1.0", &framed);
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
