//! Values cached for a short time, for reads the hot path repeats (webhooks per workspace, custom
//! event types) and that other nodes may change.

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

    /// The value, however old.
    pub fn peek(&self) -> &T {
        &self.value
    }
}
