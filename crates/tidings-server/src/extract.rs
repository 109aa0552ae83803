//! Extractors that reject in the API's error shape instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// JSON body; malformed or oversized bodies become API errors.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    /// Reads the body with plain `serde_json`, and only when that fails again with `axum::Json`,
    /// whose error names the path of the bad value: tracking that path for every value of every
    /// body doubled what parsing a batch of events cost.
    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(request.headers()) {
            let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
            return Ok(Json(value));
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(JsonRejection::from)?;
        match serde_json::from_slice(&body) {
            Ok(value) => Ok(Json(value)),
            Err(_) => {
                let axum::Json(value) = axum::Json::<T>::from_bytes(&body)?;
                Ok(Json(value))
            }
        }
    }
}

/// `application/json` or `application/*+json`, as `axum::Json` accepts.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// A JSON body that may be left out: an empty body means `T::default()`; a malformed one is a
/// validation error on `field`.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    field: &str,
    what: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(field, format!("The body is not a valid {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            content_type.parse().expect("a header value"),
        );
        headers
    }

    #[test]
    fn json_content_types_are_told_apart_as_axum_does() {
        for accepted in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/vnd.api+json",
        ] {
            assert!(json_content_type(&with(accepted)), "{accepted}");
        }
        for refused in ["text/plain", "application/xml", "json", "text/json", ""] {
            assert!(!json_content_type(&with(refused)), "{refused}");
        }
        assert!(!json_content_type(&HeaderMap::new()));
    }
}
