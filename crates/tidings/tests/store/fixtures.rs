//! Small builders shared by the stories: workspaces, webhooks, events, claims and outcomes.

use std::collections::BTreeMap;
use std::time::Duration;

use tidings_core::UnixMillis;
use tidings_core::ids::{IdKind, new_id};
use tidings_core::matching::{EventScope, LevelPrecedence};
use tidings_core::outcome::ErrorKind;
use tidings_core::webhook::{Filters, PayloadFormat, Signing, WebhookSpec, WebhookState};
use tidings_store::*;

/// A lease long enough that no story runs into it by accident.
pub const LONG_LEASE_MS: i64 = 600_000;

pub fn now() -> UnixMillis {
    tidings_core::now_millis()
}

pub fn new_workspace(name: &str) -> Workspace {
    let at = now();
    Workspace {
        id: new_id(IdKind::Workspace),
        name: name.to_owned(),
        level_precedence: LevelPrecedence::All,
        created_at: at,
        updated_at: at,
    }
}

pub async fn workspace(store: &dyn Store) -> Workspace {
    let workspace = new_workspace("Acme");
    store
        .create_workspace(&workspace)
        .await
        .expect("create a workspace");
    workspace
}

pub fn spec(name: &str) -> WebhookSpec {
    WebhookSpec {
        name: name.to_owned(),
        description: "receives everything".to_owned(),
        url: format!("https://hooks.example.com/{name}"),
        event_types: vec!["lead.created.v1".to_owned()],
        filters: Filters::default(),
        headers: BTreeMap::from([("x-team".to_owned(), "sales".to_owned())]),
        signing: Signing::default(),
        payload_format: PayloadFormat::Envelope,
        timeout_ms: 10_000,
        retry_schedule: None,
        rate_limit_per_s: None,
    }
}

pub fn new_webhook(workspace_id: &str, state: WebhookState) -> Webhook {
    let at = now();
    let id = new_id(IdKind::Webhook);
    Webhook {
        spec: spec(&id),
        id,
        workspace_id: workspace_id.to_owned(),
        secret: "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=".to_owned(),
        previous_secret: None,
        state,
        disabled_reason: match state {
            WebhookState::Disabled => Some("turned off by hand".to_owned()),
            _ => None,
        },
        health: WebhookHealth::default(),
        created_at: at,
        updated_at: at,
    }
}

pub async fn webhook(store: &dyn Store, workspace_id: &str, state: WebhookState) -> Webhook {
    let webhook = new_webhook(workspace_id, state);
    store
        .create_webhook(&webhook)
        .await
        .expect("create a webhook");
    webhook
}

pub async fn webhook_with_spec(
    store: &dyn Store,
    workspace_id: &str,
    change: impl FnOnce(&mut WebhookSpec),
) -> Webhook {
    let mut webhook = new_webhook(workspace_id, WebhookState::Active);
    change(&mut webhook.spec);
    store
        .create_webhook(&webhook)
        .await
        .expect("create a webhook");
    webhook
}

/// An event of `event_type` received at `received_at`, with one pending delivery per webhook.
pub fn new_event(
    workspace_id: &str,
    event_type: &str,
    received_at: UnixMillis,
    webhooks: &[&Webhook],
) -> NewEvent {
    NewEvent {
        id: new_id(IdKind::Event),
        workspace_id: workspace_id.to_owned(),
        event_type: event_type.to_owned(),
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

/// Publishes one event and returns what the store answered for it.
pub async fn publish(store: &dyn Store, event: NewEvent) -> Published {
    let mut published = store.publish(vec![event]).await.expect("publish an event");
    assert_eq!(published.len(), 1, "one answer per event published");
    published.remove(0)
}

/// Publishes `count` events of `event_type` for one webhook, all due at `received_at`; returns
/// the delivery ids in creation order.
pub async fn publish_many(
    store: &dyn Store,
    webhook: &Webhook,
    count: usize,
    received_at: UnixMillis,
) -> Vec<String> {
    let events: Vec<NewEvent> = (0..count)
        .map(|_| {
            new_event(
                &webhook.workspace_id,
                "lead.created.v1",
                received_at,
                &[webhook],
            )
        })
        .collect();
    let mut ids = Vec::with_capacity(count);
    // Several calls of at most 100 events, as the API's batch endpoint would make.
    for chunk in events.chunks(100) {
        for published in store.publish(chunk.to_vec()).await.expect("publish events") {
            assert_eq!(published.delivery_ids.len(), 1);
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

pub async fn claim_due(store: &dyn Store, claim: &Claim) -> Vec<ClaimedDelivery> {
    store.claim_due(claim).await.expect("claim due deliveries")
}

/// The delivery ids of claimed deliveries, sorted.
pub fn ids_of(claimed: &[ClaimedDelivery]) -> Vec<String> {
    let mut ids: Vec<String> = claimed.iter().map(|c| c.delivery_id.clone()).collect();
    ids.sort();
    ids
}

pub fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

pub fn attempt(
    started_at: UnixMillis,
    duration_ms: i64,
    status_code: Option<u16>,
) -> AttemptRecord {
    let error_kind = match status_code {
        Some(code) if (200..300).contains(&code) => None,
        Some(_) => Some(ErrorKind::HttpStatus),
        None => Some(ErrorKind::Timeout),
    };
    AttemptRecord {
        started_at,
        duration_ms,
        status_code,
        error_kind,
        error_message: match status_code {
            None => Some("no response within 10 s".to_owned()),
            Some(_) => None,
        },
        response_excerpt: status_code.map(|code| format!("{{\"answer\":{code}}}")),
        request_headers: BTreeMap::from([
            ("content-type".to_owned(), "application/json".to_owned()),
            ("webhook-id".to_owned(), "evt_x".to_owned()),
        ]),
        response_headers: match status_code {
            Some(_) => BTreeMap::from([("server".to_owned(), "receiver/1.0".to_owned())]),
            None => BTreeMap::new(),
        },
    }
}

pub fn outcome(
    delivery_id: &str,
    webhook_id: &str,
    record: AttemptRecord,
    next: NextState,
) -> Outcome {
    Outcome {
        delivery_id: delivery_id.to_owned(),
        webhook_id: webhook_id.to_owned(),
        attempt: record,
        next,
        disable_webhook: None,
    }
}

/// A 200 answered now after 12 ms.
pub fn delivered(claimed: &ClaimedDelivery) -> Outcome {
    outcome(
        &claimed.delivery_id,
        &claimed.webhook.id,
        attempt(now(), 12, Some(200)),
        NextState::Delivered,
    )
}

/// A 500 answered now, with the given next state.
pub fn failed(claimed: &ClaimedDelivery, next: NextState) -> Outcome {
    outcome(
        &claimed.delivery_id,
        &claimed.webhook.id,
        attempt(now(), 30, Some(500)),
        next,
    )
}

/// A policy that never disables anything and tells the operator nothing.
pub fn quiet_policy() -> HealthPolicy {
    HealthPolicy {
        auto_disable_after_ms: 5 * 24 * 3_600_000,
        auto_disable_min_failures: 10,
        notify_operator: false,
    }
}

pub async fn record(store: &dyn Store, node: &str, outcomes: Vec<Outcome>, policy: &HealthPolicy) {
    store
        .record_outcomes(node, outcomes.into(), policy)
        .await
        .expect("record outcomes");
}

pub async fn delivery(store: &dyn Store, workspace_id: &str, id: &str) -> Delivery {
    store
        .get_delivery(workspace_id, id)
        .await
        .expect("read a delivery")
}

pub async fn status_of(store: &dyn Store, workspace_id: &str, id: &str) -> DeliveryStatus {
    delivery(store, workspace_id, id).await.status
}

pub async fn webhook_now(store: &dyn Store, webhook: &Webhook) -> Webhook {
    store
        .get_webhook(&webhook.workspace_id, &webhook.id)
        .await
        .expect("read a webhook")
}

/// Pauses, resumes or disables a webhook through an update, as the API does.
pub async fn set_state(store: &dyn Store, webhook: &Webhook, state: WebhookState) {
    let mut changed = webhook_now(store, webhook).await;
    changed.state = state;
    changed.updated_at = now();
    store
        .update_webhook(&changed)
        .await
        .expect("change a webhook's state");
}

/// Every notification due now, claimed with a long lease.
pub async fn notifications_due(store: &dyn Store, at: UnixMillis) -> Vec<Notification> {
    store
        .claim_notifications(at, 1_000, LONG_LEASE_MS)
        .await
        .expect("claim notifications")
}

pub fn count_of_type(notifications: &[Notification], event_type: &str) -> usize {
    notifications
        .iter()
        .filter(|n| n.event_type == event_type)
        .count()
}

pub fn assert_not_found<T: std::fmt::Debug>(result: StoreResult<T>, what: &str) {
    match result {
        Err(StoreError::NotFound) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

pub fn assert_attempt(got: &Attempt, number: u32, want: &AttemptRecord) {
    assert_eq!(got.number, number, "attempt number");
    let record = &got.record;
    assert_eq!(record.started_at, want.started_at, "started_at");
    assert_eq!(record.duration_ms, want.duration_ms, "duration_ms");
    assert_eq!(record.status_code, want.status_code, "status_code");
    assert_eq!(record.error_kind, want.error_kind, "error_kind");
    assert_eq!(record.error_message, want.error_message, "error_message");
    assert_eq!(
        record.response_excerpt, want.response_excerpt,
        "response_excerpt"
    );
    assert_eq!(
        record.request_headers, want.request_headers,
        "request_headers"
    );
    assert_eq!(
        record.response_headers, want.response_headers,
        "response_headers"
    );
}

/// Consumes any wake-up already stored in a work signal, so the next wait sees only new ones.
pub async fn drain(signal: &tokio::sync::Notify) {
    for _ in 0..20 {
        if tokio::time::timeout(Duration::from_millis(50), signal.notified())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Waits up to a second for a wake-up of `signal` that `action` causes.
pub async fn wakes<F: Future>(signal: &tokio::sync::Notify, action: F) -> bool {
    drain(signal).await;
    let notified = signal.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    action.await;
    tokio::time::timeout(Duration::from_secs(1), notified)
        .await
        .is_ok()
}
