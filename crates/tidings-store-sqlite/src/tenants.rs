//! Workspaces, API keys and webhooks.

use sqlx::SqlitePool;
use tidings_core::UnixMillis;
use tidings_core::webhook::WebhookState;
use tidings_store::*;

use crate::{map_err, rows};

fn page_limit(page: &Page) -> i64 {
    i64::from(page.limit.clamp(1, 1000))
}

fn expect_one(affected: u64) -> StoreResult<()> {
    if affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

pub async fn create_workspace(pool: &SqlitePool, ws: &Workspace) -> StoreResult<()> {
    sqlx::query("INSERT INTO workspaces (id, name, level_precedence, created_at, updated_at) VALUES (?, ?, ?, ?, ?)")
        .bind(&ws.id)
        .bind(&ws.name)
        .bind(ws.level_precedence.as_str())
        .bind(ws.created_at)
        .bind(ws.updated_at)
        .execute(pool)
        .await
        .map_err(map_err)?;
    Ok(())
}

pub async fn get_workspace(pool: &SqlitePool, id: &str) -> StoreResult<Workspace> {
    let row = sqlx::query("SELECT * FROM workspaces WHERE id = ?")
        .bind(id)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    rows::workspace(&row)
}

pub async fn list_workspaces(pool: &SqlitePool, page: &Page) -> StoreResult<Vec<Workspace>> {
    sqlx::query("SELECT * FROM workspaces WHERE id > ? ORDER BY id LIMIT ?")
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page_limit(page))
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(rows::workspace)
        .collect()
}

pub async fn update_workspace(pool: &SqlitePool, ws: &Workspace) -> StoreResult<()> {
    let result = sqlx::query(
        "UPDATE workspaces SET name = ?, level_precedence = ?, updated_at = ? WHERE id = ?",
    )
    .bind(&ws.name)
    .bind(ws.level_precedence.as_str())
    .bind(ws.updated_at)
    .bind(&ws.id)
    .execute(pool)
    .await
    .map_err(map_err)?;
    expect_one(result.rows_affected())
}

pub async fn delete_workspace(pool: &SqlitePool, id: &str) -> StoreResult<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
    // Deliveries carry the workspace but reference it only through events and webhooks.
    sqlx::query("DELETE FROM deliveries WHERE workspace_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let result = sqlx::query("DELETE FROM workspaces WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    expect_one(result.rows_affected())?;
    tx.commit().await.map_err(map_err)
}

pub async fn create_api_key(pool: &SqlitePool, key: &ApiKey) -> StoreResult<()> {
    let scope = match key.scope {
        KeyScope::Operator => "operator",
        KeyScope::Workspace => "workspace",
    };
    sqlx::query(
        "INSERT INTO api_keys (id, scope, workspace_id, name, secret_hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&key.id)
    .bind(scope)
    .bind(&key.workspace_id)
    .bind(&key.name)
    .bind(&key.secret_hash)
    .bind(key.created_at)
    .bind(key.revoked_at)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub async fn get_api_key(pool: &SqlitePool, id: &str) -> StoreResult<ApiKey> {
    let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?")
        .bind(id)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    rows::api_key(&row)
}

pub async fn list_api_keys(
    pool: &SqlitePool,
    workspace_id: Option<&str>,
) -> StoreResult<Vec<ApiKey>> {
    let rows = match workspace_id {
        Some(ws) => {
            sqlx::query("SELECT * FROM api_keys WHERE workspace_id = ? ORDER BY id")
                .bind(ws)
                .fetch_all(pool)
                .await
        }
        None => {
            sqlx::query("SELECT * FROM api_keys ORDER BY id")
                .fetch_all(pool)
                .await
        }
    }
    .map_err(map_err)?;
    rows.iter().map(rows::api_key).collect()
}

pub async fn revoke_api_key(pool: &SqlitePool, id: &str, at: UnixMillis) -> StoreResult<()> {
    let result =
        sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
            .bind(at)
            .bind(id)
            .execute(pool)
            .await
            .map_err(map_err)?;
    expect_one(result.rows_affected())
}

fn spec_json(webhook: &Webhook) -> StoreResult<String> {
    serde_json::to_string(&webhook.spec).map_err(|e| StoreError::Internal(e.to_string()))
}

pub async fn create_webhook(pool: &SqlitePool, webhook: &Webhook) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO webhooks (id, workspace_id, spec, secret, previous_secret, previous_secret_until, state,
                               disabled_reason, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&webhook.id)
    .bind(&webhook.workspace_id)
    .bind(spec_json(webhook)?)
    .bind(&webhook.secret)
    .bind(webhook.previous_secret.as_ref().map(|(s, _)| s))
    .bind(webhook.previous_secret.as_ref().map(|(_, until)| *until))
    .bind(webhook.state.as_str())
    .bind(&webhook.disabled_reason)
    .bind(webhook.created_at)
    .bind(webhook.updated_at)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub async fn get_webhook(pool: &SqlitePool, workspace_id: &str, id: &str) -> StoreResult<Webhook> {
    let row = sqlx::query("SELECT * FROM webhooks WHERE id = ? AND workspace_id = ?")
        .bind(id)
        .bind(workspace_id)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    rows::webhook(&row)
}

pub async fn list_webhooks(
    pool: &SqlitePool,
    workspace_id: &str,
    page: Option<&Page>,
) -> StoreResult<Vec<Webhook>> {
    let (after, limit) = match page {
        Some(page) => (page.after.clone().unwrap_or_default(), page_limit(page)),
        None => (String::new(), -1),
    };
    sqlx::query("SELECT * FROM webhooks WHERE workspace_id = ? AND id > ? ORDER BY id LIMIT ?")
        .bind(workspace_id)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(rows::webhook)
        .collect()
}

pub async fn update_webhook(pool: &SqlitePool, webhook: &Webhook) -> StoreResult<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
    let before: Option<String> =
        sqlx::query_scalar("SELECT state FROM webhooks WHERE id = ? AND workspace_id = ?")
            .bind(&webhook.id)
            .bind(&webhook.workspace_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
    let Some(before) = before else {
        return Err(StoreError::NotFound);
    };
    let result = sqlx::query(
        "UPDATE webhooks SET spec = ?, secret = ?, previous_secret = ?, previous_secret_until = ?, state = ?,
             disabled_reason = ?, updated_at = ?
         WHERE id = ? AND workspace_id = ?",
    )
    .bind(spec_json(webhook)?)
    .bind(&webhook.secret)
    .bind(webhook.previous_secret.as_ref().map(|(s, _)| s))
    .bind(webhook.previous_secret.as_ref().map(|(_, until)| *until))
    .bind(webhook.state.as_str())
    .bind(&webhook.disabled_reason)
    .bind(webhook.updated_at)
    .bind(&webhook.id)
    .bind(&webhook.workspace_id)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    expect_one(result.rows_affected())?;
    if before != webhook.state.as_str() {
        hold_or_release(
            &mut tx,
            &webhook.id,
            webhook.state == WebhookState::Active,
            webhook.updated_at,
        )
        .await?;
    }
    tx.commit().await.map_err(map_err)
}

/// Keeps a webhook's pending deliveries out of the due index while it is not active (no due time),
/// and makes them due at `at` when it is active again.
async fn hold_or_release(
    conn: &mut sqlx::SqliteConnection,
    webhook_id: &str,
    active: bool,
    at: UnixMillis,
) -> StoreResult<()> {
    let query = if active {
        sqlx::query(
            "UPDATE deliveries SET next_attempt_at = ?
             WHERE webhook_id = ? AND status = 'pending' AND next_attempt_at IS NULL",
        )
        .bind(at)
    } else {
        sqlx::query(
            "UPDATE deliveries SET next_attempt_at = NULL
             WHERE webhook_id = ? AND status = 'pending'",
        )
    };
    query
        .bind(webhook_id)
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

pub async fn delete_webhook(pool: &SqlitePool, workspace_id: &str, id: &str) -> StoreResult<()> {
    let result = sqlx::query("DELETE FROM webhooks WHERE id = ? AND workspace_id = ?")
        .bind(id)
        .bind(workspace_id)
        .execute(pool)
        .await
        .map_err(map_err)?;
    expect_one(result.rows_affected())
}

pub async fn enable_webhook(
    pool: &SqlitePool,
    workspace_id: &str,
    id: &str,
    at: UnixMillis,
) -> StoreResult<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
    let result = sqlx::query(
        "UPDATE webhooks SET state = 'active', disabled_reason = NULL, failing_since = NULL,
             failures_since_success = 0, updated_at = ?
         WHERE id = ? AND workspace_id = ?",
    )
    .bind(at)
    .bind(id)
    .bind(workspace_id)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    expect_one(result.rows_affected())?;
    hold_or_release(&mut tx, id, true, at).await?;
    tx.commit().await.map_err(map_err)
}
