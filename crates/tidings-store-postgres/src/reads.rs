//! Reading deliveries and attempts for the API.

use sqlx::{PgPool, Postgres, QueryBuilder};
use tidings_store::*;

use crate::{map_err, rows};

/// Newest first; the cursor is the last id of the previous page. Only the filters given become
/// conditions, so the planner sees each query's real shape.
pub async fn list_deliveries(
    pool: &PgPool,
    workspace_id: &str,
    filter: &DeliveryFilter,
    page: &Page,
) -> StoreResult<Vec<Delivery>> {
    let mut query = QueryBuilder::<Postgres>::new("SELECT * FROM deliveries WHERE workspace_id = ");
    query.push_bind(workspace_id);
    if let Some(before) = &page.after {
        query.push(" AND id < ").push_bind(before);
    }
    if let Some(webhook_id) = &filter.webhook_id {
        query.push(" AND webhook_id = ").push_bind(webhook_id);
    }
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(event_type) = &filter.event_type {
        query.push(" AND event_type = ").push_bind(event_type);
    }
    if let Some(since) = filter.since {
        query.push(" AND created_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        query.push(" AND created_at < ").push_bind(until);
    }
    query
        .push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(page.limit.clamp(1, 1000)));
    query
        .build()
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(rows::delivery)
        .collect()
}

pub async fn get_delivery(pool: &PgPool, workspace_id: &str, id: &str) -> StoreResult<Delivery> {
    let row = sqlx::query("SELECT * FROM deliveries WHERE id = $1 AND workspace_id = $2")
        .bind(id)
        .bind(workspace_id)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    rows::delivery(&row)
}

pub async fn list_attempts(pool: &PgPool, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
    sqlx::query("SELECT * FROM attempts WHERE delivery_id = $1 ORDER BY number")
        .bind(delivery_id)
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(rows::attempt)
        .collect()
}

pub async fn event_deliveries(
    pool: &PgPool,
    workspace_id: &str,
    event_id: &str,
) -> StoreResult<Vec<Delivery>> {
    sqlx::query("SELECT * FROM deliveries WHERE event_id = $1 AND workspace_id = $2 ORDER BY id")
        .bind(event_id)
        .bind(workspace_id)
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(rows::delivery)
        .collect()
}
