//! The records the store keeps and returns.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidings_core::UnixMillis;
use tidings_core::matching::{EventScope, LevelPrecedence};
use tidings_core::outcome::ErrorKind;
use tidings_core::webhook::{WebhookSpec, WebhookState};

#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub level_precedence: LevelPrecedence,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    Operator,
    Workspace,
}

/// An API key as stored: only the SHA-256 of its secret part is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub scope: KeyScope,
    pub workspace_id: Option<String>,
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub created_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: String,
    pub workspace_id: String,
    pub spec: WebhookSpec,
    pub secret: String,
    /// The secret being rotated out, and until when it still signs alongside `secret`.
    pub previous_secret: Option<(String, UnixMillis)>,
    pub state: WebhookState,
    pub disabled_reason: Option<String>,
    /// Kept by the dispatcher; ignored by `update_webhook`.
    pub health: WebhookHealth,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

impl Webhook {
    /// The secrets that sign an attempt made at `now`: the current one first.
    pub fn signing_secrets(&self, now: UnixMillis) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let Some((previous, until)) = &self.previous_secret
            && *until > now
        {
            secrets.push(previous);
        }
        secrets
    }
}

/// How a webhook's endpoint has been doing (real deliveries only, never test sends).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookHealth {
    /// The first failed attempt since the last success.
    pub failing_since: Option<UnixMillis>,
    pub failures_since_success: u32,
    pub last_success_at: Option<UnixMillis>,
    pub last_failure_at: Option<UnixMillis>,
    pub last_failure_reason: Option<String>,
}

/// When the dispatcher disables a failing webhook, and whether the operator hears about it.
#[derive(Debug, Clone)]
pub struct HealthPolicy {
    /// A webhook failing for this long without a success is disabled...
    pub auto_disable_after_ms: i64,
    /// ...once it has also failed at least this many attempts.
    pub auto_disable_min_failures: u32,
    /// Queue operator notifications (webhook disabled, delivery failed).
    pub notify_operator: bool,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            auto_disable_after_ms: 5 * 24 * 3600 * 1000,
            auto_disable_min_failures: 10,
            notify_operator: false,
        }
    }
}

/// The initial state of a delivery made at publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            "skipped" => Some(DeliveryStatus::Skipped),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub webhook_id: String,
    pub status: DeliveryStatus,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub workspace_id: String,
    pub event_type: String,
    pub occurred_at: UnixMillis,
    pub received_at: UnixMillis,
    /// The `data` object exactly as published (compact JSON).
    pub data: String,
    pub scope: EventScope,
    pub idempotency_key: Option<String>,
    /// Until when the idempotency key holds.
    pub idempotency_until: UnixMillis,
    pub deliveries: Vec<NewDelivery>,
}

/// What publishing one event did.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub event_id: String,
    pub delivery_ids: Vec<String>,
    /// True when an earlier event with the same idempotency key was returned instead.
    pub duplicate: bool,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub workspace_id: String,
    pub event_type: String,
    pub occurred_at: UnixMillis,
    pub received_at: UnixMillis,
    pub data: String,
    pub scope: EventScope,
    pub idempotency_key: Option<String>,
}

/// A request to claim due work.
#[derive(Debug, Clone)]
pub struct Claim {
    pub node: String,
    pub now: UnixMillis,
    pub limit: u32,
    pub lease_ms: i64,
    pub exclude_webhooks: Vec<String>,
    /// Most live (unexpired, unrecorded) claims one webhook may hold at once, across every node
    /// sharing the store: a claim hands out at most enough of its deliveries to reach it. The
    /// dispatcher passes the webhook concurrency limit, so it holds across nodes.
    pub per_webhook_claims: u32,
    /// A higher cap for a node that is the only one holding live claims of a webhook: it runs at
    /// most the concurrency limit at once anyway, and any other node can take only what brings all
    /// live claims back under `per_webhook_claims`, so the limit still holds across nodes while
    /// the lone node keeps work in memory ahead of its attempts. 0: no higher cap.
    pub alone_claims: u32,
    /// Deliveries of this node whose attempt has finished but whose outcome is not committed yet:
    /// still claimed in storage, but no longer taking a place, so they do not count against
    /// `per_webhook_claims`. Without this a webhook's place stays taken through the recorder's
    /// commit, which on a shared store is most of the time a delivery holds it.
    pub settled: Vec<String>,
}

/// Everything the dispatcher needs to make one attempt, read in the claim.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery_id: String,
    pub attempts: u32,
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: UnixMillis,
    /// Shared by every delivery of the same event claimed together.
    pub data: Arc<str>,
    pub webhook: Arc<Webhook>,
}

/// The state a delivery moves to after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum NextState {
    Delivered,
    RetryAt(UnixMillis),
    Failed,
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub started_at: UnixMillis,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    pub error_kind: Option<ErrorKind>,
    pub error_message: Option<String>,
    pub response_excerpt: Option<String>,
    pub request_headers: BTreeMap<String, String>,
    pub response_headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery_id: String,
    pub webhook_id: String,
    pub attempt: AttemptRecord,
    pub next: NextState,
    /// Set when the attempt disables the webhook (410 Gone).
    pub disable_webhook: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub webhook_id: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<String>,
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub workspace_id: String,
    pub event_id: String,
    pub webhook_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<UnixMillis>,
    pub last_status_code: Option<u16>,
    pub last_error_kind: Option<ErrorKind>,
    /// Made by a test send; never counts towards endpoint health.
    pub is_test: bool,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub number: u32,
    pub record: AttemptRecord,
}

/// Which deliveries of a webhook a retrigger sends again.
#[derive(Debug, Clone)]
pub struct RetriggerFilter {
    pub webhook_id: String,
    pub since: UnixMillis,
    pub until: UnixMillis,
    /// Finished statuses to send again (never `pending`: those are queued already).
    pub statuses: Vec<DeliveryStatus>,
}

/// Stored figures behind a webhook's summary.
#[derive(Debug, Clone, Default)]
pub struct SummaryData {
    /// (status, event type, count) of deliveries created in the period.
    pub counts: Vec<(DeliveryStatus, String, u64)>,
    /// (latency bucket, attempts) of attempts made in the period.
    pub latency: Vec<(usize, u64)>,
}

/// An operator notification waiting to be sent.
#[derive(Debug, Clone)]
pub struct Notification {
    pub id: String,
    pub event_type: String,
    /// The `data` object of the notification (compact JSON).
    pub payload: String,
    pub attempts: u32,
    pub created_at: UnixMillis,
}
