//! The event catalog: built-in types, and custom types operators add.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tidings_core::catalog::{self, CatalogError, EventTypeDef};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path};
use crate::types::ResolvedType;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_event_types, create_event_type))
        .routes(routes!(get_event_type, update_event_type))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EventTypeView {
    name: String,
    description: String,
    group: String,
    /// JSON Schema of the event's `data`.
    schema: Option<serde_json::Value>,
    /// An example `data` that validates against the schema.
    example: Option<serde_json::Value>,
    builtin: bool,
}

fn view(resolved: &ResolvedType) -> EventTypeView {
    EventTypeView {
        name: resolved.def.name.clone(),
        description: resolved.def.description.clone(),
        group: resolved.def.group.clone(),
        schema: resolved.def.schema.clone(),
        example: resolved.def.example.clone(),
        builtin: resolved.builtin,
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateEventType {
    name: String,
    description: String,
    group: String,
    schema: Option<serde_json::Value>,
    example: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateEventType {
    description: String,
    group: String,
    schema: Option<serde_json::Value>,
    example: Option<serde_json::Value>,
}

fn catalog_error(error: CatalogError) -> ApiError {
    let field = match &error {
        CatalogError::BadName | CatalogError::Builtin(_) => "name",
        CatalogError::BadSchema(_) => "schema",
        CatalogError::BadExample { .. } => "example",
        CatalogError::BadGroup => "group",
    };
    ApiError::invalid(field, error.to_string())
}

async fn save(state: &AppState, def: EventTypeDef) -> ApiResult<EventTypeView> {
    if def.description.chars().count() > 2000 {
        return Err(ApiError::invalid(
            "description",
            "The description is longer than 2000 characters",
        ));
    }
    catalog::validate_custom(&def).map_err(catalog_error)?;
    state
        .store
        .put_custom_event_type(&def, tidings_core::now_millis())
        .await?;
    state.types.invalidate();
    let resolved = state
        .types
        .get(state.store.as_ref(), &def.name)
        .await?
        .ok_or(ApiError::NotFound("event_type_not_found"))?;
    Ok(view(&resolved))
}

/// List every event type: the built-in catalog, then custom types.
#[utoipa::path(get, path = "/v1/event-types", tag = "event types",
    responses((status = 200, body = Vec<EventTypeView>), (status = 401, body = ErrorBody)))]
async fn list_event_types(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<EventTypeView>>> {
    let all = state.types.all(state.store.as_ref()).await?;
    Ok(Json(all.iter().map(|t| view(t)).collect()))
}

/// Get one event type with its schema and example.
#[utoipa::path(get, path = "/v1/event-types/{name}", tag = "event types", params(("name" = String, Path)),
    responses((status = 200, body = EventTypeView), (status = 404, body = ErrorBody)))]
async fn get_event_type(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<EventTypeView>> {
    let found = state
        .types
        .get(state.store.as_ref(), &name)
        .await?
        .ok_or(ApiError::NotFound("event_type_not_found"))?;
    Ok(Json(view(&found)))
}

/// Add a custom event type (operator keys).
#[utoipa::path(post, path = "/v1/event-types", tag = "event types", request_body = CreateEventType,
    responses((status = 201, body = EventTypeView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_event_type(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateEventType>,
) -> ApiResult<(StatusCode, Json<EventTypeView>)> {
    caller.require_operator()?;
    if catalog::builtin_type(&body.name).is_none()
        && state
            .types
            .get(state.store.as_ref(), &body.name)
            .await?
            .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "The event type `{}` exists; update it with PUT",
            body.name
        )));
    }
    let def = EventTypeDef {
        name: body.name,
        description: body.description,
        group: body.group,
        schema: body.schema,
        example: body.example,
    };
    Ok((StatusCode::CREATED, Json(save(&state, def).await?)))
}

/// Replace a custom event type's description, group, schema and example (operator keys).
#[utoipa::path(put, path = "/v1/event-types/{name}", tag = "event types", params(("name" = String, Path)), request_body = UpdateEventType,
    responses((status = 200, body = EventTypeView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_event_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<UpdateEventType>,
) -> ApiResult<Json<EventTypeView>> {
    caller.require_operator()?;
    match state.types.get(state.store.as_ref(), &name).await? {
        None => return Err(ApiError::NotFound("event_type_not_found")),
        Some(found) if found.builtin => {
            return Err(ApiError::invalid(
                "name",
                format!("`{name}` is a built-in event type and cannot be changed"),
            ));
        }
        Some(_) => {}
    }
    let def = EventTypeDef {
        name,
        description: body.description,
        group: body.group,
        schema: body.schema,
        example: body.example,
    };
    Ok(Json(save(&state, def).await?))
}
