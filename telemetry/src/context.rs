//! W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` header,
//! `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, read and written without
//! allocating. `tracestate` is passed on as it came when a trace is continued (it is
//! vendors' data; checked only for its length, 512 bytes as the spec lets a proxy cut it).

/// A trace id: 16 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span id: 8 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// The `sampled` bit of the trace flags.
pub const SAMPLED: u8 = 0x01;

/// Longest `tracestate` passed on; a longer one is dropped.
pub const MAX_TRACESTATE: usize = 512;

impl TraceId {
    /// A random, non-zero trace id (fastrand's per-thread generator: ids need to be unique,
    /// not secret).
    pub fn random() -> Self {
        loop {
            let v = fastrand::u128(..).to_be_bytes();
            if v != [0; 16] {
                return TraceId(v);
            }
        }
    }

    /// The low 8 bytes as a number, which the ratio sampler compares (random in W3C's
    /// version 00 ids; the same decision on every gateway a trace crosses).
    pub fn low64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[8..]);
        u64::from_be_bytes(b)
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl SpanId {
    pub fn random() -> Self {
        loop {
            let v = fastrand::u64(..).to_be_bytes();
            if v != [0; 8] {
                return SpanId(v);
            }
        }
    }

    /// Two fresh ids from one random number (a request's server and client spans).
    pub fn pair() -> (SpanId, SpanId) {
        let r = fastrand::u128(..).to_be_bytes();
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        a.copy_from_slice(&r[..8]);
        b.copy_from_slice(&r[8..]);
        // Zero is not a valid id; one in 2^64.
        a[7] |= u8::from(a == [0; 8]);
        b[7] |= u8::from(b == [0; 8]);
        (SpanId(a), SpanId(b))
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    /// The id of a request's `n`th upstream attempt, when this is its first's: the first
    /// keeps this id, each later one a different one derived from it (no random number
    /// and nothing kept per attempt; a retry re-derives it from the header it sends).
    pub fn nth(self, n: u32) -> SpanId {
        let v = u64::from_be_bytes(self.0) ^ u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        SpanId((v | u64::from(v == 0)).to_be_bytes())
    }
}

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: u8,
}

impl TraceParent {
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// Reads a header value. `None` for anything the spec says to ignore: a version other
    /// than 00 written as 00 is read (future versions may append fields after a dash), a
    /// version ff, uppercase hex, all-zero ids and a wrong length are not.
    pub fn parse(v: &[u8]) -> Option<Self> {
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let version = hex_byte(&v[0..2])?;
        if version == 0xff || (version == 0 && v.len() != 55) {
            return None;
        }
        if version != 0 && v.len() > 55 && v[55] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&v[3 + 2 * i..5 + 2 * i])?;
        }
        let mut parent_id = [0u8; 8];
        for (i, b) in parent_id.iter_mut().enumerate() {
            *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&v[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            flags,
        })
    }

    /// The header value, version 00, 55 bytes.
    pub fn encode(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[0] = b'0';
        out[1] = b'0';
        let (hi, lo) = self.trace_id.0.split_at(8);
        out[3..19].copy_from_slice(&hex8(hi));
        out[19..35].copy_from_slice(&hex8(lo));
        out[36..52].copy_from_slice(&hex8(&self.parent_id.0));
        put_hex(&mut out[53..55], &[self.flags & SAMPLED]);
        out
    }
}

/// Makes the `traceparent` of a request's first upstream attempt that of its `n`th (its
/// parent id the `n`th attempt's span, as [`SpanId::nth`] derives it).
pub fn for_attempt(first: &mut [u8; 55], n: u32) {
    if let Some(p) = TraceParent::parse(first) {
        put_hex(&mut first[36..52], &p.parent_id.nth(n).0);
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    Some(hex_digit(two[0])? << 4 | hex_digit(two[1])?)
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Both hex digits of every byte: one load per byte instead of two shifts and two loads.
static PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    t
};

/// Eight bytes as sixteen lowercase hex digits, all at once: each nibble is spread into a
/// byte of its own (in order), then turned into its digit with a per-byte add (a request's
/// `traceparent` is written on every request that tracing is configured for).
fn hex8(bytes: &[u8]) -> [u8; 16] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    let mut x = u128::from(u64::from_be_bytes(b));
    x = (x | (x << 32)) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f_0f0f_0f0f_0f0f_0f0f;
    const ONES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    // 1 in each byte whose nibble is 10 or more (a letter).
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    (x + b'0' as u128 * ONES + letters * (b'a' - b'0' - 10) as u128).to_be_bytes()
}

fn put_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(*b)]);
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for eight in bytes.chunks(8) {
        if eight.len() == 8 {
            out.push_str(std::str::from_utf8(&hex8(eight)).unwrap_or(""));
        } else {
            for b in eight {
                out.push(char::from(DIGITS[usize::from(b >> 4)]));
                out.push(char::from(DIGITS[usize::from(b & 0xf)]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_and_writes_the_spec_example() {
        let p = TraceParent::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(p.trace_id.hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.parent_id.hex(), "00f067aa0ba902b7");
        assert!(p.sampled());
        assert_eq!(&p.encode()[..], GOOD.as_bytes());
    }

    #[test]
    fn refuses_what_the_spec_says_to_ignore() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
        }
        // A later version may carry more fields; the first four are read.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        let p = TraceParent::parse(later.as_bytes()).unwrap();
        assert!(!p.sampled());
    }

    #[test]
    fn hex_of_eight_bytes_at_once_is_hex() {
        for v in [
            0u64,
            1,
            0x0123_4567_89ab_cdef,
            u64::MAX,
            0xa0b1_c2d3_e4f5_0617,
        ] {
            assert_eq!(
                std::str::from_utf8(&hex8(&v.to_be_bytes())).unwrap(),
                format!("{v:016x}")
            );
        }
        let id = TraceId([0xfe; 16]);
        assert_eq!(id.hex(), "fe".repeat(16));
    }

    #[test]
    fn attempts_have_their_own_span_ids_in_their_headers() {
        let first = TraceParent::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(first.parent_id.nth(0), first.parent_id);
        let ids: std::collections::HashSet<SpanId> =
            (0..10).map(|n| first.parent_id.nth(n)).collect();
        assert_eq!(ids.len(), 10);
        let mut h = first.encode();
        for_attempt(&mut h, 3);
        let third = TraceParent::parse(&h).unwrap();
        assert_eq!(third.parent_id, first.parent_id.nth(3));
        assert_eq!((third.trace_id, third.flags), (first.trace_id, first.flags));
    }

    #[test]
    fn random_ids_are_not_zero_and_differ() {
        let (a, b) = (TraceId::random(), TraceId::random());
        assert_ne!(a, b);
        assert_ne!(a.0, [0; 16]);
        assert_ne!(SpanId::random().0, [0; 8]);
        let (a, b) = SpanId::pair();
        assert_ne!(a, b);
        assert!(a.0 != [0; 8] && b.0 != [0; 8]);
    }
}
