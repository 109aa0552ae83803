//! Claims held in memory.
//!
//! One process owns an SQLite file, so nothing but that process needs to see its claims: a claim
//! writes no row, and a claimed delivery keeps its place in the due index (claims read past the
//! live ones) until its outcome moves it on. Written claims were four b-tree writes per delivery
//! (the row, the due index twice, the index of live claims), each written again at the
//! checkpoint, and one more when the outcome cleared them. Leases, renewals, releases and the
//! per-node rules behave as PostgreSQL's written claims do; after a crash there is nothing to
//! release, since the claims went with the process.

use foldhash::{HashMap, HashSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tidings_core::UnixMillis;
use tidings_store::{StoreError, StoreResult};

/// The claims of this process, shared by the writer (claim, record) and the store's other
/// operations (release, renewal, pause, manual retry, the next due time).
#[derive(Clone, Default)]
pub struct Claims(Arc<Mutex<Table>>);

impl Claims {
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while the table is locked; a poisoned lock still holds a whole table.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What makes one process the only one claiming from a file: an exclusive lock (`flock`) on a file
/// beside the database, taken when the dispatcher starts and held until the store closes or the
/// process ends. A second `tidings serve` on the same file (a restart that overlaps the old
/// process's grace period, say) waits for it instead of claiming what the first one holds.
pub struct Claimer {
    path: PathBuf,
    lock: Mutex<Option<File>>,
}

impl Claimer {
    pub fn new(database: &std::path::Path) -> Self {
        let mut path = database.as_os_str().to_owned();
        path.push("-claims.lock");
        Self {
            path: path.into(),
            lock: Mutex::new(None),
        }
    }

    fn held(&self) -> MutexGuard<'_, Option<File>> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the lock, waiting as long as another process holds it.
    pub async fn take(&self) -> StoreResult<()> {
        let unavailable = |e: std::io::Error| {
            StoreError::Unavailable(format!("cannot lock `{}`: {e}", self.path.display()))
        };
        if self.held().is_some() {
            return Ok(());
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .map_err(unavailable)?;
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    if told {
                        tracing::info!(
                            "the other Tidings process stopped; delivering from this database"
                        );
                    }
                    *self.held() = Some(file);
                    return Ok(());
                }
                Err(TryLockError::WouldBlock) => {
                    if !told {
                        tracing::warn!(lock = %self.path.display(), "another Tidings process is delivering from this database; waiting for it to stop");
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(TryLockError::Error(e)) => return Err(unavailable(e)),
            }
        }
    }

    /// Lets another process claim.
    pub fn give_up(&self) {
        self.held().take();
    }
}

/// A claimed delivery.
#[derive(Debug)]
pub struct Held {
    pub id: String,
    pub webhook: String,
    pub node: String,
    /// The lease's end: from then on the delivery may be claimed again.
    pub until: UnixMillis,
}

/// Live claims by the delivery's rowid, with the rowid of each delivery id.
#[derive(Default)]
pub struct Table {
    held: HashMap<i64, Held>,
    rowids: HashMap<String, i64>,
    /// When leases that ran out and were never taken again were last dropped.
    swept_at: UnixMillis,
}

impl Table {
    /// Whether a claim whose lease has not run out holds the delivery at `rowid`.
    pub fn holds(&self, rowid: i64, now: UnixMillis) -> bool {
        self.held.get(&rowid).is_some_and(|held| held.until > now)
    }

    /// The lease's end of the claim on `rowid`, whether or not it has run out.
    pub fn lease_end(&self, rowid: i64) -> Option<UnixMillis> {
        self.held.get(&rowid).map(|held| held.until)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Takes a claim; one whose lease ran out on the same delivery is replaced. Returns what it
    /// replaced.
    pub fn take(&mut self, rowid: i64, held: Held) -> Option<Held> {
        let id = held.id.clone();
        let before = self.held.insert(rowid, held);
        if let Some(before) = &before
            && before.id != id
        {
            // The row was deleted and its rowid reused by a new delivery.
            self.rowids.remove(&before.id);
        }
        self.rowids.insert(id, rowid);
        before
    }

    /// Drops the claim on `rowid` (undoing a claim whose transaction failed).
    pub fn drop_claim(&mut self, rowid: i64) -> Option<Held> {
        let held = self.held.remove(&rowid)?;
        self.rowids.remove(&held.id);
        Some(held)
    }

    /// Puts back a claim dropped by a record whose transaction failed.
    pub fn restore(&mut self, rowid: i64, held: Held) {
        self.rowids.insert(held.id.clone(), rowid);
        self.held.insert(rowid, held);
    }

    /// The rowid of `id` if `node` holds it, whether or not its lease ran out (as a written claim
    /// stays its holder's until another node takes it).
    pub fn held_by(&self, id: &str, node: &str) -> Option<i64> {
        let rowid = *self.rowids.get(id)?;
        (self.held.get(&rowid)?.node == node).then_some(rowid)
    }

    /// Whether a claim holds `id`, whether or not its lease ran out (its holder may still
    /// record it).
    pub fn is_claimed(&self, id: &str) -> bool {
        self.rowids.contains_key(id)
    }

    /// Each webhook's live claims (leases not run out, less `node`'s settled ones), and how many
    /// of those other nodes hold.
    pub fn live(
        &self,
        webhooks: &[String],
        node: &str,
        settled: &[String],
        now: UnixMillis,
    ) -> Vec<(i64, i64)> {
        let place: HashMap<&str, usize> = webhooks
            .iter()
            .enumerate()
            .map(|(at, id)| (id.as_str(), at))
            .collect();
        let settled: HashSet<&str> = settled.iter().map(String::as_str).collect();
        let mut live = vec![(0, 0); webhooks.len()];
        for held in self.held.values() {
            if held.until <= now || settled.contains(held.id.as_str()) {
                continue;
            }
            if let Some(&at) = place.get(held.webhook.as_str()) {
                live[at].0 += 1;
                if held.node != node {
                    live[at].1 += 1;
                }
            }
        }
        live
    }

    /// The ids of a webhook's claimed deliveries, whether or not their leases ran out.
    pub fn of_webhook(&self, webhook: &str) -> Vec<String> {
        self.held
            .values()
            .filter(|held| held.webhook == webhook)
            .map(|held| held.id.clone())
            .collect()
    }

    /// Gives back `node`'s claims on `ids`; returns how many it held.
    pub fn release(&mut self, node: &str, ids: &[String]) -> usize {
        let mut released = 0;
        for id in ids {
            if let Some(rowid) = self.held_by(id, node) {
                self.drop_claim(rowid);
                released += 1;
            }
        }
        released
    }

    /// Moves the end of `node`'s leases on `ids` to `until`, never earlier.
    pub fn renew(&mut self, node: &str, ids: &[String], until: UnixMillis) {
        for id in ids {
            if let Some(rowid) = self.held_by(id, node)
                && let Some(held) = self.held.get_mut(&rowid)
            {
                held.until = held.until.max(until);
            }
        }
    }

    /// Gives back every claim; returns how many there were.
    pub fn clear(&mut self) -> usize {
        let count = self.held.len();
        self.held.clear();
        self.rowids.clear();
        count
    }

    /// Drops, once per `every` ms at most, claims whose lease ran out long enough ago that no
    /// claim took their delivery again: its row was deleted meanwhile (its webhook with it), or
    /// its attempt never ended.
    pub fn sweep(&mut self, now: UnixMillis, every: UnixMillis) {
        if now - self.swept_at < every {
            return;
        }
        self.swept_at = now;
        let rowids = &mut self.rowids;
        self.held.retain(|_, held| {
            let keep = held.until + every > now;
            if !keep {
                rowids.remove(&held.id);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(id: &str, webhook: &str, node: &str, until: UnixMillis) -> Held {
        Held {
            id: id.into(),
            webhook: webhook.into(),
            node: node.into(),
            until,
        }
    }

    #[test]
    fn a_reused_rowid_forgets_the_deleted_delivery() {
        let mut table = Table::default();
        table.take(7, held("dlv_a", "wh_1", "n", 100));
        let replaced = table.take(7, held("dlv_b", "wh_1", "n", 200));
        assert_eq!(replaced.map(|h| h.id), Some("dlv_a".into()));
        assert_eq!(table.held_by("dlv_a", "n"), None);
        assert_eq!(table.held_by("dlv_b", "n"), Some(7));
    }

    #[test]
    fn live_claims_leave_out_ended_leases_and_settled_ones() {
        let mut table = Table::default();
        table.take(1, held("dlv_1", "wh_1", "a", 100));
        table.take(2, held("dlv_2", "wh_1", "b", 100));
        table.take(3, held("dlv_3", "wh_1", "a", 10));
        table.take(4, held("dlv_4", "wh_1", "a", 100));
        table.take(5, held("dlv_5", "wh_2", "a", 100));
        let live = table.live(&["wh_1".into(), "wh_3".into()], "a", &["dlv_4".into()], 50);
        assert_eq!(live, vec![(2, 1), (0, 0)]);
    }

    #[test]
    fn release_and_renew_touch_only_the_holders_claims() {
        let mut table = Table::default();
        table.take(1, held("dlv_1", "wh_1", "a", 100));
        table.take(2, held("dlv_2", "wh_1", "b", 100));
        let ids = ["dlv_1".to_owned(), "dlv_2".to_owned()];
        table.renew("a", &ids, 500);
        table.renew("a", &ids, 50);
        assert_eq!(table.lease_end(1), Some(500));
        assert_eq!(table.lease_end(2), Some(100));
        assert_eq!(table.release("a", &ids), 1);
        assert!(!table.holds(1, 0));
        assert!(table.holds(2, 0));
    }

    #[test]
    fn a_sweep_drops_only_leases_long_over() {
        let mut table = Table::default();
        table.take(1, held("dlv_1", "wh_1", "a", 100));
        table.take(2, held("dlv_2", "wh_1", "a", 2_000));
        table.sweep(1_050, 900);
        assert_eq!(table.len(), 1);
        assert!(table.is_claimed("dlv_2"));
        assert!(!table.is_claimed("dlv_1"));
        // Not again before `every` has passed.
        table.sweep(1_100, 900);
        assert_eq!(table.len(), 1);
    }
}
