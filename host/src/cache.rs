//! Short-lived read caches for the hot path: API keys and agents are read on every
//! invocation but change rarely.
//!
//! Entries live for [`TTL`]. A change made through this process removes the entry at
//! once (revoking a key clears the key cache); a change made through another process
//! sharing the database is seen within [`TTL`]. That is the documented bound for a key
//! revocation or an agent pause to reach every node.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a cached row is trusted.
pub const TTL: Duration = Duration::from_secs(1);

/// Most entries per cache; past it the cache starts over.
const MAX_ENTRIES: usize = 10_000;

/// A map whose entries expire.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value, if cached within the TTL.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().expect("cache lock");
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    /// Caches a value.
    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// Forgets one entry.
    pub fn remove(&self, key: &K) {
        self.entries.lock().expect("cache lock").remove(key);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.entries.lock().expect("cache lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = TtlCache::new(Duration::from_millis(0));
        cache.insert("k", 1);
        assert_eq!(cache.get(&"k"), None);
        let cache = TtlCache::new(Duration::from_secs(60));
        cache.insert("k", 1);
        assert_eq!(cache.get(&"k"), Some(1));
        cache.remove(&"k");
        assert_eq!(cache.get(&"k"), None);
    }
}
