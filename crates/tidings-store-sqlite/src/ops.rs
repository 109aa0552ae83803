//! Delivery operations: manual retry, retrigger, summaries, retention and the notification outbox.

use sqlx::{Row, SqlitePool};
use tidings_core::UnixMillis;
use tidings_core::stats;
use tidings_store::*;

use crate::claims::Claims;
use crate::{map_err, rows};

pub async fn retry_delivery(
    pool: &SqlitePool,
    claims: &Claims,
    workspace_id: &str,
    id: &str,
    at: UnixMillis,
) -> StoreResult<Delivery> {
    if claims.lock().is_claimed(id) {
        return Err(StoreError::Conflict(
            "an attempt of this delivery is in flight; try again when it has finished".into(),
        ));
    }
    let row = sqlx::query(
        "UPDATE deliveries SET status = 'pending', updated_at = ?2,
             next_attempt_at = CASE WHEN (SELECT w.state FROM webhooks w WHERE w.id = deliveries.webhook_id) = 'active'
                               THEN ?1 ELSE NULL END
         WHERE id = ?3 AND workspace_id = ?4 AND is_test = 0
         RETURNING *",
    )
    .bind(at)
    .bind(at)
    .bind(id)
    .bind(workspace_id)
    .fetch_optional(pool)
    .await
    .map_err(map_err)?;
    match row {
        Some(row) => rows::delivery(&row),
        None => {
            let existing = crate::reads::get_delivery(pool, workspace_id, id).await?;
            Err(if existing.is_test {
                StoreError::Conflict("test sends are not retried; send a new test instead".into())
            } else {
                // The update misses no other delivery that this read finds.
                StoreError::NotFound
            })
        }
    }
}

pub async fn retrigger(
    pool: &SqlitePool,
    workspace_id: &str,
    filter: &RetriggerFilter,
    limit: u32,
    at: UnixMillis,
) -> StoreResult<u64> {
    let statuses: Vec<&str> = filter
        .statuses
        .iter()
        .filter(|s| **s != DeliveryStatus::Pending)
        .map(|s| s.as_str())
        .collect();
    let result = sqlx::query(
        "UPDATE deliveries SET status = 'pending', updated_at = ?2,
             next_attempt_at = CASE WHEN (SELECT w.state FROM webhooks w WHERE w.id = deliveries.webhook_id) = 'active'
                               THEN ?1 ELSE NULL END
         WHERE id IN (
             SELECT id FROM deliveries
             WHERE webhook_id = ?3 AND created_at >= ?4 AND created_at < ?5 AND is_test = 0
               AND status IN (SELECT value FROM json_each(?6)) AND workspace_id = ?7
             LIMIT ?8)",
    )
    .bind(at)
    .bind(at)
    .bind(&filter.webhook_id)
    .bind(filter.since)
    .bind(filter.until)
    .bind(crate::bind::to_json(&statuses)?)
    .bind(workspace_id)
    .bind(i64::from(limit))
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(result.rows_affected())
}

pub async fn webhook_summary(
    pool: &SqlitePool,
    webhook_id: &str,
    since: UnixMillis,
    until: UnixMillis,
) -> StoreResult<SummaryData> {
    let counted = sqlx::query(
        "SELECT status, event_type, COUNT(*) AS n FROM deliveries
         WHERE webhook_id = ? AND created_at >= ? AND created_at < ? AND is_test = 0
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
        "SELECT bucket, SUM(attempts) AS n FROM attempt_latency
         WHERE webhook_id = ? AND hour >= ? AND hour < ?
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
pub async fn purge_finished(pool: &SqlitePool, before: UnixMillis, limit: u32) -> StoreResult<u64> {
    let limit = i64::from(limit);
    let deliveries = sqlx::query(
        "DELETE FROM deliveries WHERE id IN (
             SELECT id FROM deliveries WHERE status != 'pending' AND updated_at < ? LIMIT ?)",
    )
    .bind(before)
    .bind(limit)
    .execute(pool)
    .await
    .map_err(map_err)?
    .rows_affected();
    sqlx::query(
        "DELETE FROM events WHERE id IN (
             SELECT e.id FROM events e
             WHERE e.received_at < ? AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
             LIMIT ?)",
    )
    .bind(before)
    .bind(limit)
    .execute(pool)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE (workspace_id, idempotency_key) IN (
             SELECT workspace_id, idempotency_key FROM idempotency_keys WHERE expires_at < ? LIMIT ?)",
    )
    .bind(tidings_core::now_millis())
    .bind(limit)
    .execute(pool)
    .await
    .map_err(map_err)?;
    sqlx::query("DELETE FROM attempt_latency WHERE hour < ?")
        .bind(stats::hour_of(before))
        .execute(pool)
        .await
        .map_err(map_err)?;
    Ok(deliveries)
}

pub async fn claim_notifications(
    pool: &SqlitePool,
    now: UnixMillis,
    limit: u32,
    lease_ms: i64,
) -> StoreResult<Vec<Notification>> {
    let claimed = sqlx::query(
        "UPDATE notifications SET next_attempt_at = ?
         WHERE id IN (SELECT id FROM notifications WHERE next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?)
         RETURNING id, event_type, payload, attempts, created_at",
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
    pool: &SqlitePool,
    id: &str,
    retry_at: Option<UnixMillis>,
) -> StoreResult<()> {
    match retry_at {
        None => {
            sqlx::query("DELETE FROM notifications WHERE id = ?")
                .bind(id)
                .execute(pool)
                .await
        }
        Some(at) => sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = ? WHERE id = ?",
        )
        .bind(at)
        .bind(id)
        .execute(pool)
        .await,
    }
    .map_err(map_err)?;
    Ok(())
}
