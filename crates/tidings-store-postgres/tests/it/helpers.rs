//! Opening nodes on a fresh database, and small builders for the records the stories need.

use std::collections::BTreeMap;
use std::time::Duration;

use tidings_core::UnixMillis;
use tidings_core::ids::{IdKind, new_id};
use tidings_core::matching::{EventScope, LevelPrecedence};
use tidings_core::outcome::ErrorKind;
use tidings_core::webhook::{Filters, PayloadFormat, Signing, WebhookSpec, WebhookState};
use tidings_store::*;
use tidings_store_postgres::{PostgresOptions, PostgresStore};

/// A lease long enough that no story runs into it by accident.
pub const LONG_LEASE_MS: i64 = 600_000;

pub fn options(url: &str) -> PostgresOptions {
    PostgresOptions {
        url: url.to_owned(),
        max_connections: 8,
        statement_timeout: Duration::from_secs(30),
        acquire_timeout: Duration::from_secs(5),
    }
}

/// A store on the database at `url`: one node.
pub async fn node(url: &str) -> PostgresStore {
    PostgresStore::open(&options(url))
        .await
        .expect("open the PostgreSQL store")
}

/// Two nodes sharing one fresh database.
pub async fn two_nodes() -> (String, PostgresStore, PostgresStore) {
    let url = tidings_testkit::postgres::fresh_database().await;
    let a = node(&url).await;
    let b = node(&url).await;
    (url, a, b)
}

/// A direct connection to the database, to look at what the store wrote.
pub async fn inspect(url: &str) -> sqlx::PgPool {
    sqlx::PgPool::connect(url).await.expect("connect to look")
}

pub fn now() -> UnixMillis {
    tidings_core::now_millis()
}

pub async fn workspace(store: &dyn Store) -> Workspace {
    let at = now();
    let workspace = Workspace {
        id: new_id(IdKind::Workspace),
        name: "Acme".to_owned(),
        level_precedence: LevelPrecedence::All,
        created_at: at,
        updated_at: at,
    };
    store
        .create_workspace(&workspace)
        .await
        .expect("create a workspace");
    workspace
}

pub fn spec(name: &str) -> WebhookSpec {
    WebhookSpec {
        name: name.to_owned(),
        description: String::new(),
        url: format!("https://hooks.example.com/{name}"),
        event_types: vec!["lead.created.v1".to_owned()],
        filters: Filters::default(),
        headers: BTreeMap::new(),
        signing: Signing::default(),
        payload_format: PayloadFormat::Envelope,
        timeout_ms: 10_000,
        retry_schedule: None,
        rate_limit_per_s: None,
    }
}

pub fn new_webhook(workspace_id: &str, rate_limit_per_s: Option<u32>) -> Webhook {
    let at = now();
    let id = new_id(IdKind::Webhook);
    let mut spec = spec(&id);
    spec.rate_limit_per_s = rate_limit_per_s;
    Webhook {
        spec,
        id,
        workspace_id: workspace_id.to_owned(),
        secret: "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=".to_owned(),
        previous_secret: None,
        state: WebhookState::Active,
        disabled_reason: None,
        health: WebhookHealth::default(),
        created_at: at,
        updated_at: at,
    }
}

pub async fn webhook(store: &dyn Store, workspace_id: &str) -> Webhook {
    rate_limited_webhook(store, workspace_id, None).await
}

pub async fn rate_limited_webhook(
    store: &dyn Store,
    workspace_id: &str,
    rate_limit_per_s: Option<u32>,
) -> Webhook {
    let webhook = new_webhook(workspace_id, rate_limit_per_s);
    store
        .create_webhook(&webhook)
        .await
        .expect("create a webhook");
    webhook
}

/// An event received at `received_at` with one pending delivery per webhook.
pub fn new_event(workspace_id: &str, received_at: UnixMillis, webhooks: &[&Webhook]) -> NewEvent {
    NewEvent {
        id: new_id(IdKind::Event),
        workspace_id: workspace_id.to_owned(),
        event_type: "lead.created.v1".to_owned(),
        occurred_at: received_at - 250,
        received_at,
        data: r#"{"lead_id":"l_1","email":"ana@example.com"}"#.to_owned(),
        scope: EventScope::default(),
        idempotency_key: None,
        idempotency_until: received_at,
        deliveries: webhooks
            .iter()
            .map(|webhook| NewDelivery {
                id: new_id(IdKind::Delivery),
                webhook_id: webhook.id.clone(),
                status: DeliveryStatus::Pending,
            })
            .collect(),
    }
}

/// Publishes `count` events for one webhook, all due at `received_at`; returns the delivery ids.
pub async fn publish_many(
    store: &dyn Store,
    webhook: &Webhook,
    count: usize,
    received_at: UnixMillis,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    let events: Vec<NewEvent> = (0..count)
        .map(|_| new_event(&webhook.workspace_id, received_at, &[webhook]))
        .collect();
    for chunk in events.chunks(100) {
        for published in store.publish(chunk.to_vec()).await.expect("publish") {
            ids.extend(published.delivery_ids);
        }
    }
    ids
}

pub fn claim(node: &str, now: UnixMillis, limit: u32) -> Claim {
    Claim {
        node: node.to_owned(),
        now,
        limit,
        lease_ms: LONG_LEASE_MS,
        exclude_webhooks: Vec::new(),
        per_webhook_claims: 10_000,
        alone_claims: 0,
        settled: Vec::new(),
    }
}

pub fn attempt(started_at: UnixMillis, status_code: Option<u16>) -> AttemptRecord {
    AttemptRecord {
        started_at,
        duration_ms: 12,
        status_code,
        error_kind: match status_code {
            Some(code) if (200..300).contains(&code) => None,
            Some(_) => Some(ErrorKind::HttpStatus),
            None => Some(ErrorKind::Timeout),
        },
        error_message: status_code
            .is_none()
            .then(|| "no response within 10 s".to_owned()),
        response_excerpt: None,
        request_headers: BTreeMap::new(),
        response_headers: BTreeMap::new(),
    }
}

pub fn outcome(claimed: &ClaimedDelivery, status_code: Option<u16>, next: NextState) -> Outcome {
    Outcome {
        delivery_id: claimed.delivery_id.clone(),
        webhook_id: claimed.webhook.id.clone(),
        attempt: attempt(now(), status_code),
        next,
        disable_webhook: None,
    }
}

/// A policy that never disables anything and tells the operator nothing.
pub fn quiet_policy() -> HealthPolicy {
    HealthPolicy {
        auto_disable_after_ms: 5 * 24 * 3_600_000,
        auto_disable_min_failures: 10,
        notify_operator: false,
    }
}

/// Consumes any wake-up already stored in a work signal, so the next wait sees only new ones.
pub async fn drain(signal: &tokio::sync::Notify) {
    while tokio::time::timeout(Duration::from_millis(100), signal.notified())
        .await
        .is_ok()
    {}
}

/// Waits up to `within` for a wake-up of `signal`.
pub async fn woken(signal: &tokio::sync::Notify, within: Duration) -> bool {
    tokio::time::timeout(within, signal.notified())
        .await
        .is_ok()
}

/// Publishes one event to `webhook`, claims its delivery as `node-a` and records it delivered.
pub async fn deliver_one(store: &dyn Store, webhook: &Webhook) {
    publish_many(store, webhook, 1, now() - 1_000).await;
    let claimed = store
        .claim_due(&claim("node-a", now(), 10))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "the one due delivery is claimed");
    let outcomes: Vec<_> = claimed
        .iter()
        .map(|c| outcome(c, Some(200), NextState::Delivered))
        .collect();
    store
        .record_outcomes("node-a", outcomes.into(), &quiet_policy())
        .await
        .expect("record");
}
