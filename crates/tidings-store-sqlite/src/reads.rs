//! Reading deliveries and attempts for the API.

use sqlx::SqlitePool;
use tidings_store::*;

use crate::{map_err, rows};

/// Newest first; the cursor is the last id of the previous page.
pub async fn list_deliveries(
    pool: &SqlitePool,
    workspace_id: &str,
    filter: &DeliveryFilter,
    page: &Page,
) -> StoreResult<Vec<Delivery>> {
    sqlx::query(
        "SELECT * FROM deliveries
         WHERE workspace_id = ?1 AND id < ?2
           AND (?3 IS NULL OR webhook_id = ?3)
           AND (?4 IS NULL OR status = ?4)
           AND (?5 IS NULL OR event_type = ?5)
           AND (?6 IS NULL OR created_at >= ?6)
           AND (?7 IS NULL OR created_at < ?7)
         ORDER BY id DESC LIMIT ?8",
    )
    .bind(workspace_id)
    .bind(page.after.as_deref().unwrap_or("~"))
    .bind(&filter.webhook_id)
    .bind(filter.status.map(DeliveryStatus::as_str))
    .bind(&filter.event_type)
    .bind(filter.since)
    .bind(filter.until)
    .bind(i64::from(page.limit.clamp(1, 1000)))
    .fetch_all(pool)
    .await
    .map_err(map_err)?
    .iter()
    .map(rows::delivery)
    .collect()
}

pub async fn get_delivery(
    pool: &SqlitePool,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Delivery> {
    let row = sqlx::query("SELECT * FROM deliveries WHERE id = ? AND workspace_id = ?")
        .bind(id)
        .bind(workspace_id)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    rows::delivery(&row)
}

pub async fn list_attempts(pool: &SqlitePool, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
    sqlx::query("SELECT * FROM attempts WHERE delivery_id = ? ORDER BY number")
        .bind(delivery_id)
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(rows::attempt)
        .collect()
}

pub async fn event_deliveries(
    pool: &SqlitePool,
    workspace_id: &str,
    event_id: &str,
) -> StoreResult<Vec<Delivery>> {
    sqlx::query("SELECT * FROM deliveries WHERE event_id = ? AND workspace_id = ? ORDER BY id")
        .bind(event_id)
        .bind(workspace_id)
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(rows::delivery)
        .collect()
}
