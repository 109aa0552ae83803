//! The one error type of the API: every failure becomes a status and `{"error": {"code", "message"}}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tidings_store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden(String),
    NotFound(&'static str),
    MethodNotAllowed,
    BadRequest {
        code: &'static str,
        message: String,
    },
    Validation {
        field: Option<String>,
        message: String,
    },
    Conflict(String),
    PayloadTooLarge(String),
    Unavailable,
    Internal(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code.
    code: String,
    /// A sentence for people.
    message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }
    /// Maps a storage error, reporting a missing object with `code` (e.g. `webhook_not_found`).
    pub fn missing_as(code: &'static str) -> impl FnOnce(StoreError) -> Self {
        move |error| match error {
            StoreError::NotFound => ApiError::NotFound(code),
            other => other.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::NotFound("not_found"),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Unavailable(message) => {
                tracing::error!(%message, "storage unavailable");
                ApiError::Unavailable
            }
            StoreError::Invalid(message) => ApiError::Validation {
                field: None,
                message: format!("A value in the request cannot be stored: {message}"),
            },
            StoreError::Internal(message) => ApiError::Internal(message),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::BytesRejection(inner)
                if inner.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::PayloadTooLarge(
                    "The request body is larger than this endpoint accepts".into(),
                )
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::bad_request(
                "unsupported_media_type",
                "send the body as JSON with `content-type: application/json`",
            ),
            JsonRejection::JsonSyntaxError(inner) => {
                ApiError::bad_request("invalid_json", inner.body_text())
            }
            JsonRejection::JsonDataError(inner) => ApiError::Validation {
                field: None,
                message: inner.body_text(),
            },
            other => ApiError::bad_request("invalid_body", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required: send `Authorization: Bearer <key>`".to_owned(),
                None,
            ),
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, "forbidden", message, None),
            ApiError::NotFound(code) => (
                StatusCode::NOT_FOUND,
                code,
                "no such object in this workspace".to_owned(),
                None,
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not support that method".to_owned(),
                None,
            ),
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, code, message, None)
            }
            ApiError::Validation { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                message,
                field,
            ),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, "conflict", message, None),
            ApiError::PayloadTooLarge(message) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                message,
                None,
            ),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "storage is unavailable; try again shortly".to_owned(),
                None,
            ),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "something went wrong on our side".to_owned(),
                    None,
                )
            }
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                field,
            },
        };
        (status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
