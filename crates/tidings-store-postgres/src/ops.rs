//! Delivery operations: manual retry, retrigger, summaries, retention and the notification outbox.
//!
//! Retrigger, retention and the outbox pick their rows with `FOR UPDATE SKIP LOCKED`, so nodes
//! running them at once split the work instead of repeating it.

use sqlx::{PgPool, Row};
use tidings_core::UnixMillis;
use tidings_core::stats;
use tidings_store::*;

use crate::errors::retrying;
use crate::{map_err, rows};

/// Queues a delivery again; returns it and whether it is due (every node has then been told).
pub async fn retry_delivery(
    pool: &PgPool,
    workspace_id: &str,
    id: &str,
    at: UnixMillis,
) -> StoreResult<(Delivery, bool)> {
    let retried = retrying("retrying a delivery", move || async move {
        let mut tx = pool.begin().await?;
        let row = sqlx::query(
            "UPDATE deliveries SET status = 'pending', updated_at = $1,
                 next_attempt_at = CASE WHEN (SELECT w.state FROM webhooks w WHERE w.id = deliveries.webhook_id) = 'active'
                                   THEN $1::BIGINT ELSE NULL END
             WHERE id = $2 AND workspace_id = $3 AND claimed_by IS NULL AND NOT is_test
             RETURNING *",
        )
        .bind(at)
        .bind(id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let delivery = rows::delivery(&row)?;
        let due = delivery.next_attempt_at.is_some();
        tx.commit().await?;
        Ok(Some((delivery, due)))
    })
    .await?;
    match retried {
        Some(retried) => Ok(retried),
        None => {
            let existing = crate::reads::get_delivery(pool, workspace_id, id).await?;
            Err(StoreError::Conflict(if existing.is_test {
                "test sends are not retried; send a new test instead".into()
            } else {
                "an attempt of this delivery is in flight; try again when it has finished".into()
            }))
        }
    }
}

pub async fn retrigger(
    pool: &PgPool,
    workspace_id: &str,
    filter: &RetriggerFilter,
    limit: u32,
    at: UnixMillis,
) -> StoreResult<u64> {
    let statuses: &Vec<&str> = &filter
        .statuses
        .iter()
        .filter(|s| **s != DeliveryStatus::Pending)
        .map(|s| s.as_str())
        .collect();
    retrying("retriggering deliveries", move || async move {
        let mut tx = pool.begin().await?;
        // Only finished deliveries are picked, and a row another node is retriggering is skipped,
        // so nothing is queued twice.
        let queued: Vec<bool> = sqlx::query_scalar(
            "WITH picked AS MATERIALIZED (
                 SELECT id FROM deliveries
                 WHERE webhook_id = $3 AND created_at >= $4 AND created_at < $5 AND NOT is_test
                   AND status = ANY($6) AND workspace_id = $7
                 LIMIT $8
                 FOR UPDATE SKIP LOCKED)
             UPDATE deliveries d SET status = 'pending', updated_at = $2,
                 next_attempt_at = CASE WHEN (SELECT w.state FROM webhooks w WHERE w.id = d.webhook_id) = 'active'
                                   THEN $1 ELSE NULL END
             FROM picked WHERE d.id = picked.id
             RETURNING d.next_attempt_at IS NOT NULL",
        )
        .bind(at)
        .bind(at)
        .bind(&filter.webhook_id)
        .bind(filter.since)
        .bind(filter.until)
        .bind(statuses)
        .bind(workspace_id)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(u64::try_from(queued.len()).unwrap_or(u64::MAX))
    })
    .await
}

pub async fn webhook_summary(
    pool: &PgPool,
    webhook_id: &str,
    since: UnixMillis,
    until: UnixMillis,
) -> StoreResult<SummaryData> {
    let counted = sqlx::query(
        "SELECT status, event_type, COUNT(*) AS n FROM deliveries
         WHERE webhook_id = $1 AND created_at >= $2 AND created_at < $3 AND NOT is_test
         GROUP BY status, event_type",
    )
    .bind(webhook_id)
    .bind(since)
    .bind(until)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    let mut counts = Vec::with_capacity(counted.len());
    for row in counted {
        let status: String = row.try_get("status").map_err(map_err)?;
        let Some(status) = DeliveryStatus::parse(&status) else {
            continue;
        };
        let n: i64 = row.try_get("n").map_err(map_err)?;
        counts.push((
            status,
            row.try_get("event_type").map_err(map_err)?,
            u64::try_from(n).unwrap_or(0),
        ));
    }
    let buckets = sqlx::query(
        "SELECT bucket, SUM(attempts)::BIGINT AS n FROM attempt_latency
         WHERE webhook_id = $1 AND hour >= $2 AND hour < $3
         GROUP BY bucket",
    )
    .bind(webhook_id)
    .bind(stats::hour_of(since))
    .bind(until)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    let mut latency = Vec::with_capacity(buckets.len());
    for row in buckets {
        let bucket: i64 = row.try_get("bucket").map_err(map_err)?;
        let n: i64 = row.try_get("n").map_err(map_err)?;
        latency.push((
            usize::try_from(bucket).unwrap_or(0),
            u64::try_from(n).unwrap_or(0),
        ));
    }
    Ok(SummaryData { counts, latency })
}

/// One small batch of retention: finished deliveries (attempts go with them), then events and
/// idempotency keys nothing needs any more. Each statement is its own short commit.
pub async fn purge_finished(pool: &PgPool, before: UnixMillis, limit: u32) -> StoreResult<u64> {
    let limit = i64::from(limit);
    let deliveries = sqlx::query(
        "WITH picked AS MATERIALIZED (
             SELECT id FROM deliveries WHERE status != 'pending' AND updated_at < $1
             LIMIT $2 FOR UPDATE SKIP LOCKED)
         DELETE FROM deliveries d USING picked WHERE d.id = picked.id",
    )
    .bind(before)
    .bind(limit)
    .execute(pool)
    .await
    .map_err(map_err)?
    .rows_affected();
    sqlx::query(
        "WITH picked AS MATERIALIZED (
             SELECT e.id FROM events e
             WHERE e.received_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
             LIMIT $2 FOR UPDATE SKIP LOCKED)
         DELETE FROM events e USING picked WHERE e.id = picked.id",
    )
    .bind(before)
    .bind(limit)
    .execute(pool)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "WITH picked AS MATERIALIZED (
             SELECT workspace_id, idempotency_key FROM idempotency_keys WHERE expires_at < $1
             LIMIT $2 FOR UPDATE SKIP LOCKED)
         DELETE FROM idempotency_keys k USING picked
         WHERE k.workspace_id = picked.workspace_id AND k.idempotency_key = picked.idempotency_key",
    )
    .bind(tidings_core::now_millis())
    .bind(limit)
    .execute(pool)
    .await
    .map_err(map_err)?;
    sqlx::query("DELETE FROM attempt_latency WHERE hour < $1")
        .bind(stats::hour_of(before))
        .execute(pool)
        .await
        .map_err(map_err)?;
    Ok(deliveries)
}

pub async fn claim_notifications(
    pool: &PgPool,
    now: UnixMillis,
    limit: u32,
    lease_ms: i64,
) -> StoreResult<Vec<Notification>> {
    let claimed = sqlx::query(
        "WITH picked AS MATERIALIZED (
             SELECT id FROM notifications WHERE next_attempt_at <= $2
             ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
         UPDATE notifications n SET next_attempt_at = $1
         FROM picked WHERE n.id = picked.id
         RETURNING n.id, n.event_type, n.payload, n.attempts, n.created_at",
    )
    .bind(now + lease_ms)
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    claimed
        .iter()
        .map(|row| {
            let attempts: i64 = row.try_get("attempts").map_err(map_err)?;
            Ok(Notification {
                id: row.try_get("id").map_err(map_err)?,
                event_type: row.try_get("event_type").map_err(map_err)?,
                payload: row.try_get("payload").map_err(map_err)?,
                attempts: u32::try_from(attempts).unwrap_or(0),
                created_at: row.try_get("created_at").map_err(map_err)?,
            })
        })
        .collect()
}

pub async fn finish_notification(
    pool: &PgPool,
    id: &str,
    retry_at: Option<UnixMillis>,
) -> StoreResult<()> {
    match retry_at {
        None => {
            sqlx::query("DELETE FROM notifications WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
        }
        Some(at) => sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = $1 WHERE id = $2",
        )
        .bind(at)
        .bind(id)
        .execute(pool)
        .await,
    }
    .map_err(map_err)?;
    Ok(())
}
