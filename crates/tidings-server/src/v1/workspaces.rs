//! Workspaces (operator keys create and manage them; a workspace key may read its own).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tidings_core::ids::WorkspaceId;
use tidings_core::matching::LevelPrecedence;
use tidings_store::Workspace;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::dto::{ListResponse, PageQuery, time};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_workspace, list_workspaces))
        .routes(routes!(get_workspace, update_workspace, delete_workspace))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateWorkspace {
    /// A name for people, e.g. the customer's company.
    name: String,
    #[serde(default)]
    level_precedence: LevelPrecedence,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateWorkspace {
    name: Option<String>,
    level_precedence: Option<LevelPrecedence>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkspaceView {
    id: String,
    name: String,
    level_precedence: LevelPrecedence,
    created_at: String,
    updated_at: String,
}

impl From<Workspace> for WorkspaceView {
    fn from(ws: Workspace) -> Self {
        Self {
            id: ws.id,
            name: ws.name,
            level_precedence: ws.level_precedence,
            created_at: time(ws.created_at),
            updated_at: time(ws.updated_at),
        }
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid(
            "name",
            "The name must be 1 to 200 characters",
        ));
    }
    Ok(())
}

/// Create a workspace.
#[utoipa::path(post, path = "/v1/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    responses((status = 201, body = WorkspaceView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateWorkspace>,
) -> ApiResult<(StatusCode, Json<WorkspaceView>)> {
    caller.require_operator()?;
    check_name(&body.name)?;
    let now = tidings_core::now_millis();
    let ws = Workspace {
        id: WorkspaceId::new().as_str().to_owned(),
        name: body.name,
        level_precedence: body.level_precedence,
        created_at: now,
        updated_at: now,
    };
    state.store.create_workspace(&ws).await?;
    Ok((StatusCode::CREATED, Json(ws.into())))
}

/// List workspaces (operator keys see all, a workspace key its own).
#[utoipa::path(get, path = "/v1/workspaces", tag = "workspaces", params(PageQuery),
    responses((status = 200, body = ListResponse<WorkspaceView>), (status = 401, body = ErrorBody)))]
async fn list_workspaces(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<ListResponse<WorkspaceView>>> {
    let (page, limit) = query.page()?;
    if let Some(own) = &caller.workspace_id {
        let ws = state.store.get_workspace(own).await?;
        return Ok(Json(ListResponse {
            data: vec![ws.into()],
            next_cursor: None,
        }));
    }
    let found = state.store.list_workspaces(&page).await?;
    Ok(Json(ListResponse::from_fetched(
        found,
        limit,
        |w| w.id.clone(),
        WorkspaceView::from,
    )))
}

/// Get a workspace.
#[utoipa::path(get, path = "/v1/workspaces/{ws}", tag = "workspaces", params(("ws" = String, Path)),
    responses((status = 200, body = WorkspaceView), (status = 404, body = ErrorBody)))]
async fn get_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<WorkspaceView>> {
    Ok(Json(super::workspace(&state, &caller, &ws).await?.into()))
}

/// Update a workspace's name or level precedence.
#[utoipa::path(patch, path = "/v1/workspaces/{ws}", tag = "workspaces", params(("ws" = String, Path)), request_body = UpdateWorkspace,
    responses((status = 200, body = WorkspaceView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<UpdateWorkspace>,
) -> ApiResult<Json<WorkspaceView>> {
    caller.require_operator()?;
    let mut workspace = super::workspace(&state, &caller, &ws).await?;
    if let Some(name) = body.name {
        check_name(&name)?;
        workspace.name = name;
    }
    if let Some(precedence) = body.level_precedence {
        workspace.level_precedence = precedence;
    }
    workspace.updated_at = tidings_core::now_millis();
    state.store.update_workspace(&workspace).await?;
    state.fanout.forget(&workspace.id);
    Ok(Json(workspace.into()))
}

/// Delete a workspace with its keys, webhooks, events and deliveries.
#[utoipa::path(delete, path = "/v1/workspaces/{ws}", tag = "workspaces", params(("ws" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_operator()?;
    super::workspace(&state, &caller, &ws).await?;
    state.store.delete_workspace(&ws).await?;
    state.fanout.forget(&ws);
    state.keys.forget_workspace(&ws);
    Ok(StatusCode::NO_CONTENT)
}
