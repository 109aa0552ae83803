//! The PostgreSQL store: several nodes share one database.
//!
//! Every call is its own short transaction on a pooled connection. What differs from the embedded
//! SQLite store is what sharing needs: claims lock due deliveries with `SKIP LOCKED` and serialize
//! per webhook on a gate row (so concurrency and rate limits hold across nodes), outcomes apply only
//! where the recording node still holds the claim, nothing releases another node's claims (they run
//! out by their lease), and writes that make work due wake every node through `LISTEN`/`NOTIFY`.

mod catalog;
mod dispatch;
mod errors;
mod events;
mod gather;
mod held;
mod ops;
mod quiet;
mod reads;
mod record;
mod tenants;
mod wake;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use tidings_core::catalog::EventTypeDef;
use tidings_core::{UnixMillis, now_millis};
use tidings_store::*;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::held::Held;
use crate::quiet::Quiet;
use tidings_store_rows as rows;

pub(crate) use errors::map_err;

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Most connections this node opens for storage (one more is kept for listening).
    pub max_connections: u32,
    /// Longest any one statement may run.
    pub statement_timeout: Duration,
    /// Longest a call waits for a free connection; short, so the API answers 503 quickly while the
    /// database is down.
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redacted(&self.url))
            .field("max_connections", &self.max_connections)
            .field("statement_timeout", &self.statement_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// The URL with any password replaced, for logs and errors.
fn redacted(url: &str) -> String {
    match PgConnectOptions::from_str(url) {
        Ok(options) => describe(&options),
        Err(_) => "(not a valid PostgreSQL URL)".to_owned(),
    }
}

/// Where a connection goes, without credentials: `host:port/database`.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(options.get_username())
    )
}

/// The PostgreSQL-backed store.
pub struct PostgresStore {
    pool: PgPool,
    /// Holds the one connection that listens for work notifications.
    listen_pool: PgPool,
    work: Arc<Notify>,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// Asks the announcer task to tell every node that work may be due.
    announce: Arc<Notify>,
    announcer: Mutex<Option<JoinHandle<()>>>,
    /// What claims that found nothing outside full lanes taught.
    quiet: Arc<Quiet>,
    /// Writes keyless publishes, several to a statement under load.
    gather: gather::Gather,
    /// The connections the claim and the record keep between runs, and those the reads every API
    /// request makes (its key, its workspace) keep.
    claiming: Held,
    recording: Held,
    reading: Held,
}

impl PostgresStore {
    /// Connects, brings the schema up to date (migrations take an advisory lock, so several nodes
    /// starting at once are safe) and starts listening for work from other nodes.
    pub async fn open(options: &PostgresOptions) -> StoreResult<Self> {
        let base = PgConnectOptions::from_str(&options.url)
            .map_err(|e| StoreError::Unavailable(format!("the PostgreSQL URL is not valid: {e}")))?
            .application_name("tidings");
        let target = describe(&base);
        let unreachable = |e: sqlx::Error| {
            StoreError::Unavailable(format!("cannot connect to PostgreSQL at {target}: {e}"))
        };
        let timeout_ms = options.statement_timeout.as_millis().to_string();
        let connect = base
            .clone()
            .options([("statement_timeout", timeout_ms.as_str())]);
        // The pool pings every connection it takes back; one that sat idle is pinged again before
        // it is handed out (the database may have restarted meanwhile), one just taken back is not.
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= held::CHECK_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect.clone())
            .await
            .map_err(unreachable)?;
        // Migrations get a connection of their own with no statement timeout: one may run long,
        // and other nodes wait for its advisory lock.
        let mut migrating = base.connect().await.map_err(unreachable)?;
        let migrated = sqlx::migrate!("./migrations").run(&mut migrating).await;
        if let Err(error) = migrating.close().await {
            tracing::debug!(%error, "closing the migration connection failed");
        }
        migrated.map_err(|e| {
            StoreError::Internal(format!(
                "migrating the PostgreSQL database at {target} failed: {e}"
            ))
        })?;
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(true)
            .connect_lazy_with(connect);
        let work = Arc::new(Notify::new());
        let quiet = Arc::new(Quiet::default());
        let me: Arc<str> = Arc::from(uuid::Uuid::now_v7().simple().to_string());
        let listener = tokio::spawn(wake::listen(
            listen_pool.clone(),
            work.clone(),
            quiet.clone(),
            me.clone(),
        ));
        // One runner writes keyless publishes: each statement takes all that waited for the one
        // before, so the fewer statements run at once, the more each carries and the less CPU a
        // publish costs in all. With a quarter of a 16-connection pool (four runners), single
        // publishes at 1,000/s went in 1.4 per statement on this bench machine, and the latency
        // p99 was 21.5, 25.4, 23.5, 28.0 and 25.4 ms against 16.5, 16.0, 20.5, 21.0 and 16.1 with
        // one (two: no better than four). The runner, the claim, the record, the announcer and the
        // API's reads keep their connections where that leaves at least two for the rest.
        let runners = 1;
        let reads = (options.max_connections as usize / 8).max(1);
        let keep = options.max_connections as usize >= runners + 3 + reads + 2;
        let announce = Arc::new(Notify::new());
        let announcer = tokio::spawn(wake::announce(
            pool.clone(),
            Held::new(keep),
            announce.clone(),
            me,
        ));
        let gather = gather::Gather::start(pool.clone(), runners, keep);
        Ok(Self {
            gather,
            claiming: Held::new(keep),
            recording: Held::new(keep),
            reading: Held::shared(reads, keep),
            pool,
            listen_pool,
            work,
            announce,
            listener: Mutex::new(Some(listener)),
            announcer: Mutex::new(Some(announcer)),
            quiet,
        })
    }

    /// Work may be due: wakes this node's dispatcher now and, through the announcer, every node.
    fn wake_all(&self) {
        self.quiet.changed();
        self.announce_work();
    }

    fn announce_work(&self) {
        self.work.notify_one();
        self.announce.notify_one();
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn create_workspace(&self, workspace: &Workspace) -> StoreResult<()> {
        tenants::create_workspace(&self.pool, workspace).await
    }
    async fn get_workspace(&self, id: &str) -> StoreResult<Workspace> {
        let read = async |conn: &mut _| tenants::get_workspace(conn, id).await;
        self.reading.read(&self.pool, read).await
    }
    async fn list_workspaces(&self, page: &Page) -> StoreResult<Vec<Workspace>> {
        tenants::list_workspaces(&self.pool, page).await
    }
    async fn update_workspace(&self, workspace: &Workspace) -> StoreResult<()> {
        tenants::update_workspace(&self.pool, workspace).await
    }
    async fn delete_workspace(&self, id: &str) -> StoreResult<()> {
        tenants::delete_workspace(&self.pool, id).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        tenants::create_api_key(&self.pool, key).await
    }
    async fn get_api_key(&self, id: &str) -> StoreResult<ApiKey> {
        let read = async |conn: &mut _| tenants::get_api_key(conn, id).await;
        self.reading.read(&self.pool, read).await
    }
    async fn list_api_keys(&self, workspace_id: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        tenants::list_api_keys(&self.pool, workspace_id).await
    }
    async fn revoke_api_key(&self, id: &str, at: UnixMillis) -> StoreResult<()> {
        tenants::revoke_api_key(&self.pool, id, at).await
    }

    async fn list_custom_event_types(&self) -> StoreResult<Vec<EventTypeDef>> {
        catalog::list(&self.pool).await
    }
    async fn put_custom_event_type(&self, def: &EventTypeDef, at: UnixMillis) -> StoreResult<()> {
        catalog::put(&self.pool, def, at).await
    }

    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        tenants::create_webhook(&self.pool, webhook).await
    }
    async fn get_webhook(&self, workspace_id: &str, id: &str) -> StoreResult<Webhook> {
        tenants::get_webhook(&self.pool, workspace_id, id).await
    }
    async fn list_webhooks(&self, workspace_id: &str, page: &Page) -> StoreResult<Vec<Webhook>> {
        tenants::list_webhooks(&self.pool, workspace_id, Some(page)).await
    }
    async fn workspace_webhooks(&self, workspace_id: &str) -> StoreResult<Vec<Webhook>> {
        tenants::list_webhooks(&self.pool, workspace_id, None).await
    }
    async fn update_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        if tenants::update_webhook(&self.pool, webhook).await? {
            self.wake_all();
        }
        Ok(())
    }
    async fn enable_webhook(
        &self,
        workspace_id: &str,
        id: &str,
        at: UnixMillis,
    ) -> StoreResult<()> {
        tenants::enable_webhook(&self.pool, workspace_id, id, at).await?;
        self.wake_all();
        Ok(())
    }
    async fn delete_webhook(&self, workspace_id: &str, id: &str) -> StoreResult<()> {
        tenants::delete_webhook(&self.pool, workspace_id, id).await
    }

    async fn publish(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Published>> {
        let (events, answer) = if events.iter().any(|e| e.idempotency_key.is_some()) {
            let answer = events::publish(&self.pool, &events).await;
            (events, answer)
        } else {
            self.gather.publish(events).await
        };
        let (published, any_due) = answer?;
        if any_due {
            self.quiet.published(
                events
                    .iter()
                    .flat_map(|e| &e.deliveries)
                    .map(|d| d.webhook_id.as_str()),
            );
            self.announce_work();
        }
        Ok(published)
    }
    async fn get_event(&self, workspace_id: &str, id: &str) -> StoreResult<Event> {
        events::get_event(&self.pool, workspace_id, id).await
    }
    async fn list_events(&self, workspace_id: &str, page: &Page) -> StoreResult<Vec<Event>> {
        events::list_events(&self.pool, workspace_id, page).await
    }

    async fn claim_due(&self, claim: &Claim) -> StoreResult<Vec<ClaimedDelivery>> {
        dispatch::claim(&self.pool, &self.claiming, claim, &self.quiet).await
    }
    async fn release(&self, node: &str, delivery_ids: &[String]) -> StoreResult<()> {
        if dispatch::release(&self.pool, node, delivery_ids).await? {
            self.wake_all();
        }
        Ok(())
    }
    async fn renew_claims(
        &self,
        node: &str,
        delivery_ids: &[String],
        until: UnixMillis,
    ) -> StoreResult<()> {
        dispatch::renew(&self.pool, node, delivery_ids, until).await
    }
    async fn record_outcomes(
        &self,
        node: &str,
        outcomes: Arc<[Outcome]>,
        policy: &HealthPolicy,
    ) -> StoreResult<()> {
        record::record(&self.pool, &self.recording, node, &outcomes, policy).await?;
        self.quiet.recorded(&outcomes, now_millis());
        // Recorded attempts free claims a full lane may be waiting on (other nodes poll for that:
        // waking them on every batch would cost more than it saves).
        self.work.notify_one();
        Ok(())
    }
    async fn record_test_send(&self, event: NewEvent, outcome: Outcome) -> StoreResult<()> {
        events::insert_test_send(&self.pool, &event, &outcome).await
    }
    /// Releases nothing: other nodes sharing the database may be holding live claims, and a claim
    /// left by a node that died becomes due again by itself when its lease runs out, when any node
    /// takes it over.
    async fn release_all_claims(&self) -> StoreResult<u64> {
        Ok(0)
    }
    async fn next_due_at(&self) -> StoreResult<Option<UnixMillis>> {
        dispatch::next_due_at(&self.pool).await
    }
    async fn count_pending(&self) -> StoreResult<u64> {
        dispatch::count_pending(&self.pool).await
    }

    async fn list_deliveries(
        &self,
        workspace_id: &str,
        filter: &DeliveryFilter,
        page: &Page,
    ) -> StoreResult<Vec<Delivery>> {
        reads::list_deliveries(&self.pool, workspace_id, filter, page).await
    }
    async fn get_delivery(&self, workspace_id: &str, id: &str) -> StoreResult<Delivery> {
        reads::get_delivery(&self.pool, workspace_id, id).await
    }
    async fn list_attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        reads::list_attempts(&self.pool, delivery_id).await
    }
    async fn event_deliveries(
        &self,
        workspace_id: &str,
        event_id: &str,
    ) -> StoreResult<Vec<Delivery>> {
        reads::event_deliveries(&self.pool, workspace_id, event_id).await
    }

    async fn retry_delivery(
        &self,
        workspace_id: &str,
        id: &str,
        at: UnixMillis,
    ) -> StoreResult<Delivery> {
        let (delivery, due) = ops::retry_delivery(&self.pool, workspace_id, id, at).await?;
        if due {
            self.wake_all();
        }
        Ok(delivery)
    }
    async fn retrigger(
        &self,
        workspace_id: &str,
        filter: &RetriggerFilter,
        limit: u32,
        at: UnixMillis,
    ) -> StoreResult<u64> {
        let count = ops::retrigger(&self.pool, workspace_id, filter, limit, at).await?;
        if count > 0 {
            self.wake_all();
        }
        Ok(count)
    }
    async fn webhook_summary(
        &self,
        webhook_id: &str,
        since: UnixMillis,
        until: UnixMillis,
    ) -> StoreResult<SummaryData> {
        ops::webhook_summary(&self.pool, webhook_id, since, until).await
    }
    async fn purge_finished(&self, before: UnixMillis, limit: u32) -> StoreResult<u64> {
        ops::purge_finished(&self.pool, before, limit).await
    }
    async fn claim_notifications(
        &self,
        now: UnixMillis,
        limit: u32,
        lease_ms: i64,
    ) -> StoreResult<Vec<Notification>> {
        ops::claim_notifications(&self.pool, now, limit, lease_ms).await
    }
    async fn finish_notification(&self, id: &str, retry_at: Option<UnixMillis>) -> StoreResult<()> {
        ops::finish_notification(&self.pool, id, retry_at).await
    }

    async fn server_value(&self, name: &str, make: Vec<u8>) -> StoreResult<Vec<u8>> {
        // The first node to insert wins; every other node reads its value.
        sqlx::query(
            "INSERT INTO server_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(make)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        sqlx::query_scalar("SELECT value FROM server_settings WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    fn work_signal(&self) -> Arc<Notify> {
        self.work.clone()
    }

    async fn close(&self) {
        self.gather.stop().await;
        stop_task(&self.announcer).await;
        stop_task(&self.listener).await;
        self.claiming.give_back().await;
        self.recording.give_back().await;
        self.reading.give_back().await;
        self.listen_pool.close().await;
        self.pool.close().await;
    }
}

/// Aborts a background task once and waits for it: aborted (or already ended), it has given its
/// connection back either way.
async fn stop_task(slot: &Mutex<Option<JoinHandle<()>>>) {
    let task = slot
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    if let Some(task) = task {
        task.abort();
        let _ = task.await;
    }
}
