//! Values cached for a short time, for reads the hot path repeats (API keys, workspaces with their
//! webhooks, custom event types) and that other nodes may change.

use std::collections::HashMap;
use std::sync::{RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// A value and when it was loaded.
#[derive(Clone)]
pub struct Fresh<T> {
    loaded: Instant,
    value: T,
}

impl<T> Fresh<T> {
    pub fn new(value: T) -> Self {
        Self {
            loaded: Instant::now(),
            value,
        }
    }

    /// The value, if it was loaded less than `ttl` ago.
    pub fn get(&self, ttl: Duration) -> Option<&T> {
        (self.loaded.elapsed() < ttl).then_some(&self.value)
    }
}

/// Above this many entries, inserting one first drops those that are out of date.
const PRUNE_ABOVE: usize = 10_000;

/// Values by key, each used for `ttl` after it was loaded, then loaded again by the caller.
pub struct FreshMap<V> {
    ttl: Duration,
    entries: RwLock<HashMap<String, Fresh<V>>>,
}

impl<V: Clone> FreshMap<V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::default(),
        }
    }

    /// The value under `key`, if it was loaded less than the map's `ttl` ago.
    pub fn get(&self, key: &str) -> Option<V> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .and_then(|entry| entry.get(self.ttl))
            .cloned()
    }

    pub fn insert(&self, key: String, value: V) {
        let mut entries = self.write();
        if entries.len() >= PRUNE_ABOVE {
            let ttl = self.ttl;
            entries.retain(|_, entry| entry.get(ttl).is_some());
        }
        entries.insert(key, Fresh::new(value));
    }

    pub fn remove(&self, key: &str) {
        self.write().remove(key);
    }

    /// Forgets every entry whose value, however old, `keep` refuses.
    pub fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        self.write().retain(|_, entry| keep(&entry.value));
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Fresh<V>>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }
}
