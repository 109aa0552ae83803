//! The Tidings HTTP API: `/v1` resources, OpenAPI, health, readiness and metrics.

mod auth;
mod cache;
mod dashboard;
mod dto;
mod error;
mod extract;
mod ops;
mod portal;
mod types;
mod v1;

use std::sync::Arc;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tidings_core::webhook::TargetPolicy;
use tidings_delivery::Dispatcher;
use tidings_store::Store;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use auth::{KEY_REFRESH, issue_key};
pub use error::ApiError;

/// Server-wide settings the API enforces.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub target_policy: TargetPolicy,
    /// How long an idempotency key returns its first result.
    pub idempotency_window_ms: i64,
    /// The address people reach this server at, for portal links; default: the request's host.
    pub public_url: Option<String>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            target_policy: TargetPolicy::default(),
            idempotency_window_ms: 24 * 3600 * 1000,
            public_url: None,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub settings: Arc<ApiSettings>,
    pub metrics: Option<PrometheusHandle>,
    /// Makes test sends with the same client and rules as queued deliveries.
    pub dispatcher: Dispatcher,
    types: Arc<types::EventTypes>,
    fanout: Arc<v1::events::FanoutCache>,
    keys: Arc<auth::KeyCache>,
    portal_key: Arc<tokio::sync::OnceCell<Vec<u8>>>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        settings: ApiSettings,
        metrics: Option<PrometheusHandle>,
        dispatcher: Dispatcher,
    ) -> Self {
        Self {
            store,
            settings: Arc::new(settings),
            metrics,
            dispatcher,
            types: Arc::new(types::EventTypes::default()),
            fanout: Arc::new(v1::events::FanoutCache::default()),
            keys: Arc::new(auth::KeyCache::default()),
            portal_key: Arc::new(tokio::sync::OnceCell::new()),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tidings", description = "Webhook delivery for sales-engagement platforms."),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tdk_...")
                    .build(),
            ),
        );
    }
}

/// The whole API with its OpenAPI document.
pub fn router(state: AppState) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(v1::router())
        .merge(portal::router())
        .merge(ops::router())
        .split_for_parts();
    let mut openapi = openapi;
    openapi.paths.add_path_operation(
        "/openapi.json",
        vec![utoipa::openapi::HttpMethod::Get],
        utoipa::openapi::path::OperationBuilder::new()
            .summary(Some("This OpenAPI document"))
            .tag("operations")
            .security(utoipa::openapi::security::SecurityRequirement::default())
            .response(
                "200",
                utoipa::openapi::Response::new("The OpenAPI 3.1 document of every route"),
            )
            .build(),
    );
    openapi.paths.add_path_operation(
        "/docs",
        vec![utoipa::openapi::HttpMethod::Get],
        utoipa::openapi::path::OperationBuilder::new()
            .summary(Some(
                "This document, readable and tryable in a browser (Swagger UI)",
            ))
            .tag("operations")
            .security(utoipa::openapi::security::SecurityRequirement::default())
            .response("200", utoipa::openapi::Response::new("An HTML page"))
            .build(),
    );
    router
        // Serves the document at /openapi.json and the page at /docs/, whose files are in the binary.
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi))
        // Unknown paths and methods answer in the API's error shape too.
        .merge(dashboard::router())
        .fallback(|| async { ApiError::NotFound("route_not_found") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Internal(
                "a request handler panicked".into(),
            ))
        }))
        .with_state(state)
}
