//! Publishing events with their deliveries, and reading events back.

use std::collections::HashMap;

use sqlx::{PgConnection, PgExecutor, PgPool};
use tidings_core::now_millis;
use tidings_store::*;

use crate::errors::{TxResult, retrying};
use crate::{dispatch, map_err, rows};

/// Stores events and all their deliveries atomically; returns what was published and whether any
/// delivery is due (every node has then been told). Events and their deliveries go in with one
/// statement, however many there are: each statement is a round trip, which costs far more than
/// PostgreSQL's work per row, and a batch without idempotency keys needs no transaction around
/// that one statement (one round trip instead of four). An event with an idempotency key first
/// writes what came before it, so a key repeated within the batch finds the earlier event stored.
pub async fn publish(pool: &PgPool, events: &[NewEvent]) -> StoreResult<(Vec<Published>, bool)> {
    retrying("publishing events", move || async move {
        if events.iter().all(|e| e.idempotency_key.is_none()) {
            let all: Vec<usize> = (0..events.len()).collect();
            let mut published = vec![None; events.len()];
            let any_due = insert(pool, events, &all, &mut published).await?;
            return Ok((published.into_iter().flatten().collect(), any_due));
        }
        let mut tx = pool.begin().await?;
        let mut published: Vec<Option<Published>> = Vec::with_capacity(events.len());
        let mut waiting: Vec<usize> = Vec::with_capacity(events.len());
        let mut any_due = false;
        for (index, event) in events.iter().enumerate() {
            if let Some(key) = &event.idempotency_key {
                any_due |= insert(&mut *tx, events, &waiting, &mut published).await?;
                waiting.clear();
                if let Some(earlier) = claim_idempotency_key(&mut tx, event, key).await? {
                    published.push(Some(earlier));
                    continue;
                }
            }
            published.push(None);
            waiting.push(index);
        }
        any_due |= insert(&mut *tx, events, &waiting, &mut published).await?;
        tx.commit().await?;
        let published = published.into_iter().flatten().collect();
        Ok((published, any_due))
    })
    .await
}

/// Inserts the `waiting` events (indexes into `events`) and their deliveries, and fills in their
/// places in `published`; returns whether any delivery is due.
async fn insert(
    conn: impl PgExecutor<'_>,
    events: &[NewEvent],
    waiting: &[usize],
    published: &mut [Option<Published>],
) -> TxResult<bool> {
    if waiting.is_empty() {
        return Ok(false);
    }
    let batch: Vec<&NewEvent> = waiting.iter().map(|&i| &events[i]).collect();
    let stored = insert_rows(conn, &batch).await?;
    let mut due = false;
    for &index in waiting {
        let (answer, any_due) = answer(&events[index], &stored);
        published[index] = Some(answer);
        due |= any_due;
    }
    Ok(due)
}

/// Inserts several publishes (none with an idempotency key) in one statement; answers each with
/// what it published and whether any of its deliveries is due.
pub async fn insert_requests(
    conn: &mut PgConnection,
    requests: &[&[NewEvent]],
) -> TxResult<Vec<(Vec<Published>, bool)>> {
    let batch: Vec<&NewEvent> = requests.iter().flat_map(|events| events.iter()).collect();
    let stored = insert_rows(conn, &batch).await?;
    Ok(requests
        .iter()
        .map(|events| {
            let mut due = false;
            let published = events
                .iter()
                .map(|event| {
                    let (answer, any_due) = answer(event, &stored);
                    due |= any_due;
                    answer
                })
                .collect();
            (published, due)
        })
        .collect())
}

/// What was stored of `event`, given the deliveries the insert returned (id → due); and whether
/// any of its deliveries is due.
fn answer(event: &NewEvent, stored: &HashMap<String, bool>) -> (Published, bool) {
    let mut due = false;
    let delivery_ids = event
        .deliveries
        .iter()
        .filter_map(|d| {
            let is_due = stored.get(&d.id)?;
            due |= is_due;
            Some(d.id.clone())
        })
        .collect();
    let published = Published {
        event_id: event.id.clone(),
        delivery_ids,
        duplicate: false,
    };
    (published, due)
}

/// Takes the idempotency key for `event`, or returns the earlier event still holding it. Two
/// publishes racing with one key meet on the key's primary key: the second waits for the first to
/// commit, then finds the key taken and returns the first event.
async fn claim_idempotency_key(
    conn: &mut PgConnection,
    event: &NewEvent,
    key: &str,
) -> TxResult<Option<Published>> {
    // An expired key is taken over; a live one is left alone (but locked until this commit, so
    // retention cannot delete it under us).
    let taken: Option<String> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (workspace_id, idempotency_key, event_id, expires_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (workspace_id, idempotency_key) DO UPDATE
             SET event_id = EXCLUDED.event_id, expires_at = EXCLUDED.expires_at
             WHERE idempotency_keys.expires_at <= $5
         RETURNING event_id",
    )
    .bind(&event.workspace_id)
    .bind(key)
    .bind(&event.id)
    .bind(event.idempotency_until)
    .bind(event.received_at)
    .fetch_optional(&mut *conn)
    .await?;
    if taken.is_some() {
        return Ok(None);
    }
    let event_id: String = sqlx::query_scalar(
        "SELECT event_id FROM idempotency_keys WHERE workspace_id = $1 AND idempotency_key = $2",
    )
    .bind(&event.workspace_id)
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    let delivery_ids =
        sqlx::query_scalar("SELECT id FROM deliveries WHERE event_id = $1 ORDER BY id")
            .bind(&event_id)
            .fetch_all(&mut *conn)
            .await?;
    Ok(Some(Published {
        event_id,
        delivery_ids,
        duplicate: true,
    }))
}

/// Inserts events and their deliveries in one statement, whatever the fan-out; returns the
/// deliveries stored, each with whether it is due.
async fn insert_rows(
    conn: impl PgExecutor<'_>,
    events: &[&NewEvent],
) -> TxResult<HashMap<String, bool>> {
    let column = |f: fn(&NewEvent) -> &str| events.iter().map(|e| f(e)).collect::<Vec<&str>>();
    let optional = |f: fn(&NewEvent) -> Option<&str>| {
        events.iter().map(|e| f(e)).collect::<Vec<Option<&str>>>()
    };
    let times = |f: fn(&NewEvent) -> i64| events.iter().map(|e| f(e)).collect::<Vec<i64>>();
    let count = events.iter().map(|e| e.deliveries.len()).sum();
    let mut ids = Vec::with_capacity(count);
    let mut webhooks = Vec::with_capacity(count);
    let mut statuses = Vec::with_capacity(count);
    let mut event_ids = Vec::with_capacity(count);
    for event in events {
        for delivery in &event.deliveries {
            ids.push(delivery.id.as_str());
            webhooks.push(delivery.webhook_id.as_str());
            statuses.push(delivery.status.as_str());
            event_ids.push(event.id.as_str());
        }
    }
    // A webhook deleted since fan-out read it simply gets no delivery (the key-share lock waits for
    // a delete in progress, which then drops the row; one deleted after this commit takes the
    // delivery with it: no foreign key checks either, see migration 0003). One
    // disabled since then (fan-out's view may be a few seconds old) gets a skipped delivery, never a
    // pending one; a paused one's delivery is held: pending with no due time, out of the claim's way.
    let inserted: Vec<(String, bool)> = sqlx::query_as(
        "WITH e AS (
             INSERT INTO events (id, workspace_id, event_type, occurred_at, received_at, data, campaign_id,
                                 client_id, agent_id, category_id, idempotency_key)
             SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::TEXT[],
                                  $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[])
             RETURNING id, workspace_id, event_type, received_at)
         INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status, next_attempt_at,
                                 created_at, updated_at)
         SELECT n.id, e.workspace_id, e.id, n.webhook_id, e.event_type,
                CASE WHEN w.state = 'disabled' THEN 'skipped' ELSE n.status END,
                CASE WHEN w.state = 'active' AND n.status = 'pending' THEN e.received_at ELSE NULL END,
                e.received_at, e.received_at
         FROM UNNEST($12::TEXT[], $13::TEXT[], $14::TEXT[], $15::TEXT[])
              WITH ORDINALITY AS n(id, event_id, webhook_id, status, ord)
         JOIN e ON e.id = n.event_id
         JOIN webhooks w ON w.id = n.webhook_id
         ORDER BY n.ord
         FOR KEY SHARE OF w
         RETURNING id, next_attempt_at IS NOT NULL",
    )
    .bind(column(|e| &e.id))
    .bind(column(|e| &e.workspace_id))
    .bind(column(|e| &e.event_type))
    .bind(times(|e| e.occurred_at))
    .bind(times(|e| e.received_at))
    .bind(column(|e| &e.data))
    .bind(optional(|e| e.scope.campaign_id.as_deref()))
    .bind(optional(|e| e.scope.client_id.as_deref()))
    .bind(optional(|e| e.scope.agent_id.as_deref()))
    .bind(optional(|e| e.scope.category_id.as_deref()))
    .bind(optional(|e| e.idempotency_key.as_deref()))
    .bind(&ids)
    .bind(&event_ids)
    .bind(&webhooks)
    .bind(&statuses)
    .fetch_all(conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// Stores a test send in one go: the event, its finished test delivery and the attempt.
pub async fn insert_test_send(
    pool: &PgPool,
    event: &NewEvent,
    outcome: &Outcome,
) -> StoreResult<()> {
    retrying("storing a test send", move || async move {
        let mut tx = pool.begin().await?;
        // No foreign key holds the webhook (see migration 0003): this lock keeps it until the
        // commit, and a webhook deleted meanwhile keeps no test delivery.
        let webhook: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM webhooks WHERE id = $1 FOR KEY SHARE")
                .bind(&outcome.webhook_id)
                .fetch_optional(&mut *tx)
                .await?;
        if webhook.is_none() {
            return Err(StoreError::NotFound.into());
        }
        insert_rows(&mut *tx, &[event]).await?;
        let status = match outcome.next {
            NextState::Delivered => "delivered",
            NextState::Failed | NextState::RetryAt(_) => "failed",
        };
        let attempt = &outcome.attempt;
        sqlx::query(
            "INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status, attempts, next_attempt_at,
                                     last_status_code, last_error_kind, is_test, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 1, NULL, $7, $8, TRUE, $9, $10)",
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
        .execute(&mut *tx)
        .await?;
        dispatch::insert_attempts(&mut tx, &[(&outcome.delivery_id, 1, attempt)]).await?;
        tx.commit().await?;
        Ok(())
    })
    .await
}

pub async fn get_event(pool: &PgPool, workspace_id: &str, id: &str) -> StoreResult<Event> {
    let row = sqlx::query("SELECT * FROM events WHERE id = $1 AND workspace_id = $2")
        .bind(id)
        .bind(workspace_id)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    rows::event(&row)
}

/// Newest first; the cursor is the last id of the previous page.
pub async fn list_events(
    pool: &PgPool,
    workspace_id: &str,
    page: &Page,
) -> StoreResult<Vec<Event>> {
    let limit = i64::from(page.limit.clamp(1, 1000));
    let rows = match &page.after {
        Some(before) => sqlx::query(
            "SELECT * FROM events WHERE workspace_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(workspace_id)
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await,
        None => {
            sqlx::query("SELECT * FROM events WHERE workspace_id = $1 ORDER BY id DESC LIMIT $2")
                .bind(workspace_id)
                .bind(limit)
                .fetch_all(pool)
                .await
        }
    }
    .map_err(map_err)?;
    rows.iter().map(rows::event).collect()
}
