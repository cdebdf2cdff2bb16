//! Short-lived read caches for the hot path: API keys, tenants, agents and versions are
//! read on every invocation but change rarely.
//!
//! Entries live for the cache's TTL ([`TTL`] for most). A change made through this
//! process removes the entry at once (revoking a key clears the key cache); a change
//! made through another process sharing the database is seen within the TTL. That is
//! the documented bound for a key revocation or an agent pause to reach every node.
//!
//! Each cache is a `moka` cache bounded by bytes: an entry weighs its key and value as
//! JSON plus a fixed overhead, so the count is bounded too, and the least used entries
//! go first when it is full.

use std::hash::Hash;
use std::time::Duration;

use serde::Serialize;

/// How long a cached row is trusted.
pub const TTL: Duration = Duration::from_secs(1);

/// Most bytes one cache holds.
pub const MAX_BYTES: u64 = 32 << 20;

/// What an entry weighs besides its key and value (the map's own bookkeeping), which
/// also bounds the count: at most `MAX_BYTES / ENTRY_OVERHEAD` entries.
const ENTRY_OVERHEAD: u32 = 256;

/// A map whose entries expire, bounded in bytes.
pub struct TtlCache<K, V> {
    entries: moka::sync::Cache<K, V>,
}

impl<K, V> std::fmt::Debug for TtlCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache").finish_non_exhaustive()
    }
}

impl<K, V> TtlCache<K, V>
where
    K: Eq + Hash + Serialize + Send + Sync + 'static,
    V: Clone + Serialize + Send + Sync + 'static,
{
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self::bounded(ttl, MAX_BYTES)
    }

    /// An empty cache whose entries live `ttl`, holding at most `max_bytes`.
    pub fn bounded(ttl: Duration, max_bytes: u64) -> Self {
        TtlCache {
            entries: moka::sync::Cache::builder()
                .time_to_live(ttl)
                .max_capacity(max_bytes)
                .weigher(|key: &K, value: &V| {
                    ENTRY_OVERHEAD
                        .saturating_add(json_len(key))
                        .saturating_add(json_len(value))
                })
                .build(),
        }
    }

    /// The value, if cached within the TTL.
    pub fn get(&self, key: &K) -> Option<V> {
        self.entries.get(key)
    }

    /// Caches a value.
    pub fn insert(&self, key: K, value: V) {
        self.entries.insert(key, value);
    }

    /// Forgets one entry.
    pub fn remove(&self, key: &K) {
        self.entries.invalidate(key);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Entries and their weight now, after pending evictions ran (for tests and stats).
    pub fn size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

fn json_len(value: &impl Serialize) -> u32 {
    serde_json::to_vec(value).map_or(u32::MAX, |v| u32::try_from(v.len()).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = TtlCache::new(Duration::from_millis(1));
        cache.insert("k".to_string(), 1);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.get(&"k".to_string()), None);
        let cache = TtlCache::new(Duration::from_secs(60));
        cache.insert("k".to_string(), 1);
        assert_eq!(cache.get(&"k".to_string()), Some(1));
        cache.remove(&"k".to_string());
        assert_eq!(cache.get(&"k".to_string()), None);
    }

    #[test]
    fn the_cache_holds_at_most_its_bytes() {
        let cache = TtlCache::bounded(Duration::from_secs(60), 64 << 10);
        let value = "x".repeat(1000);
        for i in 0..1000 {
            cache.insert(format!("key-{i}"), value.clone());
        }
        let (count, bytes) = cache.size();
        assert!(bytes <= 64 << 10, "{bytes} bytes");
        // Each entry weighs about 1.3 KB: a few dozen fit, not a thousand.
        assert!((1..=60).contains(&count), "{count} entries");
        // A value larger than the whole cache is not kept.
        cache.insert("huge".into(), "y".repeat(100 << 10));
        cache.size();
        assert_eq!(cache.get(&"huge".to_string()), None);
    }
}
