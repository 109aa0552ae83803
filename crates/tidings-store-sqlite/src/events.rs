//! Publishing events with their deliveries, and reading events back.

use foldhash::HashSet;

use rusqlite::{Connection, params};
use sqlx::SqlitePool;
use tidings_store::*;

use tidings_core::now_millis;

use crate::bind::{NULL, Rows, from_json, int, opt_text, text, to_json};
use crate::rows::{execute, query_optional, query_rows, query_value};
use crate::{dispatch, map_err, rows};

/// Fails with `NotFound` unless `sql` finds a row.
fn exists(conn: &Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> StoreResult<()> {
    query_optional(conn, sql, params, |_| Ok(()))?.ok_or(StoreError::NotFound)
}

/// Inserts events and deliveries inside the writer's transaction.
///
/// Events without an idempotency key (the common case) go in with two statements for the whole
/// job, whatever its size.
pub fn insert(conn: &Connection, events: Vec<NewEvent>) -> StoreResult<Vec<Published>> {
    // The writer's connection checks no foreign keys: a workspace deleted since the API read it
    // fails the job here, as its key would (a job's events are usually of one workspace).
    let mut checked: Option<&str> = None;
    for event in &events {
        if checked != Some(event.workspace_id.as_str()) {
            exists(
                conn,
                "SELECT 1 FROM workspaces WHERE id = ?",
                &[&event.workspace_id],
            )?;
            checked = Some(&event.workspace_id);
        }
    }
    let mut published: Vec<Option<Published>> = vec![None; events.len()];
    let mut plain = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        if event.idempotency_key.is_some() {
            published[index] = Some(insert_keyed(conn, event)?);
        } else {
            plain.push((index, event));
        }
    }
    if !plain.is_empty() {
        for (index, result) in insert_plain(conn, plain)? {
            published[index] = Some(result);
        }
    }
    Ok(published.into_iter().flatten().collect())
}

/// An event with an idempotency key: the first one within the key's window wins.
fn insert_keyed(conn: &Connection, event: NewEvent) -> StoreResult<Published> {
    if let Some(key) = &event.idempotency_key {
        let earlier: Option<String> = query_optional(
            conn,
            "SELECT event_id FROM idempotency_keys WHERE workspace_id = ? AND idempotency_key = ? AND expires_at > ?",
            params![event.workspace_id, key, event.received_at],
            |row| row.get(0),
        )?;
        if let Some(event_id) = earlier {
            let delivery_ids = query_rows(
                conn,
                "SELECT id FROM deliveries WHERE event_id = ? ORDER BY id",
                [&event_id],
                |row| row.get(0),
            )?;
            return Ok(Published {
                event_id,
                delivery_ids,
                duplicate: true,
            });
        }
        execute(
            conn,
            "INSERT INTO idempotency_keys (workspace_id, idempotency_key, event_id, expires_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (workspace_id, idempotency_key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at",
            params![event.workspace_id, key, event.id, event.idempotency_until],
        )?;
    }
    let mut done = insert_plain(conn, vec![(0, event)])?;
    done.pop()
        .map(|(_, published)| published)
        .ok_or_else(|| StoreError::Internal("an inserted event went missing".into()))
}

/// Inserts events and their deliveries with one statement each for the whole list; returns what
/// each (index, event) published.
fn insert_plain(
    conn: &Connection,
    events: Vec<(usize, NewEvent)>,
) -> StoreResult<Vec<(usize, Published)>> {
    let mut rows = Rows::with_capacity(events.len());
    for (_, e) in &events {
        rows.push([
            text(&e.id),
            text(&e.workspace_id),
            text(&e.event_type),
            int(e.occurred_at),
            int(e.received_at),
            text(&e.data),
            opt_text(e.scope.campaign_id.as_deref()),
            opt_text(e.scope.client_id.as_deref()),
            opt_text(e.scope.agent_id.as_deref()),
            opt_text(e.scope.category_id.as_deref()),
            opt_text(e.idempotency_key.as_deref()),
        ]);
    }
    rows.execute(
        conn,
        &[],
        (
            "INSERT INTO events (id, workspace_id, event_type, occurred_at, received_at, data, campaign_id, client_id,
                     agent_id, category_id, idempotency_key)
             VALUES ",
            "",
        ),
    )?;

    let mut deliveries = Rows::with_capacity(events.iter().map(|(_, e)| e.deliveries.len()).sum());
    for (_, e) in &events {
        for d in &e.deliveries {
            deliveries.push([
                text(&d.id),
                text(&e.workspace_id),
                text(&e.id),
                text(&d.webhook_id),
                text(&e.event_type),
                text(d.status.as_str()),
                if d.status == DeliveryStatus::Pending {
                    int(e.received_at)
                } else {
                    NULL
                },
                int(e.received_at),
            ]);
        }
    }
    let inserted: Option<HashSet<String>> = if deliveries.is_empty() {
        None
    } else {
        // A webhook deleted since fan-out read it simply gets no delivery. One disabled since then
        // (fan-out's view may be a few seconds old) gets a skipped delivery, never a pending one;
        // a paused one's delivery is held: pending with no due time, out of the claim's way.
        let done = deliveries.execute(
            conn,
            &[],
            (
                "INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status, next_attempt_at,
                                         created_at, updated_at)
                 SELECT j.column1, j.column2, j.column3, j.column4, j.column5,
                        CASE WHEN w.state = 'disabled' THEN 'skipped' ELSE j.column6 END,
                        CASE WHEN w.state = 'active' THEN j.column7 ELSE NULL END,
                        j.column8, j.column8
                 FROM (VALUES ",
                ") j JOIN webhooks w ON w.id = j.column4",
            ),
        )?;
        // Which deliveries went in is asked only when some did not (their webhook was deleted
        // meanwhile).
        if done == deliveries.len() {
            None
        } else {
            let ids: Vec<&str> = events
                .iter()
                .flat_map(|(_, e)| e.deliveries.iter().map(|d| d.id.as_str()))
                .collect();
            let ids: String = query_value(
                conn,
                "SELECT json_group_array(d.id) FROM json_each(?) j JOIN deliveries d ON d.id = j.value",
                [to_json(&ids)?],
            )?;
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

fn insert_event(conn: &Connection, event: &NewEvent) -> StoreResult<()> {
    execute(
        conn,
        "INSERT INTO events (id, workspace_id, event_type, occurred_at, received_at, data, campaign_id, client_id,
                 agent_id, category_id, idempotency_key)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            event.id,
            event.workspace_id,
            event.event_type,
            event.occurred_at,
            event.received_at,
            event.data,
            event.scope.campaign_id,
            event.scope.client_id,
            event.scope.agent_id,
            event.scope.category_id,
            event.idempotency_key,
        ],
    )?;
    Ok(())
}

/// Stores a test send in one go: the event, its finished test delivery and the attempt.
pub fn insert_test_send(conn: &Connection, event: NewEvent, outcome: Outcome) -> StoreResult<()> {
    // No foreign keys on the writer's connection: the webhook (and with it its workspace) must
    // still be there.
    exists(
        conn,
        "SELECT 1 FROM webhooks WHERE id = ? AND workspace_id = ?",
        &[&outcome.webhook_id, &event.workspace_id],
    )?;
    insert_event(conn, &event)?;
    let status = match outcome.next {
        NextState::Delivered => "delivered",
        NextState::Failed | NextState::RetryAt(_) => "failed",
    };
    let attempt = &outcome.attempt;
    execute(
        conn,
        "INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status, attempts, next_attempt_at,
                                 last_status_code, last_error_kind, is_test, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, 1, NULL, ?, ?, 1, ?, ?)",
        params![
            outcome.delivery_id,
            event.workspace_id,
            event.id,
            outcome.webhook_id,
            event.event_type,
            status,
            attempt.status_code,
            attempt.error_kind.map(|k| k.as_str()),
            event.received_at,
            now_millis(),
        ],
    )?;
    dispatch::insert_attempt(conn, &outcome.delivery_id, 1, attempt)
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
