//! A bounded cache of verified tokens, so that a token seen again costs a hash lookup, not a
//! signature check. Entries are keyed by a hash of the token but hold the token itself, which
//! is compared on every hit (a hash collision can never make a forged token pass). An entry
//! expires no later than its token's `exp` (or after `max_age` for tokens without one), and
//! the cache is cleared whenever the provider's key set changes, so a removed key stops
//! vouching for cached tokens at once.

use super::verify::Claims;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

pub struct TokenCache {
    shards: [Mutex<rustc_hash::FxHashMap<u64, Entry>>; SHARDS],
    per_shard: usize,
    max_age: u64,
}

struct Entry {
    token: Box<str>,
    claims: Arc<Claims>,
    /// Unix seconds after which the entry is not used.
    until: u64,
}

impl TokenCache {
    /// Holds at most about `capacity` tokens; entries live at most `max_age` seconds.
    pub fn new(capacity: usize, max_age: u64) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(rustc_hash::FxHashMap::default())),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            max_age,
        }
    }

    fn key(token: &str) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        token.hash(&mut h);
        h.finish()
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, rustc_hash::FxHashMap<u64, Entry>> {
        self.shards[(key >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The claims of a token verified before and still valid at `now`.
    pub fn get(&self, token: &str, now: u64) -> Option<Arc<Claims>> {
        let key = Self::key(token);
        let shard = self.shard(key);
        let e = shard.get(&key)?;
        (now <= e.until && &*e.token == token).then(|| e.claims.clone())
    }

    /// Remembers a verified token. `leeway` is the provider's: an entry is not used past the
    /// moment the token itself would be refused.
    pub fn insert(&self, token: &str, claims: Arc<Claims>, now: u64, leeway: u64) {
        let until = match claims.exp {
            Some(exp) => exp
                .saturating_add(leeway)
                .min(now.saturating_add(self.max_age)),
            None => now.saturating_add(self.max_age),
        };
        let key = Self::key(token);
        let mut shard = self.shard(key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| e.until >= now);
            if shard.len() >= self.per_shard {
                // Still full of live entries: drop one (the map's order is arbitrary).
                if let Some(&victim) = shard.keys().next() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                token: token.into(),
                claims,
                until,
            },
        );
    }

    pub fn clear(&self) {
        for s in &self.shards {
            s.lock().unwrap_or_else(|e| e.into_inner()).clear();
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
