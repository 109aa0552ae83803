//! The `/v1` resources, one module each.

pub mod deliveries;
pub mod event_types;
pub mod events;
pub mod keys;
pub mod webhook_ops;
pub mod webhooks;
pub mod workspaces;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use tidings_core::ids::WorkspaceId;
use tidings_store::Workspace;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(workspaces::router())
        .merge(keys::router())
        .merge(event_types::router())
        .merge(webhooks::router())
        .merge(webhook_ops::router())
        .merge(events::router())
        .merge(deliveries::router())
}

/// Resolves `{ws}` for this caller: a malformed id, another tenant's id and a missing workspace all
/// read as "not found".
pub async fn workspace(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Workspace> {
    WorkspaceId::parse(id).ok_or(ApiError::NotFound("workspace_not_found"))?;
    caller.check_workspace(id)?;
    state
        .store
        .get_workspace(id)
        .await
        .map_err(ApiError::missing_as("workspace_not_found"))
}
