//! Publishing events (single and batch) with fan-out, and reading them back.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use tidings_core::data::{self, Data};
use tidings_core::ids::{IdKind, is_id, new_id};
use tidings_core::matching::{EventScope, apply_precedence, level, matches};
use tidings_core::webhook::WebhookState;
use tidings_store::{DeliveryStatus, Event, NewDelivery, NewEvent, StoreError, Webhook, Workspace};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::deliveries::DeliveryView;
use crate::AppState;
use crate::auth::Caller;
use crate::cache::FreshMap;
use crate::dto::{ListResponse, PageQuery, parse_time, time};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};

/// Largest request body a receiver can be sent (SPEC section 3).
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;
/// What the envelope adds around `data` at most: id, type, timestamp and punctuation.
const ENVELOPE_OVERHEAD: usize = 400;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(
            routes!(publish_event, list_events)
                .layer(DefaultBodyLimit::max(MAX_EVENT_BYTES + 64 * 1024)),
        )
        .routes(routes!(publish_batch).layer(DefaultBodyLimit::max(64 * 1024 * 1024)))
        .routes(routes!(get_event))
}

/// What fan-out reads of a workspace: the workspace itself (its level precedence) and its webhooks.
pub struct Fanout {
    pub workspace: Workspace,
    pub webhooks: Vec<Webhook>,
}

/// Fan-out's view of each workspace, loaded again after changes made through this node and every
/// few seconds (changes made through another node). Publishing reads nothing else per request: a
/// workspace read and a webhooks read per publish were two round trips each, as many as the
/// publish's own write.
pub struct FanoutCache {
    workspaces: FreshMap<Arc<Fanout>>,
}

const FANOUT_REFRESH: Duration = Duration::from_secs(2);

impl Default for FanoutCache {
    fn default() -> Self {
        Self {
            workspaces: FreshMap::new(FANOUT_REFRESH),
        }
    }
}

impl FanoutCache {
    pub fn forget(&self, workspace_id: &str) {
        self.workspaces.remove(workspace_id);
    }

    /// The workspace `id` and its webhooks, as the caller may see them (404 otherwise).
    async fn get(&self, state: &AppState, caller: &Caller, id: &str) -> ApiResult<Arc<Fanout>> {
        caller.check_workspace(id)?;
        if let Some(fanout) = self.workspaces.get(id) {
            return Ok(fanout);
        }
        let workspace = super::workspace(state, caller, id).await?;
        let webhooks = state.store.workspace_webhooks(id).await?;
        let fanout = Arc::new(Fanout {
            workspace,
            webhooks,
        });
        self.workspaces.insert(id.to_owned(), fanout.clone());
        Ok(fanout)
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    /// An event type name from the catalog.
    #[serde(rename = "type")]
    event_type: String,
    /// When it happened (RFC 3339); defaults to now.
    occurred_at: Option<String>,
    /// The event's data object, validated against the type's schema. Stored and delivered as
    /// written.
    #[schema(value_type = Object)]
    data: Box<RawValue>,
    campaign_id: Option<String>,
    client_id: Option<String>,
    agent_id: Option<String>,
    category_id: Option<String>,
    /// The same key within 24 h returns the first result instead of publishing again.
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PublishBatch {
    events: Vec<PublishEvent>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Published {
    /// The event id (`webhook-id` on every delivery of it).
    id: String,
    /// The deliveries made for it, one per receiving webhook.
    deliveries: Vec<String>,
    /// True when this is the earlier result of the same idempotency key.
    duplicate: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct BatchPublished {
    events: Vec<Published>,
}

fn optional_id(at: At, name: &str, value: Option<String>) -> ApiResult<Option<String>> {
    match value {
        Some(v) if v.is_empty() || v.len() > 200 => {
            let field = at.field(name);
            let message = format!("`{field}` must be 1 to 200 characters");
            Err(ApiError::invalid(field, message))
        }
        other => Ok(other),
    }
}

/// Where an event sits in its request: alone, or at an index of a batch. Field names are spelt
/// out only for an error, not for every event of every batch.
#[derive(Debug, Clone, Copy)]
struct At(Option<usize>);

impl At {
    /// `name`, or `events[i].name` inside a batch.
    fn field(self, name: &str) -> String {
        match self.0 {
            Some(index) => format!("events[{index}].{name}"),
            None => name.to_owned(),
        }
    }

    /// What a message about the whole event starts with: `events[i]: ` inside a batch.
    fn prefix(self) -> String {
        match self.0 {
            Some(index) => format!("events[{index}]: "),
            None => String::new(),
        }
    }
}

/// Checks one event and works out its deliveries.
async fn prepare(
    state: &AppState,
    workspace: &Workspace,
    webhooks: &[Webhook],
    event: PublishEvent,
    at: At,
    now: i64,
) -> ApiResult<NewEvent> {
    let resolved = state
        .types
        .get(state.store.as_ref(), &event.event_type)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(
                at.field("type"),
                format!("`{}` is not an event type of this server", event.event_type),
            )
        })?;
    // Read without building a `serde_json::Value`, and stored as the text it arrived as: the
    // raw value has already been checked to be JSON.
    let parsed = data::parse(event.data.get())
        .map_err(|e| ApiError::invalid(at.field("data"), format!("`data` cannot be read: {e}")))?;
    if !matches!(parsed, Data::Object(_)) {
        return Err(ApiError::invalid(
            at.field("data"),
            "The event's `data` must be a JSON object",
        ));
    }
    if let Some(schema) = &resolved.schema
        && let Err(violation) = schema.check_data(&parsed)
    {
        return Err(ApiError::invalid(
            format!(
                "{}{}",
                at.field("data"),
                if violation.path == "/" {
                    String::new()
                } else {
                    violation.path.clone()
                }
            ),
            format!(
                "`data` does not match the schema of {} at {}: {}",
                event.event_type, violation.path, violation.message
            ),
        ));
    }
    let length = event.data.get().len();
    if length + ENVELOPE_OVERHEAD > MAX_EVENT_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "{}the event is {} bytes; deliveries are limited to 1 MiB",
            at.prefix(),
            length
        )));
    }
    let occurred_at = match &event.occurred_at {
        Some(text) => parse_time(&at.field("occurred_at"), text)?,
        None => now,
    };
    if let Some(key) = &event.idempotency_key
        && (key.is_empty() || key.len() > 255)
    {
        return Err(ApiError::invalid(
            at.field("idempotency_key"),
            "The idempotency key must be 1 to 255 characters",
        ));
    }
    let scope = EventScope {
        campaign_id: optional_id(at, "campaign_id", event.campaign_id)?,
        client_id: optional_id(at, "client_id", event.client_id)?,
        agent_id: optional_id(at, "agent_id", event.agent_id)?,
        category_id: optional_id(at, "category_id", event.category_id)?,
    }
    .completed_from_data(&parsed);
    drop(parsed);

    let matching: Vec<&Webhook> = webhooks
        .iter()
        .filter(|w| {
            matches(
                &w.spec.event_types,
                &w.spec.filters,
                &event.event_type,
                &scope,
            )
        })
        .collect();
    let levels: Vec<_> = matching.iter().map(|w| level(&w.spec.filters)).collect();
    let keep = apply_precedence(&levels, workspace.level_precedence);
    let deliveries = matching
        .iter()
        .zip(keep)
        .filter(|(_, keep)| *keep)
        .map(|(w, _)| NewDelivery {
            id: new_id(IdKind::Delivery),
            webhook_id: w.id.clone(),
            // A paused webhook's deliveries wait; a disabled one's are kept but never sent.
            status: if w.state == WebhookState::Disabled {
                DeliveryStatus::Skipped
            } else {
                DeliveryStatus::Pending
            },
        })
        .collect();
    Ok(NewEvent {
        id: new_id(IdKind::Event),
        workspace_id: workspace.id.clone(),
        event_type: event.event_type,
        occurred_at,
        received_at: now,
        data: String::from(Box::<str>::from(event.data)),
        scope,
        idempotency_key: event.idempotency_key,
        idempotency_until: now + state.settings.idempotency_window_ms,
        deliveries,
    })
}

async fn publish(
    state: &AppState,
    caller: &Caller,
    ws: &str,
    events: Vec<PublishEvent>,
    batch: bool,
) -> ApiResult<Vec<Published>> {
    if caller.portal {
        // The dashboard's people manage webhooks; events come from the platform itself.
        return Err(ApiError::Forbidden(
            "a portal session cannot publish events".into(),
        ));
    }
    let fanout = state.fanout.get(state, caller, ws).await?;
    let (workspace, webhooks) = (&fanout.workspace, &fanout.webhooks);
    let now = tidings_core::now_millis();
    let mut prepared = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        let at = At(batch.then_some(index));
        prepared.push(prepare(state, workspace, webhooks, event, at, now).await?);
    }
    let count = prepared.len() as u64;
    // Durable before we answer: publish returns only after the commit.
    let published = match state.store.publish(prepared).await {
        Ok(published) => published,
        Err(StoreError::NotFound) => {
            // Deleted through another node since fan-out loaded it.
            state.fanout.forget(ws);
            return Err(ApiError::NotFound("workspace_not_found"));
        }
        Err(other) => return Err(other.into()),
    };
    metrics::counter!("tidings_events_published_total").increment(count);
    Ok(published
        .into_iter()
        .map(|p| Published {
            id: p.event_id,
            deliveries: p.delivery_ids,
            duplicate: p.duplicate,
        })
        .collect())
}

/// Publish one event. It and all its deliveries are stored before the 202.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/events", tag = "events", params(("ws" = String, Path)), request_body = PublishEvent,
    responses((status = 202, body = Published), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn publish_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<PublishEvent>,
) -> ApiResult<(StatusCode, Json<Published>)> {
    let mut published = publish(&state, &caller, &ws, vec![body], false).await?;
    let first = published
        .pop()
        .ok_or_else(|| ApiError::Internal("publishing returned no result".into()))?;
    Ok((StatusCode::ACCEPTED, Json(first)))
}

/// Publish up to 1000 events at once; all are checked first, and either all are stored or none.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/events/batch", tag = "events", params(("ws" = String, Path)), request_body = PublishBatch,
    responses((status = 202, body = BatchPublished), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn publish_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<PublishBatch>,
) -> ApiResult<(StatusCode, Json<BatchPublished>)> {
    if body.events.is_empty() || body.events.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "events",
            format!("A batch holds 1 to {MAX_BATCH} events"),
        ));
    }
    let events = publish(&state, &caller, &ws, body.events, true).await?;
    Ok((StatusCode::ACCEPTED, Json(BatchPublished { events })))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    occurred_at: String,
    received_at: String,
    data: Value,
    campaign_id: Option<String>,
    client_id: Option<String>,
    agent_id: Option<String>,
    category_id: Option<String>,
    idempotency_key: Option<String>,
    /// Present when one event is fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    deliveries: Option<Vec<DeliveryView>>,
}

pub fn event_view(event: Event, deliveries: Option<Vec<DeliveryView>>) -> EventView {
    EventView {
        id: event.id,
        event_type: event.event_type,
        occurred_at: time(event.occurred_at),
        received_at: time(event.received_at),
        data: serde_json::from_str(&event.data).unwrap_or(Value::Null),
        campaign_id: event.scope.campaign_id,
        client_id: event.scope.client_id,
        agent_id: event.scope.agent_id,
        category_id: event.scope.category_id,
        idempotency_key: event.idempotency_key,
        deliveries,
    }
}

/// List a workspace's events, newest first.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/events", tag = "events", params(("ws" = String, Path), PageQuery),
    responses((status = 200, body = ListResponse<EventView>), (status = 404, body = ErrorBody)))]
async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<ListResponse<EventView>>> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    let (page, limit) = query.page()?;
    let found = state.store.list_events(&workspace.id, &page).await?;
    Ok(Json(ListResponse::from_fetched(
        found,
        limit,
        |e| e.id.clone(),
        |e| event_view(e, None),
    )))
}

/// Get an event with its deliveries.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/events/{id}", tag = "events", params(("ws" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = EventView), (status = 404, body = ErrorBody)))]
async fn get_event(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<Json<EventView>> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    if !is_id(IdKind::Event, &id) {
        return Err(ApiError::NotFound("event_not_found"));
    }
    let event = state
        .store
        .get_event(&workspace.id, &id)
        .await
        .map_err(ApiError::missing_as("event_not_found"))?;
    let deliveries = state.store.event_deliveries(&workspace.id, &id).await?;
    Ok(Json(event_view(
        event,
        Some(deliveries.into_iter().map(DeliveryView::from).collect()),
    )))
}
