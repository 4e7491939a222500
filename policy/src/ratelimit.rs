//! Local token buckets, one per key (a peer identity, a claim, a client address), in a table
//! of bounded size.
//!
//! Each bucket holds up to `burst` tokens and refills at `requests` per `period`; a request
//! takes one token or is refused. Keys are stored as 64-bit hashes: two keys that collide
//! share a bucket (a shared limit, never a bypass). When a shard of the table is full, the
//! buckets that have refilled completely are dropped first (forgetting them changes
//! nothing), then the one refilled longest ago; the table never grows past its size.

use std::hash::{Hash, Hasher};
use std::sync::Mutex;

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub requests: u32,
    pub period_secs: u32,
    pub burst: u32,
}

/// What a check decided, with the numbers for the `RateLimit-*` and `Retry-After` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds until one token is there (0 when allowed).
    pub retry_after_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens in millionths, so refills of a fraction of a token are kept.
    micro: u64,
    at_nanos: u64,
}

pub struct Buckets {
    limit: Limit,
    /// Refill rate: millionths of a token per nanosecond, times 1e9 (millionths per second).
    micro_per_sec: u64,
    shards: [Mutex<rustc_hash::FxHashMap<u64, Bucket>>; SHARDS],
    per_shard: usize,
}

const MICRO: u64 = 1_000_000;

impl Buckets {
    /// `max_keys`: the most keys tracked at once (memory is about 32 bytes a key).
    pub fn new(limit: Limit, max_keys: usize) -> Self {
        let per_sec = u64::from(limit.requests) * MICRO / u64::from(limit.period_secs.max(1));
        Self {
            limit,
            micro_per_sec: per_sec.max(1),
            shards: std::array::from_fn(|_| Mutex::new(rustc_hash::FxHashMap::default())),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    pub fn limit(&self) -> Limit {
        self.limit
    }

    fn capacity(&self) -> u64 {
        u64::from(self.limit.burst.max(1)) * MICRO
    }

    fn refilled(&self, b: Bucket, now: u64) -> u64 {
        let elapsed = now.saturating_sub(b.at_nanos);
        let add = (u128::from(elapsed) * u128::from(self.micro_per_sec) / 1_000_000_000) as u64;
        b.micro.saturating_add(add).min(self.capacity())
    }

    /// Takes a token for `key` at `now_nanos` (any monotonic clock).
    pub fn check(&self, key: &str, now_nanos: u64) -> Verdict {
        let mut h = rustc_hash::FxHasher::default();
        key.hash(&mut h);
        let k = h.finish();
        let cap = self.capacity();
        let mut shard = self.shards[(k >> 58) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !shard.contains_key(&k) && shard.len() >= self.per_shard {
            shard.retain(|_, b| self.refilled(*b, now_nanos) < cap);
            if shard.len() >= self.per_shard
                && let Some((&oldest, _)) = shard.iter().min_by_key(|(_, b)| b.at_nanos)
            {
                shard.remove(&oldest);
            }
        }
        let b = shard.entry(k).or_insert(Bucket {
            micro: cap,
            at_nanos: now_nanos,
        });
        let tokens = self.refilled(*b, now_nanos);
        let allowed = tokens >= MICRO;
        let left = if allowed { tokens - MICRO } else { tokens };
        *b = Bucket {
            micro: left,
            at_nanos: now_nanos,
        };
        let secs_for = |micro: u64| micro.div_ceil(self.micro_per_sec);
        Verdict {
            allowed,
            limit: self.limit.burst.max(1),
            remaining: (left / MICRO) as u32,
            reset_secs: secs_for(cap - left),
            retry_after_secs: if allowed {
                0
            } else {
                secs_for(MICRO - left).max(1)
            },
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let b = Buckets::new(
            Limit {
                requests: 2,
                period_secs: 1,
                burst: 3,
            },
            100,
        );
        let t = 10 * SEC;
        let v: Vec<Verdict> = (0..4).map(|_| b.check("alice", t)).collect();
        assert_eq!(v.iter().filter(|v| v.allowed).count(), 3);
        assert_eq!(v[2].remaining, 0);
        assert!(!v[3].allowed);
        assert_eq!(v[3].retry_after_secs, 1);
        assert_eq!(v[3].limit, 3);
        // Half a second later one token (2/s) is back.
        assert!(b.check("alice", t + SEC / 2).allowed);
        assert!(!b.check("alice", t + SEC / 2).allowed);
        // Other keys have their own buckets.
        assert!(b.check("bob", t).allowed);
        // After 2 s the bucket is full again.
        let v = b.check("alice", t + 3 * SEC);
        assert!(v.allowed);
        assert_eq!(v.remaining, 2);
    }

    #[test]
    fn the_key_table_stays_bounded() {
        let b = Buckets::new(
            Limit {
                requests: 1,
                period_secs: 60,
                burst: 1,
            },
            64,
        );
        for i in 0..10_000u64 {
            b.check(&format!("client-{i}"), i);
        }
        assert!(b.len() <= 64, "{} keys", b.len());
    }
}
