//! Publishing events with their deliveries, and reading events back.

use std::collections::HashSet;

use sqlx::{SqliteConnection, SqlitePool};
use tidings_store::*;

use tidings_core::now_millis;

use crate::bind::{Packed, from_json, to_json};
use crate::{dispatch, map_err, rows};

/// Inserts events and deliveries inside the writer's transaction.
///
/// Events without an idempotency key (the common case) go in with two statements for the whole
/// job, whatever its size: each statement is a round trip to SQLite's worker thread, and those
/// round trips, not SQLite itself, are what publishing costs.
pub async fn insert(
    conn: &mut SqliteConnection,
    events: Vec<NewEvent>,
) -> StoreResult<Vec<Published>> {
    let mut published: Vec<Option<Published>> = vec![None; events.len()];
    let mut plain = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        if event.idempotency_key.is_some() {
            published[index] = Some(insert_keyed(&mut *conn, event).await?);
        } else {
            plain.push((index, event));
        }
    }
    if !plain.is_empty() {
        for (index, result) in insert_plain(&mut *conn, plain).await? {
            published[index] = Some(result);
        }
    }
    Ok(published.into_iter().flatten().collect())
}

/// An event with an idempotency key: the first one within the key's window wins.
async fn insert_keyed(conn: &mut SqliteConnection, event: NewEvent) -> StoreResult<Published> {
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
            return Ok(Published {
                event_id,
                delivery_ids,
                duplicate: true,
            });
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
    let mut done = insert_plain(conn, vec![(0, event)]).await?;
    done.pop()
        .map(|(_, published)| published)
        .ok_or_else(|| StoreError::Internal("an inserted event went missing".into()))
}

/// Inserts events and their deliveries with one statement each for the whole list; returns what
/// each (index, event) published.
async fn insert_plain(
    conn: &mut SqliteConnection,
    events: Vec<(usize, NewEvent)>,
) -> StoreResult<Vec<(usize, Published)>> {
    // Bodies go in `Packed`, not in the JSON rows.
    type EventRow<'a> = (
        &'a str,
        &'a str,
        &'a str,
        i64,
        i64,
        usize,
        usize,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let mut bodies = Packed::with_capacity(events.iter().map(|(_, e)| e.data.len()).sum());
    let rows: Vec<EventRow> = events
        .iter()
        .map(|(_, e)| {
            let (start, length) = bodies.push(&e.data);
            (
                e.id.as_str(),
                e.workspace_id.as_str(),
                e.event_type.as_str(),
                e.occurred_at,
                e.received_at,
                start,
                length,
                e.scope.campaign_id.as_deref(),
                e.scope.client_id.as_deref(),
                e.scope.agent_id.as_deref(),
                e.scope.category_id.as_deref(),
                e.idempotency_key.as_deref(),
            )
        })
        .collect();
    sqlx::query(
        "INSERT INTO events (id, workspace_id, event_type, occurred_at, received_at, data, campaign_id, client_id,
                 agent_id, category_id, idempotency_key)
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4,
                CAST(substr(?2, value->>5, value->>6) AS TEXT), value->>7, value->>8,
                value->>9, value->>10, value->>11
         FROM jsonb_each(?1)",
    )
    .bind(to_json(&rows)?)
    .bind(bodies.into_blob())
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;

    type DeliveryRow<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        Option<i64>,
        i64,
    );
    let deliveries: Vec<DeliveryRow> = events
        .iter()
        .flat_map(|(_, e)| {
            e.deliveries.iter().map(move |d| {
                (
                    d.id.as_str(),
                    e.workspace_id.as_str(),
                    e.id.as_str(),
                    d.webhook_id.as_str(),
                    e.event_type.as_str(),
                    d.status.as_str(),
                    (d.status == DeliveryStatus::Pending).then_some(e.received_at),
                    e.received_at,
                )
            })
        })
        .collect();
    let inserted: Option<HashSet<String>> = if deliveries.is_empty() {
        None
    } else {
        // A webhook deleted since fan-out read it simply gets no delivery. One disabled since then
        // (fan-out's view may be a few seconds old) gets a skipped delivery, never a pending one;
        // a paused one's delivery is held: pending with no due time, out of the claim's way.
        let deliveries_json = to_json(&deliveries)?;
        let done = sqlx::query(
            "INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status, next_attempt_at,
                                     created_at, updated_at)
             SELECT j.value->>0, j.value->>1, j.value->>2, j.value->>3, j.value->>4,
                    CASE WHEN w.state = 'disabled' THEN 'skipped' ELSE j.value->>5 END,
                    CASE WHEN w.state = 'active' THEN j.value->>6 ELSE NULL END,
                    j.value->>7, j.value->>7
             FROM jsonb_each(?) j JOIN webhooks w ON w.id = j.value->>3",
        )
        .bind(&deliveries_json)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
        // Rows coming back cross to SQLite's thread one by one, so which deliveries went in is
        // asked only when some did not (their webhook was deleted meanwhile).
        if done.rows_affected() == deliveries.len() as u64 {
            None
        } else {
            let ids: String = sqlx::query_scalar(
                "SELECT json_group_array(d.id) FROM jsonb_each(?) j JOIN deliveries d ON d.id = j.value->>0",
            )
            .bind(&deliveries_json)
            .fetch_one(&mut *conn)
            .await
            .map_err(map_err)?;
            Some(from_json::<Vec<String>>(&ids)?.into_iter().collect())
        }
    };
    Ok(events
        .into_iter()
        .map(|(index, event)| {
            let delivery_ids = event
                .deliveries
                .into_iter()
                .map(|d| d.id)
                .filter(|id| inserted.as_ref().is_none_or(|ids| ids.contains(id)))
                .collect();
            (
                index,
                Published {
                    event_id: event.id,
                    delivery_ids,
                    duplicate: false,
                },
            )
        })
        .collect())
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
