//! API keys over the API (operator keys only).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tidings_core::ids::{IdKind, is_id};
use tidings_store::{ApiKey, KeyScope};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Caller, issue_key};
use crate::dto::time;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    /// `operator` or `workspace`.
    scope: KeyScopeDto,
    /// Required for workspace keys.
    workspace_id: Option<String>,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum KeyScopeDto {
    Operator,
    Workspace,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct KeyView {
    id: String,
    scope: KeyScopeDto,
    workspace_id: Option<String>,
    name: String,
    created_at: String,
    revoked_at: Option<String>,
    /// The key itself: shown only in the response that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

fn view(key: ApiKey, token: Option<String>) -> KeyView {
    KeyView {
        id: key.id,
        scope: match key.scope {
            KeyScope::Operator => KeyScopeDto::Operator,
            KeyScope::Workspace => KeyScopeDto::Workspace,
        },
        workspace_id: key.workspace_id,
        name: key.name,
        created_at: time(key.created_at),
        revoked_at: key.revoked_at.map(time),
        key: token,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct KeyQuery {
    workspace_id: Option<String>,
}

/// Create an API key; the key is in the response and nowhere else.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = KeyView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateKey>,
) -> ApiResult<(StatusCode, Json<KeyView>)> {
    caller.require_operator()?;
    let scope = match (body.scope, &body.workspace_id) {
        (KeyScopeDto::Operator, None) => KeyScope::Operator,
        (KeyScopeDto::Operator, Some(_)) => {
            return Err(ApiError::invalid(
                "workspace_id",
                "operator keys belong to no workspace",
            ));
        }
        (KeyScopeDto::Workspace, Some(ws)) => {
            super::workspace(&state, &caller, ws).await?;
            KeyScope::Workspace
        }
        (KeyScopeDto::Workspace, None) => {
            return Err(ApiError::invalid(
                "workspace_id",
                "workspace keys need a workspace_id",
            ));
        }
    };
    if body.name.chars().count() > 200 {
        return Err(ApiError::invalid(
            "name",
            "The name is longer than 200 characters",
        ));
    }
    let (key, token) = issue_key(state.store.as_ref(), scope, body.workspace_id, body.name).await?;
    Ok((StatusCode::CREATED, Json(view(key, Some(token)))))
}

/// List API keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(KeyQuery),
    responses((status = 200, body = Vec<KeyView>), (status = 403, body = ErrorBody)))]
async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<KeyQuery>,
) -> ApiResult<Json<Vec<KeyView>>> {
    caller.require_operator()?;
    let keys = state
        .store
        .list_api_keys(query.workspace_id.as_deref())
        .await?;
    Ok(Json(keys.into_iter().map(|k| view(k, None)).collect()))
}

/// Revoke an API key. It stops working at once on the node that revoked it, and within a second on
/// the others (each keeps the keys it uses for a second).
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_operator()?;
    if !is_id(IdKind::ApiKey, &id) {
        return Err(ApiError::NotFound("key_not_found"));
    }
    state
        .store
        .revoke_api_key(&id, tidings_core::now_millis())
        .await?;
    state.keys.forget(&id);
    Ok(StatusCode::NO_CONTENT)
}
