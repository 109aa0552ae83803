//! Health, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::Json;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The process can reach its storage.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    // A health checker gives up after a few seconds: an unreachable database must read as 503
    // before that, not as a timeout.
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            return Err(ApiError::Unavailable);
        }
        Err(_) => {
            tracing::warn!("readiness check failed: storage did not answer within 2 s");
            return Err(ApiError::Unavailable);
        }
    }
    Ok(Json(Health { status: "ready" }))
}

/// Prometheus metrics: events published, deliveries delivered, failed and retried, attempt latency, pending deliveries.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let Some(handle) = &state.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process",
        )
            .into_response();
    };
    if let Ok(pending) = state.store.count_pending().await {
        metrics::gauge!("tidings_deliveries_pending").set(pending as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
