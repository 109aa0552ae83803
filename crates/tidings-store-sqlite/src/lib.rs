//! The embedded SQLite store: one file in WAL mode, two writing connections, a pool of readers.
//!
//! The hot path (publish, claim, record) goes through one writer thread, with a connection of its
//! own, that commits whatever has queued up in a single transaction (group commit), so many
//! concurrent publishes share one fsync. Other writes take a second connection; reads never wait
//! for writes.

mod bind;
mod catalog;
mod claims;
mod dispatch;
mod events;
mod ops;
pub(crate) mod reads;
mod rows;
mod sync;
mod tenants;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tidings_core::UnixMillis;
use tidings_core::catalog::EventTypeDef;
use tidings_store::*;
use tokio::sync::Notify;

pub(crate) use rows::{map_err, map_sql};

/// The SQLite-backed store.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    jobs: writer::JobSender,
    work: Arc<Notify>,
    changes: writer::Changes,
    claims: claims::Claims,
    claimer: claims::Claimer,
}

/// How the database file is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `sqlite://PATH` or a plain path.
    pub url: String,
    /// `FULL` syncs every commit that stores events to disk (commits of claims and outcomes alone
    /// are not synced: see the writer); `NORMAL` survives a process crash but may lose the last
    /// commits on power loss.
    pub synchronous_full: bool,
    pub readers: u32,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database.
    pub async fn open(options: &SqliteOptions) -> StoreResult<Self> {
        let path = options
            .url
            .strip_prefix("sqlite://")
            .or_else(|| options.url.strip_prefix("sqlite:"))
            .unwrap_or(&options.url);
        let connect = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(|e| StoreError::Unavailable(format!("bad SQLite URL `{}`: {e}", options.url)))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if options.synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            // Page cache per connection (KiB): this one, for the other writes, gets more; the
            // readers and the writer's own connection little, so memory stays flat however many
            // deliveries are pending.
            .pragma("cache_size", "-16000");
        let database = connect.get_filename().to_owned();
        // The writer opens the file itself; an in-memory database would be a second, empty one.
        if database
            .to_string_lossy()
            .starts_with("file:sqlx-in-memory")
            || options.url.contains("mode=memory")
        {
            return Err(StoreError::Unavailable(format!(
                "`{}` is an in-memory SQLite database, which Tidings cannot use: give a file path",
                options.url
            )));
        }
        // One connection for the life of the process: closing it could delete the WAL.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.clone())
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open SQLite database `{path}`: {e}"))
            })?;
        sqlx::migrate!("./migrations")
            .run(&writer)
            .await
            .map_err(|e| {
                StoreError::Internal(format!("migrating the SQLite database failed: {e}"))
            })?;
        // No ping before a reader is handed out: a file's connection cannot have been dropped by
        // a server, and each ping is a round trip to the connection's worker thread.
        let reader = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            .connect_with(connect.read_only(true).pragma("cache_size", "-4000"))
            .await
            .map_err(map_err)?;
        let work = Arc::new(Notify::new());
        let changes = writer::Changes::default();
        let claims = claims::Claims::default();
        let jobs = writer::spawn(
            &database,
            work.clone(),
            changes.clone(),
            claims.clone(),
            options.synchronous_full,
        )?;
        Ok(Self {
            writer,
            reader,
            jobs,
            work,
            changes,
            claims,
            claimer: claims::Claimer::new(&database),
        })
    }
}

impl SqliteStore {
    /// After a write outside the writer task that made deliveries due.
    fn new_work(&self) {
        self.changes.bump();
        self.work.notify_one();
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        // Events cannot be accepted: a load balancer should send them elsewhere.
        if let Some(why) = self.jobs.broken() {
            return Err(StoreError::Unavailable(why));
        }
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn create_workspace(&self, workspace: &Workspace) -> StoreResult<()> {
        tenants::create_workspace(&self.writer, workspace).await
    }
    async fn get_workspace(&self, id: &str) -> StoreResult<Workspace> {
        tenants::get_workspace(&self.reader, id).await
    }
    async fn list_workspaces(&self, page: &Page) -> StoreResult<Vec<Workspace>> {
        tenants::list_workspaces(&self.reader, page).await
    }
    async fn update_workspace(&self, workspace: &Workspace) -> StoreResult<()> {
        tenants::update_workspace(&self.writer, workspace).await
    }
    async fn delete_workspace(&self, id: &str) -> StoreResult<()> {
        tenants::delete_workspace(&self.writer, id).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        tenants::create_api_key(&self.writer, key).await
    }
    async fn get_api_key(&self, id: &str) -> StoreResult<ApiKey> {
        tenants::get_api_key(&self.reader, id).await
    }
    async fn list_api_keys(&self, workspace_id: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        tenants::list_api_keys(&self.reader, workspace_id).await
    }
    async fn revoke_api_key(&self, id: &str, at: UnixMillis) -> StoreResult<()> {
        tenants::revoke_api_key(&self.writer, id, at).await
    }

    async fn list_custom_event_types(&self) -> StoreResult<Vec<EventTypeDef>> {
        catalog::list(&self.reader).await
    }
    async fn put_custom_event_type(&self, def: &EventTypeDef, at: UnixMillis) -> StoreResult<()> {
        catalog::put(&self.writer, def, at).await
    }

    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        tenants::create_webhook(&self.writer, webhook).await
    }
    async fn get_webhook(&self, workspace_id: &str, id: &str) -> StoreResult<Webhook> {
        tenants::get_webhook(&self.reader, workspace_id, id).await
    }
    async fn list_webhooks(&self, workspace_id: &str, page: &Page) -> StoreResult<Vec<Webhook>> {
        tenants::list_webhooks(&self.reader, workspace_id, Some(page)).await
    }
    async fn workspace_webhooks(&self, workspace_id: &str) -> StoreResult<Vec<Webhook>> {
        tenants::list_webhooks(&self.reader, workspace_id, None).await
    }
    async fn update_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        let result = tenants::update_webhook(&self.writer, webhook).await;
        self.changes.bump();
        result
    }
    async fn delete_webhook(&self, workspace_id: &str, id: &str) -> StoreResult<()> {
        tenants::delete_webhook(&self.writer, workspace_id, id).await
    }

    async fn publish(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Published>> {
        self.jobs.publish(events).await
    }
    async fn get_event(&self, workspace_id: &str, id: &str) -> StoreResult<Event> {
        events::get_event(&self.reader, workspace_id, id).await
    }
    async fn list_events(&self, workspace_id: &str, page: &Page) -> StoreResult<Vec<Event>> {
        events::list_events(&self.reader, workspace_id, page).await
    }

    async fn claim_due(&self, claim: &Claim) -> StoreResult<Vec<ClaimedDelivery>> {
        let claimed = self.jobs.claim(claim.clone()).await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        dispatch::with_webhooks(&self.reader, claimed).await
    }
    async fn release(&self, node: &str, delivery_ids: &[String]) -> StoreResult<()> {
        // A released delivery is due again at once: its due time is the one it was claimed at.
        if self.claims.lock().release(node, delivery_ids) > 0 {
            self.new_work();
        }
        Ok(())
    }
    async fn record_outcomes(
        &self,
        node: &str,
        outcomes: Arc<[Outcome]>,
        policy: &HealthPolicy,
    ) -> StoreResult<()> {
        self.jobs
            .record(node.to_owned(), outcomes, policy.clone())
            .await
    }
    async fn record_test_send(&self, event: NewEvent, outcome: Outcome) -> StoreResult<()> {
        self.jobs.test_send(event, outcome).await
    }
    async fn renew_claims(
        &self,
        node: &str,
        delivery_ids: &[String],
        until: UnixMillis,
    ) -> StoreResult<()> {
        self.claims.lock().renew(node, delivery_ids, until);
        Ok(())
    }
    async fn release_all_claims(&self) -> StoreResult<u64> {
        // The dispatcher's first call: from here on this process is the one claiming.
        self.claimer.take().await?;
        let released = self.claims.lock().clear();
        self.changes.bump();
        Ok(u64::try_from(released).unwrap_or(u64::MAX))
    }
    async fn next_due_at(&self) -> StoreResult<Option<UnixMillis>> {
        dispatch::next_due_at(&self.reader, &self.claims).await
    }
    async fn count_pending(&self) -> StoreResult<u64> {
        dispatch::count_pending(&self.reader).await
    }

    async fn list_deliveries(
        &self,
        workspace_id: &str,
        filter: &DeliveryFilter,
        page: &Page,
    ) -> StoreResult<Vec<Delivery>> {
        reads::list_deliveries(&self.reader, workspace_id, filter, page).await
    }
    async fn get_delivery(&self, workspace_id: &str, id: &str) -> StoreResult<Delivery> {
        reads::get_delivery(&self.reader, workspace_id, id).await
    }
    async fn list_attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        reads::list_attempts(&self.reader, delivery_id).await
    }
    async fn event_deliveries(
        &self,
        workspace_id: &str,
        event_id: &str,
    ) -> StoreResult<Vec<Delivery>> {
        reads::event_deliveries(&self.reader, workspace_id, event_id).await
    }

    async fn enable_webhook(
        &self,
        workspace_id: &str,
        id: &str,
        at: UnixMillis,
    ) -> StoreResult<()> {
        tenants::enable_webhook(&self.writer, workspace_id, id, at).await?;
        self.new_work();
        Ok(())
    }

    async fn retry_delivery(
        &self,
        workspace_id: &str,
        id: &str,
        at: UnixMillis,
    ) -> StoreResult<Delivery> {
        let delivery =
            ops::retry_delivery(&self.writer, &self.claims, workspace_id, id, at).await?;
        self.new_work();
        Ok(delivery)
    }
    async fn retrigger(
        &self,
        workspace_id: &str,
        filter: &RetriggerFilter,
        limit: u32,
        at: UnixMillis,
    ) -> StoreResult<u64> {
        let count = ops::retrigger(&self.writer, workspace_id, filter, limit, at).await?;
        if count > 0 {
            self.new_work();
        }
        Ok(count)
    }
    async fn webhook_summary(
        &self,
        webhook_id: &str,
        since: UnixMillis,
        until: UnixMillis,
    ) -> StoreResult<SummaryData> {
        ops::webhook_summary(&self.reader, webhook_id, since, until).await
    }
    async fn purge_finished(&self, before: UnixMillis, limit: u32) -> StoreResult<u64> {
        ops::purge_finished(&self.writer, before, limit).await
    }
    async fn claim_notifications(
        &self,
        now: UnixMillis,
        limit: u32,
        lease_ms: i64,
    ) -> StoreResult<Vec<Notification>> {
        ops::claim_notifications(&self.writer, now, limit, lease_ms).await
    }
    async fn finish_notification(&self, id: &str, retry_at: Option<UnixMillis>) -> StoreResult<()> {
        ops::finish_notification(&self.writer, id, retry_at).await
    }

    async fn server_value(&self, name: &str, make: Vec<u8>) -> StoreResult<Vec<u8>> {
        sqlx::query(
            "INSERT INTO server_settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(make)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        sqlx::query_scalar("SELECT value FROM server_settings WHERE name = ?")
            .bind(name)
            .fetch_one(&self.writer)
            .await
            .map_err(map_err)
    }

    fn work_signal(&self) -> Arc<Notify> {
        self.work.clone()
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
        self.claimer.give_up();
    }
}
