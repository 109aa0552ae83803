//! Steering one webhook: test sends, its secret and rotation, retriggers and its summary.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use tidings_core::ids::{IdKind, new_id};
use tidings_core::matching::EventScope;
use tidings_core::signing::{generate_secret, key_id};
use tidings_core::{now_millis, stats};
use tidings_store::{ClaimedDelivery, DeliveryStatus, NewEvent, NextState, RetriggerFilter};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::webhooks::load;
use crate::AppState;
use crate::auth::Caller;
use crate::dto::{parse_time, time};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};

/// Longest grace period of a rotated secret (7 days).
const MAX_GRACE_S: u64 = 7 * 24 * 3600;
const DEFAULT_GRACE_S: u64 = 24 * 3600;
/// Deliveries re-queued per statement: each batch is a short commit, so publishes and outcomes
/// interleave with a large retrigger.
const RETRIGGER_BATCH: u32 = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(test_webhook))
        .routes(routes!(get_secret))
        .routes(routes!(rotate_secret))
        .routes(routes!(retrigger))
        .routes(routes!(summary))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    /// The event type whose catalog example is sent.
    event_type: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TestResult {
    /// The test delivery, kept in the delivery log and marked as a test.
    delivery_id: String,
    event_id: String,
    /// `delivered` or `failed`.
    status: String,
    status_code: Option<u16>,
    duration_ms: i64,
    error_kind: Option<String>,
    error_message: Option<String>,
    response_excerpt: Option<String>,
    response_headers: BTreeMap<String, String>,
}

/// Send the example of an event type to the webhook now and wait for the answer (within the
/// webhook's timeout). Recorded as a test; never counts towards disabling the webhook.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/webhooks/{id}/test", tag = "webhooks", params(("ws" = String, Path), ("id" = String, Path)), request_body = TestRequest,
    responses((status = 200, body = TestResult), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn test_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    Json(body): Json<TestRequest>,
) -> ApiResult<Json<TestResult>> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    let webhook = load(&state, &workspace.id, &id).await?;
    let resolved = state
        .types
        .get(state.store.as_ref(), &body.event_type)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(
                "event_type",
                format!("`{}` is not an event type of this server", body.event_type),
            )
        })?;
    let example = resolved.def.example.clone().ok_or_else(|| {
        ApiError::invalid(
            "event_type",
            format!("`{}` has no example to send", body.event_type),
        )
    })?;
    let now = now_millis();
    let data = example.to_string();
    let claimed = ClaimedDelivery {
        delivery_id: new_id(IdKind::Delivery),
        attempts: 0,
        event_id: new_id(IdKind::Event),
        event_type: body.event_type.clone(),
        occurred_at: now,
        data: Arc::from(data.as_str()),
        webhook: Arc::new(webhook),
    };
    let event = NewEvent {
        id: claimed.event_id.clone(),
        workspace_id: workspace.id.clone(),
        event_type: body.event_type,
        occurred_at: now,
        received_at: now,
        scope: EventScope::default().completed_from(&example),
        data,
        idempotency_key: None,
        idempotency_until: now,
        deliveries: Vec::new(),
    };
    // Stored as a finished test delivery: never retried, never touching the webhook's state.
    let outcome = state.dispatcher.send_now(claimed.clone()).await;
    let attempt = outcome.attempt.clone();
    let status = if outcome.next == NextState::Delivered {
        "delivered"
    } else {
        "failed"
    };
    state.store.record_test_send(event, outcome).await?;
    Ok(Json(TestResult {
        delivery_id: claimed.delivery_id,
        event_id: claimed.event_id,
        status: status.to_owned(),
        status_code: attempt.status_code,
        duration_ms: attempt.duration_ms,
        error_kind: attempt.error_kind.map(|k| k.as_str().to_owned()),
        error_message: attempt.error_message,
        response_excerpt: attempt.response_excerpt,
        response_headers: attempt.response_headers,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SecretView {
    /// The current signing secret.
    secret: String,
    /// Sent as `webhook-key-id` with `standard` signatures.
    key_id: String,
    /// The secret being rotated out, while it still signs.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<PreviousSecret>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PreviousSecret {
    key_id: String,
    /// When it stops signing.
    expires_at: String,
}

fn secret_view(webhook: &tidings_store::Webhook, now: i64) -> SecretView {
    SecretView {
        secret: webhook.secret.clone(),
        key_id: key_id(&webhook.secret),
        previous: webhook
            .previous_secret
            .as_ref()
            .filter(|(_, until)| *until > now)
            .map(|(secret, until)| PreviousSecret {
                key_id: key_id(secret),
                expires_at: time(*until),
            }),
    }
}

/// Reveal the webhook's signing secret.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/webhooks/{id}/secret", tag = "webhooks", params(("ws" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = SecretView), (status = 404, body = ErrorBody)))]
async fn get_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<Json<SecretView>> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    let webhook = load(&state, &workspace.id, &id).await?;
    Ok(Json(secret_view(&webhook, now_millis())))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// How long the old secret keeps signing alongside the new one (default 86400, at most 604800;
    /// 0 stops it at once).
    grace_period_s: Option<u64>,
}

/// Make a new signing secret. The old one keeps signing alongside it for the grace period.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/webhooks/{id}/secret/rotate", tag = "webhooks", params(("ws" = String, Path), ("id" = String, Path)), request_body = RotateRequest,
    responses((status = 200, body = SecretView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<SecretView>> {
    // The body is optional: no body means the default grace period.
    let body: RotateRequest =
        crate::extract::optional_json(&body, "grace_period_s", "rotation request")?;
    let workspace = super::workspace(&state, &caller, &ws).await?;
    let mut webhook = load(&state, &workspace.id, &id).await?;
    let grace = body.grace_period_s.unwrap_or(DEFAULT_GRACE_S);
    if grace > MAX_GRACE_S {
        return Err(ApiError::invalid(
            "grace_period_s",
            format!("The grace period is at most {MAX_GRACE_S} seconds (7 days)"),
        ));
    }
    let now = now_millis();
    let old = std::mem::replace(&mut webhook.secret, generate_secret());
    webhook.previous_secret =
        (grace > 0).then(|| (old, now + i64::try_from(grace * 1000).unwrap_or(i64::MAX)));
    webhook.updated_at = now;
    state.store.update_webhook(&webhook).await?;
    Ok(Json(secret_view(&webhook, now)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RetriggerRequest {
    /// Deliveries created at or after (RFC 3339).
    since: String,
    /// Deliveries created before (RFC 3339); default now.
    until: Option<String>,
    /// `failed`, `skipped` or `delivered`, or a list of them; default `failed`.
    #[schema(value_type = Option<Vec<String>>)]
    status: Option<StatusList>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StatusList {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RetriggerResult {
    /// How many deliveries were queued again.
    retriggered: u64,
}

/// Queue matching finished deliveries again (same delivery ids and `webhook-id`s). Deliveries
/// already pending are left alone, so calling it twice sends nothing twice.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/webhooks/{id}/retrigger", tag = "webhooks", params(("ws" = String, Path), ("id" = String, Path)), request_body = RetriggerRequest,
    responses((status = 200, body = RetriggerResult), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn retrigger(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    Json(body): Json<RetriggerRequest>,
) -> ApiResult<Json<RetriggerResult>> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    load(&state, &workspace.id, &id).await?;
    let now = now_millis();
    let since = parse_time("since", &body.since)?;
    let until = body
        .until
        .as_deref()
        .map(|t| parse_time("until", t))
        .transpose()?
        .unwrap_or(now + 1);
    if since >= until {
        return Err(ApiError::invalid(
            "until",
            "`until` must be later than `since`",
        ));
    }
    let names = match body.status {
        None => vec!["failed".to_owned()],
        Some(StatusList::One(one)) => vec![one],
        Some(StatusList::Many(many)) => many,
    };
    let mut statuses = Vec::with_capacity(names.len());
    for name in &names {
        match DeliveryStatus::parse(name) {
            Some(DeliveryStatus::Pending) | None => {
                return Err(ApiError::invalid(
                    "status",
                    "The status must be failed, skipped or delivered (pending deliveries are queued already)",
                ));
            }
            Some(status) => statuses.push(status),
        }
    }
    if statuses.is_empty() {
        return Err(ApiError::invalid("status", "name at least one status"));
    }
    let filter = RetriggerFilter {
        webhook_id: id,
        since,
        until,
        statuses,
    };
    let mut retriggered = 0;
    loop {
        let batch = state
            .store
            .retrigger(&workspace.id, &filter, RETRIGGER_BATCH, now)
            .await?;
        retriggered += batch;
        if batch < u64::from(RETRIGGER_BATCH) {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(Json(RetriggerResult { retriggered }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct SummaryQuery {
    /// Start of the period (RFC 3339); default 24 hours before `until`.
    since: Option<String>,
    /// End of the period (RFC 3339); default now.
    until: Option<String>,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
struct StatusCounts {
    pending: u64,
    delivered: u64,
    failed: u64,
    skipped: u64,
}

impl StatusCounts {
    fn add(&mut self, status: DeliveryStatus, count: u64) {
        match status {
            DeliveryStatus::Pending => self.pending += count,
            DeliveryStatus::Delivered => self.delivered += count,
            DeliveryStatus::Failed => self.failed += count,
            DeliveryStatus::Skipped => self.skipped += count,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Latency {
    /// Attempts measured in the period.
    attempts: u64,
    /// Median attempt latency in ms (from hourly histograms, so within a bucket's width).
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct LastFailure {
    at: String,
    reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Summary {
    since: String,
    until: String,
    /// Deliveries created in the period, by status (test sends excluded).
    counts: StatusCounts,
    by_event_type: BTreeMap<String, StatusCounts>,
    /// delivered / (delivered + failed), when anything finished.
    success_rate: Option<f64>,
    latency: Latency,
    last_success_at: Option<String>,
    last_failure: Option<LastFailure>,
}

/// Figures for a period: deliveries by status and event type, success rate, attempt latency, and
/// the last success and failure.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/webhooks/{id}/summary", tag = "webhooks", params(("ws" = String, Path), ("id" = String, Path), SummaryQuery),
    responses((status = 200, body = Summary), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    Query(query): Query<SummaryQuery>,
) -> ApiResult<Json<Summary>> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    let webhook = load(&state, &workspace.id, &id).await?;
    let until = query
        .until
        .as_deref()
        .map(|t| parse_time("until", t))
        .transpose()?
        .unwrap_or_else(|| now_millis() + 1);
    let since = query
        .since
        .as_deref()
        .map(|t| parse_time("since", t))
        .transpose()?
        .unwrap_or(until - 24 * 3600 * 1000);
    if since >= until {
        return Err(ApiError::invalid(
            "until",
            "`until` must be later than `since`",
        ));
    }
    let data = state
        .store
        .webhook_summary(&webhook.id, since, until)
        .await?;
    let mut counts = StatusCounts::default();
    let mut by_event_type: BTreeMap<String, StatusCounts> = BTreeMap::new();
    for (status, event_type, count) in data.counts {
        counts.add(status, count);
        by_event_type
            .entry(event_type)
            .or_default()
            .add(status, count);
    }
    let finished = counts.delivered + counts.failed;
    let health = webhook.health;
    Ok(Json(Summary {
        since: time(since),
        until: time(until),
        success_rate: (finished > 0).then(|| counts.delivered as f64 / finished as f64),
        counts,
        by_event_type,
        latency: Latency {
            attempts: data.latency.iter().map(|(_, n)| n).sum(),
            p50_ms: stats::percentile(&data.latency, 0.50),
            p95_ms: stats::percentile(&data.latency, 0.95),
        },
        last_success_at: health.last_success_at.map(time),
        last_failure: health.last_failure_at.map(|at| LastFailure {
            at: time(at),
            reason: health.last_failure_reason,
        }),
    }))
}
