//! The storage contract every backend implements: workspaces, keys, event types, webhooks, events,
//! deliveries and attempts, and the claiming of due deliveries by the dispatcher.

mod records;

pub use records::*;

use std::sync::Arc;

use async_trait::async_trait;
use tidings_core::UnixMillis;
use tidings_core::catalog::EventTypeDef;

/// What went wrong in storage, in terms the API can map to a status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// A value the backend cannot store (PostgreSQL text cannot hold the NUL character).
    #[error("value cannot be stored: {0}")]
    Invalid(String),
    #[error("storage error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A page request: at most `limit` items strictly after `after` in the list's order.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: u32,
    pub after: Option<String>,
}

/// The storage backend. One instance is shared by the API and the dispatcher.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that storage answers.
    async fn ping(&self) -> StoreResult<()>;

    async fn create_workspace(&self, workspace: &Workspace) -> StoreResult<()>;
    async fn get_workspace(&self, id: &str) -> StoreResult<Workspace>;
    async fn list_workspaces(&self, page: &Page) -> StoreResult<Vec<Workspace>>;
    async fn update_workspace(&self, workspace: &Workspace) -> StoreResult<()>;
    /// Deletes a workspace and everything that belongs to it.
    async fn delete_workspace(&self, id: &str) -> StoreResult<()>;

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    async fn get_api_key(&self, id: &str) -> StoreResult<ApiKey>;
    async fn list_api_keys(&self, workspace_id: Option<&str>) -> StoreResult<Vec<ApiKey>>;
    async fn revoke_api_key(&self, id: &str, at: UnixMillis) -> StoreResult<()>;

    async fn list_custom_event_types(&self) -> StoreResult<Vec<EventTypeDef>>;
    /// Creates or replaces a custom event type.
    async fn put_custom_event_type(&self, def: &EventTypeDef, at: UnixMillis) -> StoreResult<()>;

    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()>;
    async fn get_webhook(&self, workspace_id: &str, id: &str) -> StoreResult<Webhook>;
    async fn list_webhooks(&self, workspace_id: &str, page: &Page) -> StoreResult<Vec<Webhook>>;
    /// Every webhook of a workspace, for fan-out.
    async fn workspace_webhooks(&self, workspace_id: &str) -> StoreResult<Vec<Webhook>>;
    /// Saves a webhook's settings, secrets and state (not its health, which the dispatcher keeps).
    async fn update_webhook(&self, webhook: &Webhook) -> StoreResult<()>;
    /// Turns a webhook back on: state active, no disabled reason, health counters reset.
    async fn enable_webhook(&self, workspace_id: &str, id: &str, at: UnixMillis)
    -> StoreResult<()>;
    async fn delete_webhook(&self, workspace_id: &str, id: &str) -> StoreResult<()>;

    /// Makes events and all their deliveries durable in one commit. An event whose idempotency key
    /// was seen within its window returns the first event instead of being stored again.
    async fn publish(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Published>>;
    async fn get_event(&self, workspace_id: &str, id: &str) -> StoreResult<Event>;
    async fn list_events(&self, workspace_id: &str, page: &Page) -> StoreResult<Vec<Event>>;

    /// Claims up to `limit` due deliveries for `node`, skipping `exclude_webhooks`, and holds each
    /// for `lease_ms`. A claimed delivery is not due again until its lease runs out.
    async fn claim_due(&self, claim: &Claim) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Gives back claimed deliveries unattempted, due again at once.
    async fn release(&self, node: &str, delivery_ids: &[String]) -> StoreResult<()>;
    /// Extends `node`'s claims on these deliveries (attempts still running) until `until`, so no
    /// other node takes them over meanwhile.
    async fn renew_claims(
        &self,
        node: &str,
        delivery_ids: &[String],
        until: UnixMillis,
    ) -> StoreResult<()>;
    /// Records finished attempts and their deliveries' new state, in one commit; keeps endpoint
    /// health, disables webhooks as `policy` says and queues operator notifications.
    ///
    /// Shared, so a caller that retries after an error keeps the batch without copying it.
    async fn record_outcomes(
        &self,
        node: &str,
        outcomes: Arc<[Outcome]>,
        policy: &HealthPolicy,
    ) -> StoreResult<()>;
    /// Stores a test send: its event, its delivery (marked as a test, already finished) and attempt.
    async fn record_test_send(&self, event: NewEvent, outcome: Outcome) -> StoreResult<()>;
    /// Start-up recovery, called once by the dispatcher before its first claim: releases the claims
    /// no running node can still hold. A backend one process owns (SQLite) first waits until no
    /// other process is claiming from it, then releases every claim; a shared one releases none and
    /// lets leases run out.
    async fn release_all_claims(&self) -> StoreResult<u64>;
    /// When the earliest pending delivery is due, if any.
    async fn next_due_at(&self) -> StoreResult<Option<UnixMillis>>;
    /// How many deliveries are pending (due or not).
    async fn count_pending(&self) -> StoreResult<u64>;

    async fn list_deliveries(
        &self,
        workspace_id: &str,
        filter: &DeliveryFilter,
        page: &Page,
    ) -> StoreResult<Vec<Delivery>>;
    async fn get_delivery(&self, workspace_id: &str, id: &str) -> StoreResult<Delivery>;
    async fn list_attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>>;
    async fn event_deliveries(
        &self,
        workspace_id: &str,
        event_id: &str,
    ) -> StoreResult<Vec<Delivery>>;

    /// Queues a finished (or pending) delivery for one more attempt now; `Conflict` while an
    /// attempt of it is in flight.
    async fn retry_delivery(
        &self,
        workspace_id: &str,
        id: &str,
        at: UnixMillis,
    ) -> StoreResult<Delivery>;
    /// Queues up to `limit` matching finished deliveries again; returns how many. Callers repeat
    /// until it returns fewer than `limit`.
    async fn retrigger(
        &self,
        workspace_id: &str,
        filter: &RetriggerFilter,
        limit: u32,
        at: UnixMillis,
    ) -> StoreResult<u64>;
    /// The stored figures for a webhook's summary over [since, until).
    async fn webhook_summary(
        &self,
        webhook_id: &str,
        since: UnixMillis,
        until: UnixMillis,
    ) -> StoreResult<SummaryData>;

    /// Deletes up to `limit` deliveries finished before `before` with their attempts, and the
    /// events no delivery refers to any more; returns how many deliveries went.
    async fn purge_finished(&self, before: UnixMillis, limit: u32) -> StoreResult<u64>;

    /// Operator notifications due at `now`, each held for `lease_ms`.
    async fn claim_notifications(
        &self,
        now: UnixMillis,
        limit: u32,
        lease_ms: i64,
    ) -> StoreResult<Vec<Notification>>;
    /// A notification was sent (`None`: delete it) or is to be tried again at the given time.
    async fn finish_notification(&self, id: &str, retry_at: Option<UnixMillis>) -> StoreResult<()>;

    /// The server-wide value stored under `name`, created from `make` the first time it is asked for
    /// (every node then reads the same value).
    async fn server_value(&self, name: &str, make: Vec<u8>) -> StoreResult<Vec<u8>>;

    /// Woken whenever new work may be due (a publish committed, a delivery released), on this node
    /// or, for a shared backend, on any node.
    fn work_signal(&self) -> Arc<tokio::sync::Notify>;

    /// Stops background tasks and closes connections (after the dispatcher has stopped).
    async fn close(&self);
}
