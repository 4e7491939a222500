//! Field-level pieces of HTTP/1.1 shared by both sides: writing a field line, reading
//! Content-Length and the final transfer coding.

/// Writes one `name: value` header line.
pub fn write_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether a Transfer-Encoding value's final coding is chunked. Shared by the server and
/// the client.
pub fn ends_chunked(raw: &[u8]) -> bool {
    let last = raw.rsplit(|&b| b == b',').next().unwrap_or(&[]);
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// A Content-Length value: digits only (no sign, no spaces), at most 19 of them so the sum
/// cannot overflow. Shared by the server and the client.
#[inline]
pub fn content_length(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 19 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(raw.iter().fold(0u64, |n, d| n * 10 + (d - b'0') as u64))
}

/// Where one header field sits in a head's bytes: its name and its value, as offsets and
/// lengths (the head is kept, so the field is never copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpan {
    pub name: usize,
    pub name_len: usize,
    pub value: usize,
    pub value_len: usize,
}

impl FieldSpan {
    /// The span of `name: value`, both borrowed from the head starting at address `base`.
    pub fn within(base: usize, name: &[u8], value: &[u8]) -> Self {
        Self {
            name: name.as_ptr() as usize - base,
            name_len: name.len(),
            value: value.as_ptr() as usize - base,
            value_len: value.len(),
        }
    }

    pub fn name<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[self.name..self.name + self.name_len]
    }

    pub fn value<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[self.value..self.value + self.value_len]
    }
}
