//! Publishing events with their deliveries, and reading events back.

use sqlx::{SqliteConnection, SqlitePool};
use tidings_store::*;

use tidings_core::now_millis;

use crate::{dispatch, map_err, rows};

/// Inserts events and deliveries inside the writer's transaction.
pub async fn insert(
    conn: &mut SqliteConnection,
    events: Vec<NewEvent>,
) -> StoreResult<Vec<Published>> {
    let mut published = Vec::with_capacity(events.len());
    for event in events {
        if let Some(key) = &event.idempotency_key {
            let earlier: Option<String> = sqlx::query_scalar(
                "SELECT event_id FROM idempotency_keys WHERE workspace_id = ? AND idempotency_key = ? AND expires_at > ?",
            )
            .bind(&event.workspace_id)
            .bind(key)
            .bind(event.received_at)
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?;
            if let Some(event_id) = earlier {
                let delivery_ids =
                    sqlx::query_scalar("SELECT id FROM deliveries WHERE event_id = ? ORDER BY id")
                        .bind(&event_id)
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(map_err)?;
                published.push(Published {
                    event_id,
                    delivery_ids,
                    duplicate: true,
                });
                continue;
            }
            sqlx::query(
                "INSERT INTO idempotency_keys (workspace_id, idempotency_key, event_id, expires_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (workspace_id, idempotency_key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at",
            )
            .bind(&event.workspace_id)
            .bind(key)
            .bind(&event.id)
            .bind(event.idempotency_until)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        }
        insert_event(&mut *conn, &event).await?;
        let mut delivery_ids = Vec::with_capacity(event.deliveries.len());
        for delivery in event.deliveries {
            let due = (delivery.status == DeliveryStatus::Pending).then_some(event.received_at);
            // A webhook deleted since fan-out read it simply gets no delivery. One disabled since then
            // (fan-out's view may be a few seconds old) gets a skipped delivery, never a pending one;
            // a paused one's delivery is held: pending with no due time, out of the claim's way.
            let inserted = sqlx::query(
                "INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status, next_attempt_at,
                                         created_at, updated_at)
                 SELECT ?, ?, ?, ?, ?,
                        CASE WHEN w.state = 'disabled' THEN 'skipped' ELSE ? END,
                        CASE WHEN w.state = 'active' THEN ? ELSE NULL END, ?, ?
                 FROM webhooks w WHERE w.id = ?",
            )
            .bind(&delivery.id)
            .bind(&event.workspace_id)
            .bind(&event.id)
            .bind(&delivery.webhook_id)
            .bind(&event.event_type)
            .bind(delivery.status.as_str())
            .bind(due)
            .bind(event.received_at)
            .bind(event.received_at)
            .bind(&delivery.webhook_id)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            if inserted.rows_affected() == 1 {
                delivery_ids.push(delivery.id);
            }
        }
        published.push(Published {
            event_id: event.id,
            delivery_ids,
            duplicate: false,
        });
    }
    Ok(published)
}

async fn insert_event(conn: &mut SqliteConnection, event: &NewEvent) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO events (id, workspace_id, event_type, occurred_at, received_at, data, campaign_id, client_id,
                 agent_id, category_id, idempotency_key)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&event.id)
    .bind(&event.workspace_id)
    .bind(&event.event_type)
    .bind(event.occurred_at)
    .bind(event.received_at)
    .bind(&event.data)
    .bind(&event.scope.campaign_id)
    .bind(&event.scope.client_id)
    .bind(&event.scope.agent_id)
    .bind(&event.scope.category_id)
    .bind(&event.idempotency_key)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Stores a test send in one go: the event, its finished test delivery and the attempt.
pub async fn insert_test_send(
    conn: &mut SqliteConnection,
    event: NewEvent,
    outcome: Outcome,
) -> StoreResult<()> {
    insert_event(&mut *conn, &event).await?;
    let status = match outcome.next {
        NextState::Delivered => "delivered",
        NextState::Failed | NextState::RetryAt(_) => "failed",
    };
    let attempt = &outcome.attempt;
    sqlx::query(
        "INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status, attempts, next_attempt_at,
                                 last_status_code, last_error_kind, is_test, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, 1, NULL, ?, ?, 1, ?, ?)",
    )
    .bind(&outcome.delivery_id)
    .bind(&event.workspace_id)
    .bind(&event.id)
    .bind(&outcome.webhook_id)
    .bind(&event.event_type)
    .bind(status)
    .bind(attempt.status_code.map(i64::from))
    .bind(attempt.error_kind.map(|k| k.as_str()))
    .bind(event.received_at)
    .bind(now_millis())
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    dispatch::insert_attempt(conn, &outcome.delivery_id, 1, attempt).await
}

pub async fn get_event(pool: &SqlitePool, workspace_id: &str, id: &str) -> StoreResult<Event> {
    let row = sqlx::query("SELECT * FROM events WHERE id = ? AND workspace_id = ?")
        .bind(id)
        .bind(workspace_id)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    rows::event(&row)
}

pub async fn list_events(
    pool: &SqlitePool,
    workspace_id: &str,
    page: &Page,
) -> StoreResult<Vec<Event>> {
    let before = page.after.clone().unwrap_or_else(|| "~".to_owned());
    let rows = sqlx::query(
        "SELECT * FROM events WHERE workspace_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
    )
    .bind(workspace_id)
    .bind(before)
    .bind(i64::from(page.limit.clamp(1, 1000)))
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    rows.iter().map(rows::event).collect()
}
