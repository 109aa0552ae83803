//! API keys: issuing them, and the `Caller` extractor that authenticates every `/v1` request.
//!
//! A key reads `tdk_<32 hex id>_<secret>`. Only the SHA-256 of the secret is stored; the lookup is
//! by id and the hash comparison is constant-time.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tidings_core::ids::{IdKind, is_id, new_id};
use tidings_store::{ApiKey, KeyScope, Store, StoreError};

use crate::AppState;
use crate::cache::FreshMap;
use crate::error::{ApiError, ApiResult};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub scope: KeyScope,
    pub workspace_id: Option<String>,
    /// Signed in through a portal session (the dashboard link), not an API key.
    pub portal: bool,
}

impl Caller {
    /// A portal session: acts like a workspace key of that workspace.
    pub fn portal(workspace_id: String) -> Self {
        Self {
            scope: KeyScope::Workspace,
            workspace_id: Some(workspace_id),
            portal: true,
        }
    }

    /// Allows operator keys everywhere and workspace keys in their own workspace; anything else looks
    /// like a workspace that does not exist.
    pub fn check_workspace(&self, workspace_id: &str) -> ApiResult<()> {
        match self.scope {
            KeyScope::Operator => Ok(()),
            KeyScope::Workspace if self.workspace_id.as_deref() == Some(workspace_id) => Ok(()),
            KeyScope::Workspace => Err(ApiError::NotFound("workspace_not_found")),
        }
    }

    pub fn require_operator(&self) -> ApiResult<()> {
        match self.scope {
            KeyScope::Operator => Ok(()),
            KeyScope::Workspace => Err(ApiError::Forbidden(
                "this action needs an operator API key".into(),
            )),
        }
    }
}

fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Creates a key and returns it with the full token, which is shown once and never stored.
pub async fn issue_key(
    store: &dyn Store,
    scope: KeyScope,
    workspace_id: Option<String>,
    name: String,
) -> Result<(ApiKey, String), StoreError> {
    let mut secret_bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut secret_bytes);
    let secret = URL_SAFE_NO_PAD.encode(secret_bytes);
    let id = new_id(IdKind::ApiKey);
    let key = ApiKey {
        id: id.clone(),
        scope,
        workspace_id,
        name,
        secret_hash: hash_secret(&secret),
        created_at: tidings_core::now_millis(),
        revoked_at: None,
    };
    store.create_api_key(&key).await?;
    Ok((key, format!("{id}_{secret}")))
}

/// API keys by id, as storage last gave them, so that a request reads no key: one read per request
/// was a round trip as long as a publish's own write. A key revoked, or its workspace deleted,
/// through this node is forgotten at once; through another node or the CLI, it stops working when
/// its entry is loaded again.
pub struct KeyCache {
    keys: FreshMap<ApiKey>,
}

/// How long a key is used as loaded.
pub const KEY_REFRESH: Duration = Duration::from_secs(1);

impl Default for KeyCache {
    fn default() -> Self {
        Self {
            keys: FreshMap::new(KEY_REFRESH),
        }
    }
}

impl KeyCache {
    pub fn forget(&self, key_id: &str) {
        self.keys.remove(key_id);
    }

    /// Forgets the keys of a deleted workspace (deleted with it).
    pub fn forget_workspace(&self, workspace_id: &str) {
        self.keys
            .retain(|key| key.workspace_id.as_deref() != Some(workspace_id));
    }

    /// Checks a presented token against its key, loaded from storage when not cached or out of
    /// date.
    pub async fn authenticate(&self, store: &dyn Store, token: &str) -> ApiResult<Caller> {
        let (id, secret) = token.split_at_checked(36).ok_or(ApiError::Unauthorized)?;
        let secret = secret.strip_prefix('_').ok_or(ApiError::Unauthorized)?;
        if !is_id(IdKind::ApiKey, id) {
            return Err(ApiError::Unauthorized);
        }
        let key = match self.keys.get(id) {
            Some(key) => key,
            // Only keys that exist are kept, so made-up ids cannot fill the cache.
            None => match store.get_api_key(id).await {
                Ok(key) => {
                    self.keys.insert(key.id.clone(), key.clone());
                    key
                }
                Err(StoreError::NotFound) => return Err(ApiError::Unauthorized),
                Err(other) => return Err(other.into()),
            },
        };
        let matches: bool = hash_secret(secret).ct_eq(&key.secret_hash).into();
        if !matches || key.revoked_at.is_some() {
            return Err(ApiError::Unauthorized);
        }
        Ok(Caller {
            scope: key.scope,
            workspace_id: key.workspace_id,
            portal: false,
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or(ApiError::Unauthorized)?
            .trim();
        if crate::portal::is_portal_token(token) {
            return crate::portal::verify(state, token).await;
        }
        state.keys.authenticate(state.store.as_ref(), token).await
    }
}
