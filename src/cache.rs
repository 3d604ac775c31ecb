//! A least-recently-used map bounded in bytes, for previews and decoded
//! sources.
//!
//! Values are shared (`Arc`), so a hit hands out the cached image without
//! copying it, and an evicted image stays alive for whoever still holds it.
//! Not thread-safe by itself: the engine keeps each cache behind a mutex
//! and holds it only to look up or insert, never while rendering.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

/// Hit, miss and eviction counts and the bytes held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups that found their key.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries dropped to make room.
    pub evictions: u64,
    /// Values not kept because each alone is larger than the bound (a
    /// full-scale 8K preview in a small cache): why misses can climb with
    /// nothing held.
    pub too_large: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Entries held now.
    pub entries: usize,
    /// The bound.
    pub capacity: u64,
}

/// LRU map whose values' sizes sum to at most `capacity` bytes.
pub struct ByteLru<K, V> {
    map: HashMap<K, (Arc<V>, u64, u64)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    stats: CacheStats,
}

impl<K: Clone + Eq + Hash, V> ByteLru<K, V> {
    /// An empty cache holding at most `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        ByteLru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            stats: CacheStats { capacity, ..Default::default() },
        }
    }

    fn touch(&mut self, key: &K) {
        self.tick += 1;
        if let Some(entry) = self.map.get_mut(key) {
            self.order.remove(&entry.2);
            entry.2 = self.tick;
            self.order.insert(self.tick, key.clone());
        }
    }

    /// The value for `key`, marking it most recently used; counts a hit or a miss.
    pub fn get(&mut self, key: &K) -> Option<Arc<V>> {
        match self.map.get(key).map(|e| e.0.clone()) {
            Some(v) => {
                self.stats.hits += 1;
                self.touch(key);
                Some(v)
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// The value for `key`, marking it most recently used, without
    /// counting a hit or a miss (see [`ByteLru::count`]).
    pub fn peek(&mut self, key: &K) -> Option<Arc<V>> {
        let v = self.map.get(key).map(|e| e.0.clone());
        if v.is_some() {
            self.touch(key);
        }
        v
    }

    /// Counts one lookup's outcome, for callers that use [`ByteLru::peek`].
    pub fn count(&mut self, hit: bool) {
        if hit {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
    }

    /// Whether `key` is held, without counting or reordering.
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Inserts `value` of `bytes`, evicting least-recently-used entries
    /// until it fits. A value larger than the whole capacity is not kept.
    pub fn insert(&mut self, key: K, value: Arc<V>, bytes: u64) {
        if let Some((_, old, tick)) = self.map.remove(&key) {
            self.order.remove(&tick);
            self.stats.bytes -= old;
        }
        if bytes > self.stats.capacity {
            self.stats.too_large += 1;
            self.stats.entries = self.map.len();
            return;
        }
        while self.stats.bytes + bytes > self.stats.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some((_, b, _)) = self.map.remove(&oldest) {
                self.stats.bytes -= b;
                self.stats.evictions += 1;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, (value, bytes, self.tick));
        self.stats.bytes += bytes;
        self.stats.entries = self.map.len();
    }

    /// Counters and size.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_bytes() {
        let mut c = ByteLru::new(30);
        for k in ["a", "b", "c"] {
            c.insert(k, Arc::new(k), 10);
        }
        assert!(c.get(&"a").is_some()); // b is now the oldest
        c.insert("d", Arc::new("d"), 10);
        assert!(!c.contains(&"b") && c.contains(&"a") && c.contains(&"c") && c.contains(&"d"));
        c.insert("big", Arc::new("big"), 25);
        assert!(c.stats().bytes <= 30);
        assert!(c.contains(&"big") && !c.contains(&"a"));
        c.insert("huge", Arc::new("huge"), 31);
        assert!(!c.contains(&"huge"));
        let s = c.stats();
        assert_eq!((s.hits, s.evictions, s.too_large), (1, 4, 1)); // b, then c, a and d for "big"
        assert!(c.get(&"zzz").is_none());
        assert_eq!(c.stats().misses, 1);
    }
}
