//! Webhooks: the subscriptions of a workspace.

use std::collections::{BTreeMap, HashSet};

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use tidings_core::ids::{IdKind, is_id, new_id};
use tidings_core::signing::generate_secret;
use tidings_core::webhook::{self, Filters, PayloadFormat, Signing, WebhookSpec, WebhookState};
use tidings_store::Webhook;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::dto::{ListResponse, PageQuery, time};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(enable_webhook))
}

/// A present-but-null field (`"retry_schedule": null`) clears it; an absent field leaves it alone.
fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The states a workspace may set; `disabled` is reached only by Tidings itself.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum SettableState {
    Active,
    Paused,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    /// Absolute `https://` URL.
    url: String,
    /// Event type names this webhook receives (at least one).
    event_types: Vec<String>,
    #[serde(default)]
    filters: Filters,
    /// Extra request headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    signing: Signing,
    #[serde(default)]
    payload_format: PayloadFormat,
    /// 1000 to 30000 (default 10000).
    timeout_ms: Option<u32>,
    /// Seconds to wait after each failed attempt, replacing the server's schedule.
    retry_schedule: Option<Vec<u32>>,
    rate_limit_per_s: Option<u32>,
    state: Option<SettableState>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateWebhook {
    name: Option<String>,
    description: Option<String>,
    url: Option<String>,
    event_types: Option<Vec<String>>,
    filters: Option<Filters>,
    headers: Option<BTreeMap<String, String>>,
    signing: Option<Signing>,
    payload_format: Option<PayloadFormat>,
    timeout_ms: Option<u32>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<u32>>)]
    retry_schedule: Option<Option<Vec<u32>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    rate_limit_per_s: Option<Option<u32>>,
    state: Option<SettableState>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    id: String,
    workspace_id: String,
    name: String,
    description: String,
    url: String,
    event_types: Vec<String>,
    filters: Filters,
    headers: BTreeMap<String, String>,
    signing: Signing,
    payload_format: PayloadFormat,
    timeout_ms: u32,
    retry_schedule: Option<Vec<u32>>,
    rate_limit_per_s: Option<u32>,
    state: WebhookState,
    disabled_reason: Option<String>,
    health: HealthView,
    created_at: String,
    updated_at: String,
    /// The signing secret: only in the response that created the webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// How the endpoint has been doing with real deliveries (test sends do not count).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct HealthView {
    /// The first failed attempt since the last success; a webhook failing long enough is disabled.
    failing_since: Option<String>,
    failures_since_success: u32,
    last_success_at: Option<String>,
    last_failure_at: Option<String>,
    last_failure_reason: Option<String>,
}

pub fn view(webhook: Webhook, with_secret: bool) -> WebhookView {
    let spec = webhook.spec;
    WebhookView {
        id: webhook.id,
        workspace_id: webhook.workspace_id,
        name: spec.name,
        description: spec.description,
        url: spec.url,
        event_types: spec.event_types,
        filters: spec.filters,
        headers: spec.headers,
        signing: spec.signing,
        payload_format: spec.payload_format,
        timeout_ms: spec.timeout_ms,
        retry_schedule: spec.retry_schedule,
        rate_limit_per_s: spec.rate_limit_per_s,
        state: webhook.state,
        disabled_reason: webhook.disabled_reason,
        health: HealthView {
            failing_since: webhook.health.failing_since.map(time),
            failures_since_success: webhook.health.failures_since_success,
            last_success_at: webhook.health.last_success_at.map(time),
            last_failure_at: webhook.health.last_failure_at.map(time),
            last_failure_reason: webhook.health.last_failure_reason,
        },
        created_at: time(webhook.created_at),
        updated_at: time(webhook.updated_at),
        secret: with_secret.then_some(webhook.secret),
    }
}

async fn validate(state: &AppState, spec: &mut WebhookSpec) -> ApiResult<()> {
    let mut seen = HashSet::new();
    spec.event_types.retain(|t| seen.insert(t.clone()));
    let known: HashSet<String> = state
        .types
        .all(state.store.as_ref())
        .await?
        .iter()
        .map(|t| t.def.name.clone())
        .collect();
    webhook::validate_spec(spec, state.settings.target_policy, |t| known.contains(t))
        .map_err(|e| ApiError::invalid(e.field, e.message))
}

pub async fn load(state: &AppState, workspace_id: &str, id: &str) -> ApiResult<Webhook> {
    if !is_id(IdKind::Webhook, id) {
        return Err(ApiError::NotFound("webhook_not_found"));
    }
    state
        .store
        .get_webhook(workspace_id, id)
        .await
        .map_err(ApiError::missing_as("webhook_not_found"))
}

fn settable(state: SettableState) -> WebhookState {
    match state {
        SettableState::Active => WebhookState::Active,
        SettableState::Paused => WebhookState::Paused,
    }
}

/// Create a webhook. The response carries its signing secret.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/webhooks", tag = "webhooks", params(("ws" = String, Path)), request_body = CreateWebhook,
    responses((status = 201, body = WebhookView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookView>)> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    let mut spec = WebhookSpec {
        name: body.name,
        description: body.description,
        url: body.url,
        event_types: body.event_types,
        filters: body.filters,
        headers: body.headers,
        signing: body.signing,
        payload_format: body.payload_format,
        timeout_ms: body.timeout_ms.unwrap_or(webhook::DEFAULT_TIMEOUT_MS),
        retry_schedule: body.retry_schedule,
        rate_limit_per_s: body.rate_limit_per_s,
    };
    validate(&state, &mut spec).await?;
    let now = tidings_core::now_millis();
    let created = Webhook {
        id: new_id(IdKind::Webhook),
        workspace_id: workspace.id,
        spec,
        secret: generate_secret(),
        previous_secret: None,
        health: Default::default(),
        state: body.state.map(settable).unwrap_or_default(),
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    };
    state.store.create_webhook(&created).await?;
    state.fanout.forget(&created.workspace_id);
    Ok((StatusCode::CREATED, Json(view(created, true))))
}

/// List a workspace's webhooks, oldest first.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/webhooks", tag = "webhooks", params(("ws" = String, Path), PageQuery),
    responses((status = 200, body = ListResponse<WebhookView>), (status = 404, body = ErrorBody)))]
async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<ListResponse<WebhookView>>> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    let (page, limit) = query.page()?;
    let found = state.store.list_webhooks(&workspace.id, &page).await?;
    Ok(Json(ListResponse::from_fetched(
        found,
        limit,
        |w| w.id.clone(),
        |w| view(w, false),
    )))
}

/// Get a webhook.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/webhooks/{id}", tag = "webhooks", params(("ws" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)))]
async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<Json<WebhookView>> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    Ok(Json(view(load(&state, &workspace.id, &id).await?, false)))
}

/// Change some of a webhook's settings; absent fields stay as they are.
#[utoipa::path(patch, path = "/v1/workspaces/{ws}/webhooks/{id}", tag = "webhooks", params(("ws" = String, Path), ("id" = String, Path)), request_body = UpdateWebhook,
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    Json(body): Json<UpdateWebhook>,
) -> ApiResult<Json<WebhookView>> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    let mut hook = load(&state, &workspace.id, &id).await?;
    let spec = &mut hook.spec;
    if let Some(v) = body.name {
        spec.name = v;
    }
    if let Some(v) = body.description {
        spec.description = v;
    }
    if let Some(v) = body.url {
        spec.url = v;
    }
    if let Some(v) = body.event_types {
        spec.event_types = v;
    }
    if let Some(v) = body.filters {
        spec.filters = v;
    }
    if let Some(v) = body.headers {
        spec.headers = v;
    }
    if let Some(v) = body.signing {
        spec.signing = v;
    }
    if let Some(v) = body.payload_format {
        spec.payload_format = v;
    }
    if let Some(v) = body.timeout_ms {
        spec.timeout_ms = v;
    }
    if let Some(v) = body.retry_schedule {
        spec.retry_schedule = v;
    }
    if let Some(v) = body.rate_limit_per_s {
        spec.rate_limit_per_s = v;
    }
    validate(&state, spec).await?;
    if let Some(v) = body.state {
        if hook.state == WebhookState::Disabled {
            return Err(ApiError::invalid(
                "state",
                "a disabled webhook is turned back on with POST .../enable",
            ));
        }
        hook.state = settable(v);
    }
    hook.updated_at = tidings_core::now_millis();
    state.store.update_webhook(&hook).await?;
    state.fanout.forget(&hook.workspace_id);
    Ok(Json(view(hook, false)))
}

/// Delete a webhook and its delivery history; nothing more is sent to it.
#[utoipa::path(delete, path = "/v1/workspaces/{ws}/webhooks/{id}", tag = "webhooks", params(("ws" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    load(&state, &workspace.id, &id).await?;
    state.store.delete_webhook(&workspace.id, &id).await?;
    state.fanout.forget(&workspace.id);
    Ok(StatusCode::NO_CONTENT)
}

/// Turn a disabled (or paused) webhook back on; its disabled reason is cleared.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/webhooks/{id}/enable", tag = "webhooks", params(("ws" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)))]
async fn enable_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<Json<WebhookView>> {
    let workspace = super::workspace(&state, &caller, &ws).await?;
    load(&state, &workspace.id, &id).await?;
    state
        .store
        .enable_webhook(&workspace.id, &id, tidings_core::now_millis())
        .await?;
    state.fanout.forget(&workspace.id);
    Ok(Json(view(load(&state, &workspace.id, &id).await?, false)))
}
