//! Several real `tidings serve` processes sharing one PostgreSQL database: deliveries are claimed
//! so each goes out once, per-webhook limits hold across nodes, a killed node's deliveries are
//! taken over once its claims run out, operations sent to two nodes at once act once, and a
//! database restart costs 503s, never an accepted event; what a node caches follows changes made
//! through another.

#[path = "../it/helpers.rs"]
mod helpers;

mod api;
mod endpoint;
mod process;
mod sockets;

mod caches;
mod outage;
mod sharing;
mod takeover;

use std::fmt::Display;
use std::time::{Duration, Instant};

/// A point in time a test polls against, instead of sleeping for a guessed while.
pub struct Deadline {
    at: Instant,
    timeout: Duration,
    what: &'static str,
}

impl Deadline {
    pub fn after(timeout: Duration, what: &'static str) -> Self {
        Self {
            at: Instant::now() + timeout,
            timeout,
            what,
        }
    }

    /// Panics describing `state` once the deadline has passed; otherwise waits a little.
    pub async fn tick(&self, state: impl Display) {
        assert!(
            Instant::now() < self.at,
            "{} did not happen within {:?}: {state}",
            self.what,
            self.timeout
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}
