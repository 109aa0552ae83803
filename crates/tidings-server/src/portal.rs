//! Portal sessions: short-lived signed links that open the dashboard for one workspace.
//!
//! A token reads `tdp_<payload>.<signature>`: the payload is base64url JSON `{"ws", "exp"}`, the
//! signature base64url HMAC-SHA256 of the payload under a key every node reads from storage. Nothing
//! is stored per session; a token is good until it expires.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::dto::time;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Path;

const PREFIX: &str = "tdp_";
const KEY_NAME: &str = "portal_signing_key";
pub const DEFAULT_TTL_S: u64 = 3600;
const MAX_TTL_S: u64 = 24 * 3600;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_portal_session))
}

#[derive(Serialize, Deserialize)]
struct Claims {
    ws: String,
    exp: i64,
}

fn sign(key: &[u8], payload: &str) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The key portal tokens are signed with, created once and shared through storage.
async fn signing_key(state: &AppState) -> ApiResult<&[u8]> {
    let key = state
        .portal_key
        .get_or_try_init(|| async {
            let mut fresh = vec![0u8; 32];
            rand::rng().fill_bytes(&mut fresh);
            state.store.server_value(KEY_NAME, fresh).await
        })
        .await?;
    Ok(key.as_slice())
}

/// Makes a token for `workspace_id` that expires at `expires_at` (Unix ms).
pub async fn issue(state: &AppState, workspace_id: &str, expires_at: i64) -> ApiResult<String> {
    let claims = serde_json::to_vec(&Claims {
        ws: workspace_id.to_owned(),
        exp: expires_at,
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let payload = URL_SAFE_NO_PAD.encode(claims);
    let signature = URL_SAFE_NO_PAD.encode(sign(signing_key(state).await?, &payload));
    Ok(format!("{PREFIX}{payload}.{signature}"))
}

pub fn is_portal_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// Checks a portal token: a valid signature and not expired, or "unauthorized".
pub async fn verify(state: &AppState, token: &str) -> ApiResult<Caller> {
    let rest = token.strip_prefix(PREFIX).ok_or(ApiError::Unauthorized)?;
    let (payload, signature) = rest.split_once('.').ok_or(ApiError::Unauthorized)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| ApiError::Unauthorized)?;
    let expected = sign(signing_key(state).await?, payload);
    if !bool::from(expected.ct_eq(&signature)) {
        return Err(ApiError::Unauthorized);
    }
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(ApiError::Unauthorized)?;
    if claims.exp <= tidings_core::now_millis() {
        return Err(ApiError::Unauthorized);
    }
    Ok(Caller::portal(claims.ws))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreatePortalSession {
    /// How long the link works, in seconds (default 3600, 1 to 86400).
    ttl_s: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PortalSession {
    /// Opens the dashboard for this workspace; give it to the workspace's people.
    url: String,
    /// The same token, for callers that build their own link (`/#token=<token>`).
    token: String,
    expires_at: String,
}

/// Make a short-lived link that opens the webhooks dashboard for this workspace only.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/portal-sessions", tag = "portal", params(("ws" = String, Path)), request_body = CreatePortalSession,
    responses((status = 201, body = PortalSession), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_portal_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, axum::Json<PortalSession>)> {
    if caller.portal {
        return Err(ApiError::Forbidden(
            "a portal session cannot open other portal sessions".into(),
        ));
    }
    let workspace = crate::v1::workspace(&state, &caller, &ws).await?;
    let request: CreatePortalSession =
        crate::extract::optional_json(&body, "ttl_s", "portal session request")?;
    let ttl = request.ttl_s.unwrap_or(DEFAULT_TTL_S);
    if !(1..=MAX_TTL_S).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl_s",
            format!("ttl_s must be between 1 and {MAX_TTL_S} seconds"),
        ));
    }
    let expires_at = tidings_core::now_millis() + i64::try_from(ttl * 1000).unwrap_or(i64::MAX);
    let token = issue(&state, &workspace.id, expires_at).await?;
    let base = match &state.settings.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1:8080");
            format!("http://{host}")
        }
    };
    let url = format!("{base}/#token={token}");
    Ok((
        StatusCode::CREATED,
        axum::Json(PortalSession {
            url,
            token,
            expires_at: time(expires_at),
        }),
    ))
}
