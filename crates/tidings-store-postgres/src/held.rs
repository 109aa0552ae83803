//! A pooled connection that one hot path (a publishing runner, the claim, the record, the
//! announcer) keeps between its uses. sqlx pings a connection every time it goes back to the pool,
//! and pinged it again when handing it out: two round trips around every statement or transaction,
//! which on a busy machine cost as much as the statement. A kept connection goes back to the pool
//! only when an error may have broken it, and is pinged before use only when it sat idle long
//! enough for the database to have restarted meanwhile, as the pool's own idle connections are.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::{Mutex, MutexGuard};

use tidings_store::{StoreError, StoreResult};

use crate::errors::{TxError, TxResult};

/// A connection idle this long is pinged before it is used again.
pub const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// A kept connection goes back to the pool this long after it was taken from it, so the pool's
/// lifetime rules still apply to it.
const RETURN_AFTER: Duration = Duration::from_secs(10 * 60);

struct Kept {
    conn: PoolConnection<Postgres>,
    idle_since: Instant,
    taken_at: Instant,
}

/// Slots for kept connections. Unless `keep`, each use takes a connection from the pool and gives
/// it back, as without them: a pool too small to set connections aside for the hot paths lends
/// them instead.
pub struct Held {
    slots: Vec<Mutex<Option<Kept>>>,
    keep: AtomicBool,
    /// Whether a use finding every slot busy waits for one (a path whose uses run one at a time)
    /// or takes a pool connection (one many callers share).
    wait_for_slot: bool,
}

/// A slot's connection while one use holds it (or, with every slot busy, a pool connection).
/// Dropped before its use ends (the use was cancelled), the connection goes back to the pool, which
/// checks it.
pub struct Lease<'a> {
    slot: Option<MutexGuard<'a, Option<Kept>>>,
    conn: PoolConnection<Postgres>,
    taken_at: Instant,
    keep: &'a AtomicBool,
}

impl Held {
    /// One slot: its uses run one at a time, each waiting for the one before.
    pub fn new(keep: bool) -> Self {
        Self {
            slots: vec![Mutex::new(None)],
            keep: AtomicBool::new(keep),
            wait_for_slot: true,
        }
    }

    /// Slots shared by many callers: a use finding them all busy takes a connection from the pool
    /// rather than wait (behind a use that may itself wait a whole acquire timeout).
    pub fn shared(slots: usize, keep: bool) -> Self {
        Self {
            slots: (0..slots.max(1)).map(|_| Mutex::new(None)).collect(),
            keep: AtomicBool::new(keep),
            wait_for_slot: false,
        }
    }

    /// A free slot's connection (checked first if it sat idle), or one from the pool.
    async fn lease(&self, pool: &PgPool) -> Result<Lease<'_>, sqlx::Error> {
        let free = self.slots.iter().find_map(|slot| slot.try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None if self.wait_for_slot => self.slots[0].lock().await,
            None => {
                return Ok(Lease {
                    slot: None,
                    conn: pool.acquire().await?,
                    taken_at: Instant::now(),
                    keep: &self.keep,
                });
            }
        };
        if let Some(kept) = slot.take() {
            let mut conn = kept.conn;
            if kept.idle_since.elapsed() < CHECK_IDLE_AFTER || conn.ping().await.is_ok() {
                return Ok(Lease {
                    slot: Some(slot),
                    conn,
                    taken_at: kept.taken_at,
                    keep: &self.keep,
                });
            }
            // Back to the pool, whose own check closes it.
            drop(conn);
        }
        let conn = pool.acquire().await?;
        Ok(Lease {
            slot: Some(slot),
            conn,
            taken_at: Instant::now(),
            keep: &self.keep,
        })
    }

    /// Runs `work` (a transaction, or a statement) on a kept connection, which is kept for the next
    /// use unless the work failed in the driver or the database (it may be broken; the pool checks
    /// it).
    pub async fn run<T>(
        &self,
        pool: &PgPool,
        work: impl AsyncFnOnce(&mut PgConnection) -> TxResult<T>,
    ) -> TxResult<T> {
        let mut conn = self.lease(pool).await?;
        let result = work(&mut conn).await;
        conn.end(!matches!(result, Err(TxError::Sql(_))));
        result
    }

    /// Runs a read on a kept connection, which is kept unless the read failed other than by
    /// finding nothing.
    pub async fn read<T>(
        &self,
        pool: &PgPool,
        work: impl AsyncFnOnce(&mut PgConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.lease(pool).await.map_err(crate::map_err)?;
        let result = work(&mut conn).await;
        conn.end(matches!(result, Ok(_) | Err(StoreError::NotFound)));
        result
    }

    /// Gives the kept connections back to the pool and keeps none from now on: the pool waits for
    /// every connection when it closes. Waits for uses in progress first.
    pub async fn give_back(&self) {
        self.keep.store(false, Ordering::Relaxed);
        for slot in &self.slots {
            slot.lock().await.take();
        }
    }
}

impl Lease<'_> {
    fn end(self, sound: bool) {
        let keep = self.keep.load(Ordering::Relaxed) && sound;
        if let Some(mut slot) = self.slot
            && keep
            && self.taken_at.elapsed() < RETURN_AFTER
        {
            *slot = Some(Kept {
                conn: self.conn,
                idle_since: Instant::now(),
                taken_at: self.taken_at,
            });
        }
    }
}

impl Deref for Lease<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
