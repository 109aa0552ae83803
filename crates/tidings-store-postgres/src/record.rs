//! Recording finished attempts: the deliveries' new state, the attempts, the latency rollup,
//! endpoint health, auto-disable and operator notifications, in one transaction per call.
//!
//! Each step is one statement for the whole batch. The webhooks' rows are locked (`FOR NO KEY
//! UPDATE`, in id order) and read before their health changes, the batch's outcomes are folded into
//! each webhook's health in order exactly as the SQLite store folds them (which decides auto-disable),
//! and the counters are written as increments; two nodes recording for one webhook at once queue
//! behind each other and never lose or double a count.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{Connection, PgConnection, PgPool, Row};
use tidings_core::ids::{IdKind, new_id};
use tidings_core::{UnixMillis, now_millis, stats};
use tidings_store::*;

use crate::dispatch::{insert_attempts, storable};
use crate::errors::{TxResult, retrying};
use crate::held::Held;

/// An outcome whose delivery this node still held, so it was applied.
struct Applied<'a> {
    outcome: &'a Outcome,
    number: i64,
    workspace_id: String,
    event_id: String,
    event_type: String,
}

/// A webhook's row as locked, and what this batch's outcomes do to it, applied in order exactly as
/// the SQLite store applies them.
struct Endpoint {
    workspace_id: String,
    spec: String,
    /// Health as it stands after each outcome, for the auto-disable decisions.
    failing_since: Option<UnixMillis>,
    failures: i64,
    /// What is written: whether the batch has a success, and the failures after the last success
    /// (all of them if none), with the start of the first of those.
    succeeded: bool,
    failures_after: i64,
    first_failure_after: Option<UnixMillis>,
    last_failure_reason: Option<String>,
    /// The first reason in the batch to disable the webhook (410 Gone, or failing too long).
    disable: Option<String>,
}

impl Endpoint {
    fn succeed(&mut self) {
        self.failing_since = None;
        self.failures = 0;
        self.succeeded = true;
        self.failures_after = 0;
        self.first_failure_after = None;
    }

    fn fail(&mut self, outcome: &Outcome, reason: &str, policy: &HealthPolicy, now: UnixMillis) {
        let started_at = outcome.attempt.started_at;
        let since = *self.failing_since.get_or_insert(started_at);
        self.failures += 1;
        self.failures_after += 1;
        self.first_failure_after.get_or_insert(started_at);
        self.last_failure_reason = Some(reason.to_owned());
        if self.disable.is_none() {
            let failures = self.failures;
            self.disable = outcome.disable_webhook.clone().or_else(|| {
                (now - since >= policy.auto_disable_after_ms
                    && failures >= i64::from(policy.auto_disable_min_failures))
                .then(|| {
                    format!(
                        "failing: every attempt failed since {} ({failures} attempts; last: {reason})",
                        tidings_core::format_rfc3339(since)
                    )
                })
            });
        }
    }
}

/// A notification to queue.
struct Queued {
    event_type: &'static str,
    payload: serde_json::Value,
}

pub async fn record(
    pool: &PgPool,
    held: &Held,
    node: &str,
    outcomes: &[Outcome],
    policy: &HealthPolicy,
) -> StoreResult<()> {
    let mut seen = HashSet::with_capacity(outcomes.len());
    let unique: &Vec<&Outcome> = &outcomes
        .iter()
        .filter(|outcome| {
            let first = seen.insert(outcome.delivery_id.as_str());
            if !first {
                // Recorded just before in this batch, which ended this node's claim.
                tracing::warn!(delivery_id = %outcome.delivery_id, "the claim on this delivery was lost before its attempt was recorded");
            }
            first
        })
        .collect();
    if unique.is_empty() {
        return Ok(());
    }
    retrying("recording attempts", move || {
        record_once(pool, held, node, unique, policy)
    })
    .await
}

async fn record_once(
    pool: &PgPool,
    held: &Held,
    node: &str,
    outcomes: &[&Outcome],
    policy: &HealthPolicy,
) -> TxResult<()> {
    held.run(pool, async |conn| {
        record_on(conn, node, outcomes, policy).await
    })
    .await
}

async fn record_on(
    conn: &mut PgConnection,
    node: &str,
    outcomes: &[&Outcome],
    policy: &HealthPolicy,
) -> TxResult<()> {
    let now = now_millis();
    // Custom plans for the deliveries' update: see below. Set with the BEGIN, in its round trip.
    let mut tx = conn
        .begin_with("BEGIN; SET LOCAL plan_cache_mode TO force_custom_plan")
        .await?;
    // Webhooks first (the order every writer takes them in, before their deliveries): a pause or
    // disable committed before this point is seen below, and one after it waits for this commit.
    let mut endpoints = lock_endpoints(&mut tx, outcomes).await?;
    let applied = update_deliveries(&mut tx, node, outcomes, now).await?;
    if applied.is_empty() {
        tx.rollback().await?;
        return Ok(());
    }
    let attempts: Vec<(&str, i64, &AttemptRecord)> = applied
        .iter()
        .map(|a| (a.outcome.delivery_id.as_str(), a.number, &a.outcome.attempt))
        .collect();
    insert_attempts(&mut tx, &attempts).await?;
    add_latency(&mut tx, &applied).await?;

    let mut queued = Vec::new();
    for applied in &applied {
        let outcome = applied.outcome;
        let endpoint = endpoints.get_mut(outcome.webhook_id.as_str());
        match outcome.next {
            NextState::Delivered => {
                if let Some(endpoint) = endpoint {
                    endpoint.succeed();
                }
            }
            NextState::Failed | NextState::RetryAt(_) => {
                let reason = failure_reason(&outcome.attempt);
                if let Some(endpoint) = endpoint {
                    endpoint.fail(outcome, &reason, policy, now);
                }
                if outcome.next == NextState::Failed && policy.notify_operator {
                    queued.push(Queued {
                        event_type: "tidings.delivery.failed",
                        payload: serde_json::json!({
                            "workspace_id": applied.workspace_id,
                            "webhook_id": outcome.webhook_id,
                            "delivery_id": outcome.delivery_id,
                            "event_id": applied.event_id,
                            "event_type": applied.event_type,
                            "attempts": applied.number,
                            "last_status_code": outcome.attempt.status_code,
                            "last_error_kind": outcome.attempt.error_kind.map(|k| k.as_str()),
                            "reason": reason,
                        }),
                    });
                }
            }
        }
    }

    save_health(&mut tx, &endpoints, now).await?;
    let disabled = disable_webhooks(&mut tx, &endpoints, now).await?;
    // What waits for a webhook this batch disables (or finds failing while disabled already) is
    // skipped, including retries recorded in this batch, as the SQLite store does.
    let disabling: Vec<&str> = endpoints
        .iter()
        .filter(|(_, endpoint)| endpoint.disable.is_some())
        .map(|(id, _)| id.as_str())
        .collect();
    if !disabling.is_empty() {
        sqlx::query(
            "UPDATE deliveries d SET status = 'skipped', next_attempt_at = NULL, updated_at = $1
             FROM (SELECT id FROM deliveries
                   WHERE webhook_id = ANY($2) AND status = 'pending' AND claimed_by IS NULL
                   ORDER BY id FOR UPDATE) waiting
             WHERE d.id = waiting.id",
        )
        .bind(now)
        .bind(&disabling)
        .execute(&mut *tx)
        .await?;
    }
    // Only the node whose update disabled a webhook tells the operator about it.
    if policy.notify_operator {
        let mut newly: Vec<(&String, &Endpoint)> = endpoints
            .iter()
            .filter(|(id, _)| disabled.contains(*id))
            .collect();
        newly.sort_by(|x, y| x.0.cmp(y.0));
        for (webhook_id, endpoint) in newly {
            let url = serde_json::from_str::<serde_json::Value>(&endpoint.spec)
                .ok()
                .and_then(|s| s["url"].as_str().map(str::to_owned));
            queued.push(Queued {
                event_type: "tidings.webhook.disabled",
                payload: serde_json::json!({
                    "workspace_id": endpoint.workspace_id,
                    "webhook_id": webhook_id,
                    "url": url,
                    "reason": endpoint.disable,
                    "disabled_at": tidings_core::format_rfc3339(now),
                }),
            });
        }
    }
    enqueue_notifications(&mut tx, &queued, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Moves each delivery this node still holds to its new state, in one statement; returns the
/// outcomes applied, in the order given. A retry of a webhook paused or disabled meanwhile is held
/// (no due time) like its other waiting deliveries, until it is resumed or enabled.
async fn update_deliveries<'a>(
    conn: &mut PgConnection,
    node: &str,
    outcomes: &[&'a Outcome],
    now: UnixMillis,
) -> TxResult<Vec<Applied<'a>>> {
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut statuses = Vec::with_capacity(outcomes.len());
    let mut next_at = Vec::with_capacity(outcomes.len());
    let mut codes = Vec::with_capacity(outcomes.len());
    let mut kinds = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let (status, next) = match outcome.next {
            NextState::Delivered => ("delivered", None),
            NextState::Failed => ("failed", None),
            NextState::RetryAt(at) => ("pending", Some(at)),
        };
        ids.push(outcome.delivery_id.as_str());
        statuses.push(status);
        next_at.push(next);
        codes.push(outcome.attempt.status_code.map(i64::from));
        kinds.push(outcome.attempt.error_kind.map(|k| k.as_str()));
    }
    let rows = sqlx::query(
        "UPDATE deliveries d SET status = u.status, attempts = d.attempts + 1,
             next_attempt_at = CASE WHEN EXISTS (SELECT 1 FROM webhooks w WHERE w.id = d.webhook_id AND w.state = 'active')
                                    THEN u.next_at END,
             claimed_by = NULL, last_status_code = u.code, last_error_kind = u.kind, updated_at = $1
         FROM UNNEST($2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::TEXT[])
                 AS u(id, status, next_at, code, kind),
             (SELECT id FROM deliveries WHERE id = ANY($2) AND claimed_by = $7
              ORDER BY id FOR UPDATE) mine
         WHERE d.id = u.id AND d.id = mine.id AND d.claimed_by = $7
         RETURNING d.id, d.attempts, d.workspace_id, d.event_id, d.event_type",
    )
    // Planned for each execution (the transaction forces custom plans), as the claim's update
    // is. A statement prepared on a connection otherwise gets one generic plan after a few
    // executions, and keeps it until the table is analyzed again: made while the deliveries table
    // was small (a new database, or one emptied by retention), it reads the whole table by the
    // time it holds thousands of rows (10–30 ms per statement in the bench's latency phase,
    // growing all through it). Planned with the ids at hand, it reads the primary key. Kept
    // prepared: an unprepared statement costs a round trip more (parse, then bind and execute).
    .bind(now)
    .bind(&ids)
    .bind(&statuses)
    .bind(&next_at)
    .bind(&codes)
    .bind(&kinds)
    .bind(node)
    .fetch_all(&mut *conn)
    .await?;
    let mut updated: HashMap<String, (i64, String, String, String)> =
        HashMap::with_capacity(rows.len());
    for row in rows {
        updated.insert(
            row.try_get("id")?,
            (
                row.try_get("attempts")?,
                row.try_get("workspace_id")?,
                row.try_get("event_id")?,
                row.try_get("event_type")?,
            ),
        );
    }
    let mut applied = Vec::with_capacity(updated.len());
    for outcome in outcomes {
        match updated.remove(&outcome.delivery_id) {
            Some((number, workspace_id, event_id, event_type)) => applied.push(Applied {
                outcome,
                number,
                workspace_id,
                event_id,
                event_type,
            }),
            None => {
                tracing::warn!(delivery_id = %outcome.delivery_id, "the claim on this delivery was lost before its attempt was recorded");
            }
        }
    }
    Ok(applied)
}

/// Adds the attempts to the hourly latency histogram, one upsert for the batch (in key order, so
/// two nodes adding to the same buckets queue rather than deadlock).
async fn add_latency(conn: &mut PgConnection, applied: &[Applied<'_>]) -> TxResult<()> {
    let mut counts: BTreeMap<(&str, i64, i64), i64> = BTreeMap::new();
    for a in applied {
        let attempt = &a.outcome.attempt;
        let bucket = i64::try_from(stats::bucket(attempt.duration_ms)).unwrap_or(0);
        *counts
            .entry((
                a.outcome.webhook_id.as_str(),
                stats::hour_of(attempt.started_at),
                bucket,
            ))
            .or_default() += 1;
    }
    let mut webhooks = Vec::with_capacity(counts.len());
    let mut hours = Vec::with_capacity(counts.len());
    let mut buckets = Vec::with_capacity(counts.len());
    let mut attempts = Vec::with_capacity(counts.len());
    for ((webhook_id, hour, bucket), count) in counts {
        webhooks.push(webhook_id);
        hours.push(hour);
        buckets.push(bucket);
        attempts.push(count);
    }
    sqlx::query(
        "INSERT INTO attempt_latency (webhook_id, hour, bucket, attempts)
         SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[])
         ON CONFLICT (webhook_id, hour, bucket) DO UPDATE SET attempts = attempt_latency.attempts + EXCLUDED.attempts",
    )
    .bind(&webhooks)
    .bind(&hours)
    .bind(&buckets)
    .bind(&attempts)
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the webhooks the outcomes are for, in id order, and reads their health.
async fn lock_endpoints(
    conn: &mut PgConnection,
    outcomes: &[&Outcome],
) -> TxResult<HashMap<String, Endpoint>> {
    let mut ids: Vec<&str> = outcomes.iter().map(|o| o.webhook_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = sqlx::query(
        "SELECT id, workspace_id, spec, failing_since, failures_since_success FROM webhooks
         WHERE id = ANY($1)
         ORDER BY id
         FOR NO KEY UPDATE",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    let mut endpoints = HashMap::with_capacity(rows.len());
    for row in rows {
        endpoints.insert(
            row.try_get("id")?,
            Endpoint {
                workspace_id: row.try_get("workspace_id")?,
                spec: row.try_get("spec")?,
                failing_since: row.try_get("failing_since")?,
                failures: row.try_get("failures_since_success")?,
                succeeded: false,
                failures_after: 0,
                first_failure_after: None,
                last_failure_reason: None,
                disable: None,
            },
        );
    }
    Ok(endpoints)
}

/// Writes each webhook's health in one statement, as increments of what is stored (the rows are
/// locked since they were read, so this equals the values worked out, and no count is lost).
async fn save_health(
    conn: &mut PgConnection,
    endpoints: &HashMap<String, Endpoint>,
    now: UnixMillis,
) -> TxResult<()> {
    let mut ids = Vec::with_capacity(endpoints.len());
    let mut succeeded = Vec::with_capacity(endpoints.len());
    let mut failures_after = Vec::with_capacity(endpoints.len());
    let mut first_failure_after = Vec::with_capacity(endpoints.len());
    let mut reasons = Vec::with_capacity(endpoints.len());
    for (id, endpoint) in endpoints {
        if !endpoint.succeeded && endpoint.last_failure_reason.is_none() {
            // No outcome of this batch applied to it.
            continue;
        }
        ids.push(id.as_str());
        succeeded.push(endpoint.succeeded);
        failures_after.push(endpoint.failures_after);
        first_failure_after.push(endpoint.first_failure_after);
        reasons.push(
            endpoint
                .last_failure_reason
                .as_deref()
                .map(|r| storable(r).into_owned()),
        );
    }
    sqlx::query(
        "UPDATE webhooks w SET
             failing_since = CASE WHEN u.succeeded THEN u.first_failure_after
                                  ELSE COALESCE(w.failing_since, u.first_failure_after) END,
             failures_since_success = CASE WHEN u.succeeded THEN u.failures_after
                                           ELSE w.failures_since_success + u.failures_after END,
             last_success_at = CASE WHEN u.succeeded THEN $1 ELSE w.last_success_at END,
             last_failure_at = CASE WHEN u.reason IS NOT NULL THEN $1 ELSE w.last_failure_at END,
             last_failure_reason = COALESCE(u.reason, w.last_failure_reason)
         FROM UNNEST($2::TEXT[], $3::BOOLEAN[], $4::BIGINT[], $5::BIGINT[], $6::TEXT[])
             AS u(id, succeeded, failures_after, first_failure_after, reason)
         WHERE w.id = u.id",
    )
    .bind(now)
    .bind(&ids)
    .bind(&succeeded)
    .bind(&failures_after)
    .bind(&first_failure_after)
    .bind(&reasons)
    .execute(conn)
    .await?;
    Ok(())
}

/// Disables the webhooks this batch disables; returns those this transaction disabled (a webhook
/// disabled already is left as it is, so only one node ever announces it).
async fn disable_webhooks(
    conn: &mut PgConnection,
    endpoints: &HashMap<String, Endpoint>,
    now: UnixMillis,
) -> TxResult<HashSet<String>> {
    let mut ids = Vec::new();
    let mut reasons = Vec::new();
    for (id, endpoint) in endpoints {
        if let Some(reason) = &endpoint.disable {
            ids.push(id.as_str());
            reasons.push(storable(reason).into_owned());
        }
    }
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let disabled = sqlx::query_scalar(
        "UPDATE webhooks w SET state = 'disabled', disabled_reason = u.reason, updated_at = $1
         FROM UNNEST($2::TEXT[], $3::TEXT[]) AS u(id, reason)
         WHERE w.id = u.id AND w.state != 'disabled'
         RETURNING w.id",
    )
    .bind(now)
    .bind(&ids)
    .bind(&reasons)
    .fetch_all(conn)
    .await?;
    Ok(disabled.into_iter().collect())
}

async fn enqueue_notifications(
    conn: &mut PgConnection,
    queued: &[Queued],
    now: UnixMillis,
) -> TxResult<()> {
    if queued.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = queued.iter().map(|_| new_id(IdKind::Event)).collect();
    let types: Vec<&str> = queued.iter().map(|q| q.event_type).collect();
    let payloads: Vec<String> = queued.iter().map(|q| q.payload.to_string()).collect();
    sqlx::query(
        "INSERT INTO notifications (id, event_type, payload, attempts, next_attempt_at, created_at)
         SELECT id, event_type, payload, 0, $1, $1 FROM UNNEST($2::TEXT[], $3::TEXT[], $4::TEXT[])
             AS n(id, event_type, payload)",
    )
    .bind(now)
    .bind(&ids)
    .bind(&types)
    .bind(&payloads)
    .execute(conn)
    .await?;
    Ok(())
}

/// A short sentence for why an attempt failed, as shown in summaries and notifications.
fn failure_reason(attempt: &AttemptRecord) -> String {
    match (
        attempt.status_code,
        &attempt.error_message,
        attempt.error_kind,
    ) {
        (Some(code), _, _) => format!("HTTP {code}"),
        (None, Some(message), _) => message.clone(),
        (None, None, Some(kind)) => kind.as_str().to_owned(),
        (None, None, None) => "unknown".to_owned(),
    }
}
