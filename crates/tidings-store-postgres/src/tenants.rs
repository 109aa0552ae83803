//! Workspaces, API keys and webhooks.

use sqlx::{PgConnection, PgExecutor, PgPool};
use tidings_core::UnixMillis;
use tidings_core::webhook::WebhookState;
use tidings_store::*;

use crate::errors::{TxResult, retrying};
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

pub async fn create_workspace(pool: &PgPool, ws: &Workspace) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO workspaces (id, name, level_precedence, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)",
    )
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

pub async fn get_workspace(conn: impl PgExecutor<'_>, id: &str) -> StoreResult<Workspace> {
    let row = sqlx::query("SELECT * FROM workspaces WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
        .map_err(map_err)?;
    rows::workspace(&row)
}

pub async fn list_workspaces(pool: &PgPool, page: &Page) -> StoreResult<Vec<Workspace>> {
    sqlx::query("SELECT * FROM workspaces WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page_limit(page))
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(rows::workspace)
        .collect()
}

pub async fn update_workspace(pool: &PgPool, ws: &Workspace) -> StoreResult<()> {
    let result = sqlx::query(
        "UPDATE workspaces SET name = $1, level_precedence = $2, updated_at = $3 WHERE id = $4",
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

pub async fn delete_workspace(pool: &PgPool, id: &str) -> StoreResult<()> {
    retrying("deleting a workspace", move || async move {
        let mut tx = pool.begin().await?;
        // Its webhooks first, then their deliveries, in id order: the order recording outcomes
        // and pausing lock them in (see delete_webhook). Deliveries carry the workspace but
        // reference it only through events and webhooks.
        sqlx::query("SELECT 1 FROM webhooks WHERE workspace_id = $1 ORDER BY id FOR UPDATE")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM deliveries d
             USING (SELECT id FROM deliveries WHERE workspace_id = $1 ORDER BY id FOR UPDATE) doomed
             WHERE d.id = doomed.id",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let result = sqlx::query("DELETE FROM workspaces WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        expect_one(result.rows_affected())?;
        tx.commit().await?;
        Ok(())
    })
    .await
}

pub async fn create_api_key(pool: &PgPool, key: &ApiKey) -> StoreResult<()> {
    let scope = match key.scope {
        KeyScope::Operator => "operator",
        KeyScope::Workspace => "workspace",
    };
    sqlx::query(
        "INSERT INTO api_keys (id, scope, workspace_id, name, secret_hash, created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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

pub async fn get_api_key(conn: impl PgExecutor<'_>, id: &str) -> StoreResult<ApiKey> {
    let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
        .map_err(map_err)?;
    rows::api_key(&row)
}

pub async fn list_api_keys(pool: &PgPool, workspace_id: Option<&str>) -> StoreResult<Vec<ApiKey>> {
    let rows = match workspace_id {
        Some(ws) => {
            sqlx::query("SELECT * FROM api_keys WHERE workspace_id = $1 ORDER BY id")
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

pub async fn revoke_api_key(pool: &PgPool, id: &str, at: UnixMillis) -> StoreResult<()> {
    let result =
        sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
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

fn rate_per_s(webhook: &Webhook) -> Option<i64> {
    webhook.spec.rate_limit_per_s.map(i64::from)
}

pub async fn create_webhook(pool: &PgPool, webhook: &Webhook) -> StoreResult<()> {
    let spec = &spec_json(webhook)?;
    retrying("creating a webhook", move || async move {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhooks (id, workspace_id, spec, secret, previous_secret, previous_secret_until, state,
                                   disabled_reason, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&webhook.id)
        .bind(&webhook.workspace_id)
        .bind(spec)
        .bind(&webhook.secret)
        .bind(webhook.previous_secret.as_ref().map(|(s, _)| s))
        .bind(webhook.previous_secret.as_ref().map(|(_, until)| *until))
        .bind(webhook.state.as_str())
        .bind(&webhook.disabled_reason)
        .bind(webhook.created_at)
        .bind(webhook.updated_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO webhook_gates (webhook_id, rate_per_s) VALUES ($1, $2)")
            .bind(&webhook.id)
            .bind(rate_per_s(webhook))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    })
    .await
}

pub async fn get_webhook(pool: &PgPool, workspace_id: &str, id: &str) -> StoreResult<Webhook> {
    let row = sqlx::query("SELECT * FROM webhooks WHERE id = $1 AND workspace_id = $2")
        .bind(id)
        .bind(workspace_id)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    rows::webhook(&row)
}

pub async fn list_webhooks(
    pool: &PgPool,
    workspace_id: &str,
    page: Option<&Page>,
) -> StoreResult<Vec<Webhook>> {
    // No page: every webhook (LIMIT NULL is no limit).
    let (after, limit) = match page {
        Some(page) => (
            page.after.clone().unwrap_or_default(),
            Some(page_limit(page)),
        ),
        None => (String::new(), None),
    };
    sqlx::query("SELECT * FROM webhooks WHERE workspace_id = $1 AND id > $2 ORDER BY id LIMIT $3")
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

/// Saves a webhook's settings; returns whether its deliveries became due (it turned active).
pub async fn update_webhook(pool: &PgPool, webhook: &Webhook) -> StoreResult<bool> {
    let spec = &spec_json(webhook)?;
    retrying("updating a webhook", move || async move {
        let mut tx = pool.begin().await?;
        // Locked so a concurrent state change (a node disabling it) cannot slip in between.
        let before: Option<String> = sqlx::query_scalar(
            "SELECT state FROM webhooks WHERE id = $1 AND workspace_id = $2 FOR NO KEY UPDATE",
        )
        .bind(&webhook.id)
        .bind(&webhook.workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = before else {
            return Err(StoreError::NotFound.into());
        };
        let result = sqlx::query(
            "UPDATE webhooks SET spec = $1, secret = $2, previous_secret = $3, previous_secret_until = $4,
                 state = $5, disabled_reason = $6, updated_at = $7
             WHERE id = $8 AND workspace_id = $9",
        )
        .bind(spec)
        .bind(&webhook.secret)
        .bind(webhook.previous_secret.as_ref().map(|(s, _)| s))
        .bind(webhook.previous_secret.as_ref().map(|(_, until)| *until))
        .bind(webhook.state.as_str())
        .bind(&webhook.disabled_reason)
        .bind(webhook.updated_at)
        .bind(&webhook.id)
        .bind(&webhook.workspace_id)
        .execute(&mut *tx)
        .await?;
        expect_one(result.rows_affected())?;
        let now_active = before != webhook.state.as_str() && webhook.state == WebhookState::Active;
        if before != webhook.state.as_str() {
            hold_or_release(
                &mut tx,
                &webhook.id,
                webhook.state == WebhookState::Active,
                webhook.updated_at,
            )
            .await?;
        }
        // The gate last: a claim holds its candidate deliveries while it waits for the gate, so
        // taking the gate before those deliveries could deadlock with it.
        sqlx::query(
            "INSERT INTO webhook_gates (webhook_id, rate_per_s) VALUES ($1, $2)
             ON CONFLICT (webhook_id) DO UPDATE SET rate_per_s = EXCLUDED.rate_per_s",
        )
        .bind(&webhook.id)
        .bind(rate_per_s(webhook))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(now_active)
    })
    .await
}

/// Keeps a webhook's pending deliveries out of the due index while it is not active (no due time),
/// and makes them due at `at` when it is active again.
async fn hold_or_release(
    conn: &mut PgConnection,
    webhook_id: &str,
    active: bool,
    at: UnixMillis,
) -> TxResult<()> {
    let query = if active {
        sqlx::query(
            "UPDATE deliveries d SET next_attempt_at = $1
             FROM (SELECT id FROM deliveries
                   WHERE webhook_id = $2 AND status = 'pending' AND next_attempt_at IS NULL
                   ORDER BY id FOR UPDATE) held
             WHERE d.id = held.id",
        )
        .bind(at)
    } else {
        sqlx::query(
            "UPDATE deliveries d SET next_attempt_at = NULL
             FROM (SELECT id FROM deliveries
                   WHERE webhook_id = $1 AND status = 'pending' AND claimed_by IS NULL
                   ORDER BY id FOR UPDATE) waiting
             WHERE d.id = waiting.id",
        )
    };
    query.bind(webhook_id).execute(conn).await?;
    Ok(())
}

pub async fn delete_webhook(pool: &PgPool, workspace_id: &str, id: &str) -> StoreResult<()> {
    retrying("deleting a webhook", move || async move {
        let mut tx = pool.begin().await?;
        // The webhook row first, as recording outcomes and pausing lock it before its deliveries;
        // then its deliveries, in id order as every statement changing several deliveries locks
        // them; the gate (deleted with the webhook) last: a claim holds its candidate deliveries
        // while it waits for the gate, so taking the gate earlier could deadlock.
        sqlx::query("SELECT 1 FROM webhooks WHERE id = $1 AND workspace_id = $2 FOR UPDATE")
            .bind(id)
            .bind(workspace_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM deliveries d
             USING (SELECT x.id FROM deliveries x JOIN webhooks w ON w.id = x.webhook_id
                    WHERE w.id = $1 AND w.workspace_id = $2
                    ORDER BY x.id FOR UPDATE OF x) doomed
             WHERE d.id = doomed.id",
        )
        .bind(id)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
        let result = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND workspace_id = $2")
            .bind(id)
            .bind(workspace_id)
            .execute(&mut *tx)
            .await?;
        expect_one(result.rows_affected())?;
        tx.commit().await?;
        Ok(())
    })
    .await
}

pub async fn enable_webhook(
    pool: &PgPool,
    workspace_id: &str,
    id: &str,
    at: UnixMillis,
) -> StoreResult<()> {
    retrying("enabling a webhook", move || async move {
        let mut tx = pool.begin().await?;
        let result = sqlx::query(
            "UPDATE webhooks SET state = 'active', disabled_reason = NULL, failing_since = NULL,
                 failures_since_success = 0, updated_at = $1
             WHERE id = $2 AND workspace_id = $3",
        )
        .bind(at)
        .bind(id)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
        expect_one(result.rows_affected())?;
        hold_or_release(&mut tx, id, true, at).await?;
        tx.commit().await?;
        Ok(())
    })
    .await
}
