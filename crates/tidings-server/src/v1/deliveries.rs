//! The delivery log: what was sent where, and every attempt.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use tidings_core::ids::{IdKind, is_id};
use tidings_core::outcome::ErrorKind;
use tidings_store::{Attempt, Delivery, DeliveryFilter, DeliveryStatus};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::events::{EventView, event_view};
use crate::AppState;
use crate::auth::Caller;
use crate::dto::{ListResponse, PageQuery, parse_time, time};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(retry_delivery))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    id: String,
    event_id: String,
    webhook_id: String,
    event_type: String,
    /// `pending`, `delivered`, `failed` or `skipped`.
    status: String,
    attempt_count: u32,
    next_attempt_at: Option<String>,
    last_status_code: Option<u16>,
    last_error_kind: Option<String>,
    /// Made by a test send.
    is_test: bool,
    created_at: String,
    updated_at: String,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            webhook_id: d.webhook_id,
            event_type: d.event_type,
            status: d.status.as_str().to_owned(),
            attempt_count: d.attempts,
            next_attempt_at: d.next_attempt_at.map(time),
            last_status_code: d.last_status_code,
            last_error_kind: d.last_error_kind.map(|k: ErrorKind| k.as_str().to_owned()),
            is_test: d.is_test,
            created_at: time(d.created_at),
            updated_at: time(d.updated_at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AttemptView {
    number: u32,
    started_at: String,
    duration_ms: i64,
    status_code: Option<u16>,
    error_kind: Option<String>,
    error_message: Option<String>,
    /// The first 4 KiB of the response body.
    response_excerpt: Option<String>,
    /// Headers sent, signatures included; custom header values are redacted.
    request_headers: BTreeMap<String, String>,
    response_headers: BTreeMap<String, String>,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        Self {
            number: a.number,
            started_at: time(a.record.started_at),
            duration_ms: a.record.duration_ms,
            status_code: a.record.status_code,
            error_kind: a.record.error_kind.map(|k| k.as_str().to_owned()),
            error_message: a.record.error_message,
            response_excerpt: a.record.response_excerpt,
            request_headers: a.record.request_headers,
            response_headers: a.record.response_headers,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DeliveryDetail {
    #[serde(flatten)]
    delivery: DeliveryView,
    /// The event this delivery carries.
    event: EventView,
    attempts: Vec<AttemptView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct DeliveryQuery {
    webhook_id: Option<String>,
    /// `pending`, `delivered`, `failed` or `skipped`.
    status: Option<String>,
    event_type: Option<String>,
    /// Created at or after (RFC 3339).
    since: Option<String>,
    /// Created before (RFC 3339).
    until: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List deliveries, newest first, filtered by webhook, status, event type and time.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/deliveries", tag = "deliveries", params(("ws" = String, Path), DeliveryQuery),
    responses((status = 200, body = ListResponse<DeliveryView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Query(query): Query<DeliveryQuery>,
) -> ApiResult<Json<ListResponse<DeliveryView>>> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    let (page, limit) = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .page()?;
    let status = query
        .status
        .as_deref()
        .map(|s| {
            DeliveryStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    "The status must be pending, delivered, failed or skipped",
                )
            })
        })
        .transpose()?;
    let filter = DeliveryFilter {
        webhook_id: query.webhook_id,
        status,
        event_type: query.event_type,
        since: query
            .since
            .as_deref()
            .map(|t| parse_time("since", t))
            .transpose()?,
        until: query
            .until
            .as_deref()
            .map(|t| parse_time("until", t))
            .transpose()?,
    };
    let found = state
        .store
        .list_deliveries(&workspace.id, &filter, &page)
        .await?;
    Ok(Json(ListResponse::from_fetched(
        found,
        limit,
        |d| d.id.clone(),
        DeliveryView::from,
    )))
}

/// Get a delivery with every attempt.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/deliveries/{id}", tag = "deliveries", params(("ws" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = DeliveryDetail), (status = 404, body = ErrorBody)))]
async fn get_delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<Json<DeliveryDetail>> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    let delivery = load_delivery(&state, &workspace.id, &id).await?;
    let attempts = state.store.list_attempts(&id).await?;
    let event = state
        .store
        .get_event(&workspace.id, &delivery.event_id)
        .await?;
    Ok(Json(DeliveryDetail {
        event: event_view(event, None),
        delivery: delivery.into(),
        attempts: attempts.into_iter().map(AttemptView::from).collect(),
    }))
}

async fn load_delivery(state: &AppState, workspace_id: &str, id: &str) -> ApiResult<Delivery> {
    if !is_id(IdKind::Delivery, id) {
        return Err(ApiError::NotFound("delivery_not_found"));
    }
    state
        .store
        .get_delivery(workspace_id, id)
        .await
        .map_err(ApiError::missing_as("delivery_not_found"))
}

/// Send a delivery once more now (same delivery id and `webhook-id`, a new attempt). A delivery of
/// a paused or disabled webhook waits until the webhook is active again.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/deliveries/{id}/retry", tag = "deliveries", params(("ws" = String, Path), ("id" = String, Path)),
    responses((status = 202, body = DeliveryView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn retry_delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<(axum::http::StatusCode, Json<DeliveryView>)> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    load_delivery(&state, &workspace.id, &id).await?;
    let delivery = state
        .store
        .retry_delivery(&workspace.id, &id, tidings_core::now_millis())
        .await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(delivery.into())))
}
