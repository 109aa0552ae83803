//! Waking every node's dispatcher when work becomes due: a write that makes deliveries due wakes
//! this node's dispatcher and, after its commit, has a notification sent on one channel to every
//! node listening; each node's listener task turns other nodes' notifications into a local wake-up.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use crate::errors::TxError;
use crate::held::Held;
use crate::quiet::Quiet;

/// The channel every node listens on.
pub const CHANNEL: &str = "tidings_work";

/// The first pause before connecting again after the listening connection was lost; it doubles up
/// to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The least time between two notifications: requests made meanwhile fold into one. Each
/// notification costs a statement here and a wake-up of every listening connection; single
/// publishes at 1,000/s sent one per two publishes. Only other nodes wait for it: this node's
/// dispatcher is woken directly.
const ANNOUNCE_GAP: Duration = Duration::from_millis(5);

/// Tells the other nodes that work may be due, after the commit that made it due. Not from inside
/// that transaction: a transaction that notifies holds a database-wide lock from its commit until
/// its WAL is flushed, which would serialize every publish. Requests that arrive while one
/// notification is on its way, or within `ANNOUNCE_GAP` after it, fold into the next one, sent at
/// the end of that gap. The payload names the sending store (`me`), so its own listener can tell it
/// apart.
pub async fn announce(pool: PgPool, held: Held, wanted: Arc<Notify>, me: Arc<str>) {
    loop {
        wanted.notified().await;
        let sent = held.run(&pool, async |conn| {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&*me)
                .execute(conn)
                .await
                .map_err(TxError::from)
        });
        if let Err(error) = sent.await.map_err(tidings_store::StoreError::from) {
            // Other nodes still find the work by polling; the next request tries again.
            tracing::warn!(%error, "telling other nodes about due work failed");
            tokio::time::sleep(FIRST_BACKOFF).await;
        }
        tokio::time::sleep(ANNOUNCE_GAP).await;
    }
}

/// Listens for work notifications until the task is aborted, reconnecting with backoff whenever
/// the connection is lost (PostgreSQL restarted). Notifications sent while disconnected are lost,
/// so the dispatcher is woken after every reconnection to look for due work itself. Notifications
/// from other stores (and losing the connection) also end what empty claims taught (`quiet`): this
/// store's own writes already did.
pub async fn listen(pool: PgPool, work: Arc<Notify>, quiet: Arc<Quiet>, me: Arc<str>) {
    let mut backoff = FIRST_BACKOFF;
    let mut lost = false;
    loop {
        match subscribe(&pool).await {
            Ok(mut listener) => {
                if lost {
                    tracing::info!("listening for due work from other nodes again");
                }
                quiet.changed();
                work.notify_one();
                backoff = FIRST_BACKOFF;
                let error = loop {
                    match listener.try_recv().await {
                        // This store's own notifications come back too; its writes woke its
                        // dispatcher already, and a second wake-up would be a claim for nothing.
                        Ok(Some(notification)) => {
                            if notification.payload() != &*me {
                                quiet.changed();
                                work.notify_one();
                            }
                        }
                        // The connection was lost and the listener has already reconnected.
                        Ok(None) => {
                            tracing::warn!(
                                "the connection listening for due work was lost and made again"
                            );
                            quiet.changed();
                            work.notify_one();
                        }
                        Err(error) => break error,
                    }
                };
                tracing::error!(%error, "lost the connection listening for due work from other nodes; reconnecting");
            }
            Err(error) => {
                tracing::error!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot listen for due work from other nodes; retrying");
            }
        }
        lost = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
