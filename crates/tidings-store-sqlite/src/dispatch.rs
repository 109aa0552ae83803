//! Claiming due deliveries, recording attempts, and releasing claims.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::fmt::Write as _;
use std::sync::Arc;

use rusqlite::{Connection, params};
use sqlx::SqlitePool;
use tidings_core::ids::{IdKind, new_id};
use tidings_core::stats;
use tidings_core::{UnixMillis, now_millis};
use tidings_store::*;

use crate::bind::{Packed, Rows, int, opt_int, opt_text, text, to_json};
use crate::claims::{Claims, Held};
use crate::rows::{execute, query_optional};
use crate::{map_err, map_sql, rows};

/// Claims due deliveries of active webhooks, no more per webhook than brings its live claims (less
/// the claim's settled ones) to `per_webhook_claims`, or to `alone_claims` where no other node
/// holds any; the claim's end is the lease's. Returns what the dispatcher needs of each, read on
/// the writer's connection while the rows are at hand, with the claims taken (`claims.rs`: they
/// are held in memory, and the writer undoes them if its transaction fails).
///
/// Each webhook's share is counted here rather than by a window function in SQL: a claim reads up
/// to `limit` candidates to keep a few per webhook, and numbering them in SQL cost more than the
/// rest of the claim.
pub fn claim(conn: &Connection, claims: &Claims, claim: &Claim) -> StoreResult<Vec<Claimed>> {
    let Candidates { due, webhooks } = candidates(conn, claims, claim)?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let mut left = shares(conn, claims, claim, &webhooks)?;
    let mut chosen = String::with_capacity(due.len() * 8 + 2);
    chosen.push('[');
    for (rowid, webhook) in due {
        if let Some(left) = left.get_mut(webhook)
            && *left > 0
        {
            *left -= 1;
            if chosen.len() > 1 {
                chosen.push(',');
            }
            let _ = write!(chosen, "{rowid}");
        }
    }
    chosen.push(']');
    if chosen == "[]" {
        return Ok(Vec::new());
    }
    let claimed = read_claimed(conn, &chosen)?;
    let until = claim.now + claim.lease_ms;
    let mut table = claims.lock();
    for row in &claimed {
        table.take(
            row.rowid,
            Held {
                id: row.delivery_id.clone(),
                webhook: row.webhook_id.clone(),
                node: claim.node.clone(),
                until,
            },
        );
    }
    Ok(claimed)
}

/// Due deliveries outside a claim's exclusions, oldest first.
struct Candidates {
    /// Each one's rowid and the place of its webhook in `webhooks`.
    due: Vec<(i64, usize)>,
    /// Their webhooks, each once.
    webhooks: Vec<String>,
}

/// At most `limit` candidates that no live claim holds, read from the due index alone (it covers
/// rowid, due time and webhook). Claimed deliveries keep their place in it, so the read goes past
/// at most as many rows more as there are claims.
fn candidates(conn: &Connection, claims: &Claims, claim: &Claim) -> StoreResult<Candidates> {
    let limit = usize::try_from(claim.limit).unwrap_or(usize::MAX);
    // Only this thread takes claims, so their number cannot grow during the read; the table is
    // locked row by row, not across the read, which can be long.
    let claimed = claims.lock().len();
    let mut statement = conn
        .prepare_cached(
            "SELECT rowid, webhook_id FROM deliveries
             WHERE status = 'pending' AND next_attempt_at <= ?1
               AND webhook_id NOT IN (SELECT value FROM json_each(?2))
             ORDER BY next_attempt_at
             LIMIT ?3",
        )
        .map_err(map_sql)?;
    let mut rows = statement
        .query(params![
            claim.now,
            to_json(&claim.exclude_webhooks)?,
            i64::try_from(limit.saturating_add(claimed)).unwrap_or(i64::MAX)
        ])
        .map_err(map_sql)?;
    let mut due = Vec::new();
    let mut webhooks: Vec<String> = Vec::new();
    let mut place: HashMap<String, usize> = HashMap::new();
    while due.len() < limit
        && let Some(row) = rows.next().map_err(map_sql)?
    {
        let rowid: i64 = row.get(0).map_err(map_sql)?;
        if claims.lock().holds(rowid, claim.now) {
            continue;
        }
        let webhook = row
            .get_ref(1)
            .and_then(|value| value.as_str().map_err(Into::into))
            .map_err(map_sql)?;
        let at = match place.get(webhook) {
            Some(&at) => at,
            None => {
                place.insert(webhook.to_owned(), webhooks.len());
                webhooks.push(webhook.to_owned());
                webhooks.len() - 1
            }
        };
        due.push((rowid, at));
    }
    Ok(Candidates { due, webhooks })
}

/// How many deliveries the claim may take of each webhook, in the order given: none of one that
/// is not active, otherwise its cap less its live claims (less this node's settled ones). One
/// statement reads their states; `j.key` is the webhook's place in the list.
fn shares(
    conn: &Connection,
    claims: &Claims,
    claim: &Claim,
    webhooks: &[String],
) -> StoreResult<Vec<i64>> {
    let live = claims
        .lock()
        .live(webhooks, &claim.node, &claim.settled, claim.now);
    let mut statement = conn
        .prepare_cached(
            "SELECT j.key, COALESCE(w.state != 'active', 0)
             FROM json_each(?1) j LEFT JOIN webhooks w ON w.id = j.value",
        )
        .map_err(map_sql)?;
    let mut rows = statement
        .query(params![to_json(webhooks)?])
        .map_err(map_sql)?;
    let alone = claim.per_webhook_claims.max(claim.alone_claims);
    let mut shares = vec![0; webhooks.len()];
    while let Some(row) = rows.next().map_err(map_sql)? {
        let at: i64 = row.get(0).map_err(map_sql)?;
        let inactive: bool = row.get(1).map_err(map_sql)?;
        let Some(at) = usize::try_from(at).ok().filter(|at| *at < shares.len()) else {
            continue;
        };
        let (live, others) = live[at];
        let cap = if others == 0 {
            alone
        } else {
            claim.per_webhook_claims
        };
        if !inactive {
            shares[at] = i64::from(cap).saturating_sub(live);
        }
    }
    Ok(shares)
}

/// A claimed delivery with its event, before its webhook is attached.
pub struct Claimed {
    rowid: i64,
    delivery_id: String,
    attempts: i64,
    event_id: String,
    webhook_id: String,
    event_type: String,
    occurred_at: UnixMillis,
    data: Arc<str>,
}

impl Claimed {
    pub fn rowid(&self) -> i64 {
        self.rowid
    }
}

/// Reads the claimed deliveries named in `chosen` (a JSON array of rowids) with their events; an event
/// shared by several deliveries is copied out once.
fn read_claimed(conn: &Connection, chosen: &str) -> StoreResult<Vec<Claimed>> {
    // In the array's order, without sorting: the rows of one event need not be next to each other.
    let mut statement = conn
        .prepare_cached(
            "SELECT d.id, d.attempts, d.event_id, d.webhook_id, e.event_type, e.occurred_at, e.data, d.rowid
             FROM json_each(?) j CROSS JOIN deliveries d ON d.rowid = j.value
             JOIN events e ON e.id = d.event_id",
        )
        .map_err(map_sql)?;
    let mut rows = statement.query([chosen]).map_err(map_sql)?;
    let mut claimed: Vec<Claimed> = Vec::new();
    let mut events: HashMap<String, Arc<str>> = HashMap::new();
    while let Some(row) = rows.next().map_err(map_sql)? {
        let event_id: String = row.get(2).map_err(map_sql)?;
        // A column is only copied out when asked for: the data of an event seen before is not.
        let data = match events.get(&event_id) {
            Some(data) => data.clone(),
            None => {
                let data: Arc<str> = Arc::from(row.get::<_, String>(6).map_err(map_sql)?);
                events.insert(event_id.clone(), data.clone());
                data
            }
        };
        claimed.push(Claimed {
            rowid: row.get(7).map_err(map_sql)?,
            delivery_id: row.get(0).map_err(map_sql)?,
            attempts: row.get(1).map_err(map_sql)?,
            event_id,
            webhook_id: row.get(3).map_err(map_sql)?,
            event_type: row.get(4).map_err(map_sql)?,
            occurred_at: row.get(5).map_err(map_sql)?,
            data,
        });
    }
    Ok(claimed)
}

/// When the first delivery of an active webhook outside the claim's exclusions is due (a claimed
/// one: when its lease ends), if there is one.
pub fn next_due_outside(
    conn: &Connection,
    claims: &Claims,
    claim: &Claim,
) -> StoreResult<Option<UnixMillis>> {
    let excluded = to_json(&claim.exclude_webhooks)?;
    let mut statement = conn
        .prepare_cached(
            "SELECT d.rowid, d.next_attempt_at FROM deliveries d
             WHERE d.status = 'pending' AND d.next_attempt_at IS NOT NULL
               AND d.webhook_id NOT IN (SELECT value FROM json_each(?))
               AND EXISTS (SELECT 1 FROM webhooks w WHERE w.id = d.webhook_id AND w.state = 'active')
             ORDER BY d.next_attempt_at",
        )
        .map_err(map_sql)?;
    let mut rows = statement.query([excluded]).map_err(map_sql)?;
    let mut due = Due::new(claims, claim.now);
    while let Some(row) = rows.next().map_err(map_sql)? {
        if !due.see(row.get(0).map_err(map_sql)?, row.get(1).map_err(map_sql)?) {
            break;
        }
    }
    Ok(due.earliest)
}

/// Whether an active webhook is left outside `exclusions`. When there is none, nothing can be
/// claimed or fall due outside them, and the due index need not be read: the excluded lanes'
/// backlog would all be read past, which is the whole backlog when the full lanes are the only busy
/// ones.
pub fn any_active_outside(conn: &Connection, exclusions: &[String]) -> StoreResult<bool> {
    if exclusions.is_empty() {
        return Ok(true);
    }
    let mut statement = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM webhooks
                            WHERE state = 'active' AND id NOT IN (SELECT value FROM json_each(?)))",
        )
        .map_err(map_sql)?;
    statement
        .query_row([to_json(exclusions)?], |row| row.get(0))
        .map_err(map_sql)
}

/// The earliest time a delivery falls due, seen over deliveries in due order: a claimed one's is
/// its lease's end. The claims are locked at each delivery, not across the read that finds them.
struct Due<'a> {
    claims: &'a Claims,
    now: UnixMillis,
    earliest: Option<UnixMillis>,
}

impl<'a> Due<'a> {
    fn new(claims: &'a Claims, now: UnixMillis) -> Self {
        Self {
            claims,
            now,
            earliest: None,
        }
    }

    /// Takes the next delivery's rowid and due time; false once no later one can be earlier.
    fn see(&mut self, rowid: i64, at: UnixMillis) -> bool {
        if self.earliest.is_some_and(|earliest| earliest <= at) {
            return false;
        }
        let at = match self.claims.lock().lease_end(rowid) {
            Some(until) if until > self.now => until.max(at),
            _ => at,
        };
        self.earliest = Some(self.earliest.map_or(at, |earliest| earliest.min(at)));
        true
    }
}

/// Attaches their webhooks to claimed deliveries; a webhook shared by several is read once.
pub async fn with_webhooks(
    pool: &SqlitePool,
    claimed: Vec<Claimed>,
) -> StoreResult<Vec<ClaimedDelivery>> {
    let mut webhooks: HashMap<String, Option<Arc<Webhook>>> = HashMap::new();
    let mut ready = Vec::with_capacity(claimed.len());
    for row in claimed {
        let webhook = match webhooks.get(&row.webhook_id) {
            Some(webhook) => webhook.clone(),
            None => {
                let found = sqlx::query("SELECT * FROM webhooks WHERE id = ?")
                    .bind(&row.webhook_id)
                    .fetch_optional(pool)
                    .await
                    .map_err(map_err)?
                    .map(|found| rows::webhook(&found).map(Arc::new))
                    .transpose()?;
                webhooks.insert(row.webhook_id.clone(), found.clone());
                found
            }
        };
        // Deleted since the claim: its deliveries went with it.
        let Some(webhook) = webhook else { continue };
        ready.push(ClaimedDelivery {
            delivery_id: row.delivery_id,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            event_id: row.event_id,
            event_type: row.event_type,
            occurred_at: row.occurred_at,
            data: row.data,
            webhook,
        });
    }
    Ok(ready)
}

/// Records attempts and moves deliveries on, only where this node still holds the claim; keeps
/// endpoint health and the latency rollup, disables failing webhooks, queues notifications.
/// Returns the claims it gave up, for the writer to put back if its transaction fails; on error it
/// has put them back itself.
///
/// Health and latency are folded per webhook and written once per batch: a busy webhook's outcomes
/// cost one row update each, not three.
pub fn record(
    conn: &Connection,
    claims: &Claims,
    node: String,
    outcomes: &[Outcome],
    policy: HealthPolicy,
) -> StoreResult<Vec<(i64, Held)>> {
    // A delivery recorded twice in one batch keeps its first outcome: the first gives up the
    // claim, which the second would need.
    let mut seen = HashSet::with_capacity(outcomes.len());
    let mut settled = Vec::with_capacity(outcomes.len());
    let mut held = Vec::with_capacity(outcomes.len());
    {
        let mut table = claims.lock();
        for outcome in outcomes {
            if !seen.insert(outcome.delivery_id.as_str()) {
                continue;
            }
            match table.held_by(&outcome.delivery_id, &node) {
                Some(rowid) => {
                    if let Some(claim) = table.drop_claim(rowid) {
                        settled.push((rowid, claim));
                        held.push((rowid, outcome));
                    }
                }
                None => {
                    tracing::warn!(delivery_id = %outcome.delivery_id, "the claim on this delivery was lost before its attempt was recorded");
                }
            }
        }
    }
    match record_held(conn, claims, &held, policy) {
        Ok(()) => Ok(settled),
        Err(error) => {
            let mut table = claims.lock();
            for (rowid, claim) in settled {
                table.restore(rowid, claim);
            }
            Err(error)
        }
    }
}

/// Records the outcomes of deliveries whose claims were this node's, each with its rowid.
fn record_held(
    conn: &Connection,
    claims: &Claims,
    outcomes: &[(i64, &Outcome)],
    policy: HealthPolicy,
) -> StoreResult<()> {
    let now = now_millis();
    if outcomes.is_empty() {
        return Ok(());
    }

    // One statement moves every delivery of the batch on, one stores every attempt (a statement
    // per chunk of rows).
    let mut moves = Rows::with_capacity(outcomes.len());
    for &(rowid, o) in outcomes {
        let (status, next_at) = match o.next {
            NextState::Delivered => ("delivered", None),
            NextState::Failed => ("failed", None),
            NextState::RetryAt(at) => ("pending", Some(at)),
        };
        moves.push([
            text(&o.delivery_id),
            text(status),
            opt_int(next_at),
            opt_int(o.attempt.status_code.map(i64::from)),
            opt_text(o.attempt.error_kind.map(|k| k.as_str())),
            int(rowid),
        ]);
    }
    /// A recorded delivery: its attempt number, workspace, event and event type.
    type Moved = (i64, String, String, String);
    // Deliveries are found by the rowid their claim read; the id guards against a rowid reused
    // since. The statement returns what it moved, so the attempts below are numbered and their
    // events known without reading the rows a second time. A retry of a webhook paused or
    // disabled meanwhile is held (no due time) like its other waiting deliveries, until it is
    // resumed or enabled.
    let mut moved: HashMap<String, Moved> = HashMap::with_capacity(outcomes.len());
    moves.run(
        conn,
        &[&now],
        (
            "UPDATE deliveries SET status = j.column2, attempts = attempts + 1,
                 next_attempt_at = CASE WHEN j.column3 IS NOT NULL
                                             AND EXISTS (SELECT 1 FROM webhooks w WHERE w.id = deliveries.webhook_id AND w.state = 'active')
                                        THEN j.column3 END,
                 last_status_code = j.column4, last_error_kind = j.column5, updated_at = ?1
             FROM (VALUES ",
            ") j
             WHERE deliveries.rowid = j.column6 AND deliveries.id = j.column1 AND deliveries.status = 'pending'
             RETURNING deliveries.id, deliveries.attempts, deliveries.workspace_id, deliveries.event_id, deliveries.event_type",
        ),
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?),
            ))
        },
        &mut moved,
    )?;

    // The header lists are written as JSON into one buffer, and bound as slices of it.
    type AttemptRow<'a> = (
        &'a str,
        i64,
        i64,
        i64,
        Option<u16>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        (usize, usize),
        (usize, usize),
    );
    let mut attempts: Vec<AttemptRow> = Vec::with_capacity(moved.len());
    let mut headers = Packed::with_capacity(moved.len() * 512);
    let mut latency: HashMap<(String, i64, i64), i64> = HashMap::new();
    let mut health: HashMap<String, Vec<HealthStep>> = HashMap::new();
    for &(_, outcome) in outcomes {
        let Some(updated) = moved.get(&outcome.delivery_id) else {
            tracing::warn!(delivery_id = %outcome.delivery_id, "this delivery was deleted or finished while its attempt ran; the attempt is not recorded");
            continue;
        };
        let attempt = &outcome.attempt;
        let (number, workspace_id, event_id, event_type) = updated;
        let number = *number;
        attempts.push((
            outcome.delivery_id.as_str(),
            number,
            attempt.started_at,
            attempt.duration_ms,
            attempt.status_code,
            attempt.error_kind.map(|k| k.as_str()),
            attempt.error_message.as_deref(),
            attempt.response_excerpt.as_deref(),
            headers.push_json(&attempt.request_headers)?,
            headers.push_json(&attempt.response_headers)?,
        ));
        let bucket = i64::try_from(stats::bucket(attempt.duration_ms)).unwrap_or(0);
        *latency
            .entry((
                outcome.webhook_id.clone(),
                stats::hour_of(attempt.started_at),
                bucket,
            ))
            .or_default() += 1;

        let step = match outcome.next {
            NextState::Delivered => HealthStep::Success,
            _ => {
                let reason = failure_reason(attempt);
                if outcome.next == NextState::Failed && policy.notify_operator {
                    let payload = serde_json::json!({
                        "workspace_id": workspace_id,
                        "webhook_id": outcome.webhook_id,
                        "delivery_id": outcome.delivery_id,
                        "event_id": event_id,
                        "event_type": event_type,
                        "attempts": number,
                        "last_status_code": attempt.status_code,
                        "last_error_kind": attempt.error_kind.map(|k| k.as_str()),
                        "reason": reason,
                    });
                    enqueue_notification(conn, "tidings.delivery.failed", &payload, now)?;
                }
                HealthStep::Failure {
                    started_at: attempt.started_at,
                    reason,
                    disable: outcome.disable_webhook.clone(),
                }
            }
        };
        health
            .entry(outcome.webhook_id.clone())
            .or_default()
            .push(step);
    }
    if !attempts.is_empty() {
        let mut rows = Rows::with_capacity(attempts.len());
        for a in &attempts {
            rows.push([
                text(a.0),
                int(a.1),
                int(a.2),
                int(a.3),
                opt_int(a.4.map(i64::from)),
                opt_text(a.5),
                opt_text(a.6),
                opt_text(a.7),
                headers.text(a.8),
                headers.text(a.9),
            ]);
        }
        rows.execute(
            conn,
            &[],
            (
                "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error_kind, error_message,
                                       response_excerpt, request_headers, response_headers)
                 VALUES ",
                "",
            ),
        )?;
    }

    for ((webhook_id, hour, bucket), attempts) in latency {
        execute(
            conn,
            "INSERT INTO attempt_latency (webhook_id, hour, bucket, attempts) VALUES (?, ?, ?, ?)
             ON CONFLICT (webhook_id, hour, bucket) DO UPDATE SET attempts = attempts + excluded.attempts",
            params![webhook_id, hour, bucket, attempts],
        )?;
    }
    for (webhook_id, steps) in health {
        if let Some(reason) = apply_health(conn, &webhook_id, &steps, &policy, now)? {
            let claimed = claims.lock().of_webhook(&webhook_id);
            disable_webhook(
                conn,
                &webhook_id,
                &reason,
                &claimed,
                now,
                policy.notify_operator,
            )?;
        }
    }
    Ok(())
}

/// One recorded attempt as endpoint health sees it.
enum HealthStep {
    Success,
    Failure {
        started_at: UnixMillis,
        reason: String,
        /// Set when the attempt itself disables the webhook (410 Gone).
        disable: Option<String>,
    },
}

/// Folds a batch's attempts (in order) into a webhook's health with one read and one write; returns
/// why the webhook is to be disabled, if it is.
fn apply_health(
    conn: &Connection,
    webhook_id: &str,
    steps: &[HealthStep],
    policy: &HealthPolicy,
    now: UnixMillis,
) -> StoreResult<Option<String>> {
    let health = query_optional(
        conn,
        "SELECT failing_since, failures_since_success FROM webhooks WHERE id = ?",
        [webhook_id],
        |row| Ok((row.get::<_, Option<i64>>(0)?, row.get::<_, i64>(1)?)),
    )?;
    // None: deleted while its attempts ran.
    let Some((mut failing_since, mut failures)) = health else {
        return Ok(None);
    };
    let mut succeeded = false;
    let mut last_failure: Option<&str> = None;
    let mut disable = None;
    for step in steps {
        match step {
            HealthStep::Success => {
                failing_since = None;
                failures = 0;
                succeeded = true;
            }
            HealthStep::Failure {
                started_at,
                reason,
                disable: now_disabled,
            } => {
                let since = *failing_since.get_or_insert(*started_at);
                failures += 1;
                last_failure = Some(reason);
                if disable.is_none() {
                    disable = now_disabled.clone().or_else(|| {
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
    }
    execute(
        conn,
        "UPDATE webhooks SET failing_since = ?1, failures_since_success = ?2,
             last_success_at = CASE WHEN ?3 THEN ?4 ELSE last_success_at END,
             last_failure_at = CASE WHEN ?5 IS NOT NULL THEN ?4 ELSE last_failure_at END,
             last_failure_reason = COALESCE(?5, last_failure_reason)
         WHERE id = ?6",
        params![
            failing_since,
            failures,
            succeeded,
            now,
            last_failure,
            webhook_id
        ],
    )?;
    Ok(disable)
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

pub fn insert_attempt(
    conn: &Connection,
    delivery_id: &str,
    number: i64,
    attempt: &AttemptRecord,
) -> StoreResult<()> {
    execute(
        conn,
        "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error_kind, error_message,
                               response_excerpt, request_headers, response_headers)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            delivery_id,
            number,
            attempt.started_at,
            attempt.duration_ms,
            attempt.status_code,
            attempt.error_kind.map(|k| k.as_str()),
            attempt.error_message,
            attempt.response_excerpt,
            to_json(&attempt.request_headers)?,
            to_json(&attempt.response_headers)?,
        ],
    )?;
    Ok(())
}

/// Disables a webhook (if it is not already), keeps what was waiting for it as skipped (not the
/// `claimed` ones, whose attempts are running), and tells the operator when asked to.
fn disable_webhook(
    conn: &Connection,
    webhook_id: &str,
    reason: &str,
    claimed: &[String],
    now: UnixMillis,
    notify: bool,
) -> StoreResult<()> {
    let disabled = query_optional(
        conn,
        "UPDATE webhooks SET state = 'disabled', disabled_reason = ?, updated_at = ?
         WHERE id = ? AND state != 'disabled'
         RETURNING workspace_id, spec",
        params![reason, now, webhook_id],
        |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
    )?;
    execute(
        conn,
        "UPDATE deliveries SET status = 'skipped', next_attempt_at = NULL, updated_at = ?
         WHERE webhook_id = ? AND status = 'pending' AND id NOT IN (SELECT value FROM json_each(?))",
        params![now, webhook_id, to_json(claimed)?],
    )?;
    if let (Some((workspace_id, spec)), true) = (disabled, notify) {
        let url = serde_json::from_str::<serde_json::Value>(&spec)
            .ok()
            .and_then(|s| s["url"].as_str().map(str::to_owned));
        let payload = serde_json::json!({
            "workspace_id": workspace_id,
            "webhook_id": webhook_id,
            "url": url,
            "reason": reason,
            "disabled_at": tidings_core::format_rfc3339(now),
        });
        enqueue_notification(conn, "tidings.webhook.disabled", &payload, now)?;
    }
    Ok(())
}

fn enqueue_notification(
    conn: &Connection,
    event_type: &str,
    payload: &serde_json::Value,
    now: UnixMillis,
) -> StoreResult<()> {
    execute(
        conn,
        "INSERT INTO notifications (id, event_type, payload, attempts, next_attempt_at, created_at)
         VALUES (?, ?, ?, 0, ?, ?)",
        params![
            new_id(IdKind::Event),
            event_type,
            payload.to_string(),
            now,
            now
        ],
    )?;
    Ok(())
}

pub async fn next_due_at(pool: &SqlitePool, claims: &Claims) -> StoreResult<Option<UnixMillis>> {
    // Held deliveries (paused or disabled webhooks) have no due time, so this reads the index
    // entries of the live claims and one more.
    let now = now_millis();
    let claimed = i64::try_from(claims.lock().len()).unwrap_or(i64::MAX);
    let first: Vec<(i64, UnixMillis)> = sqlx::query_as(
        "SELECT rowid, next_attempt_at FROM deliveries
         WHERE status = 'pending' AND next_attempt_at IS NOT NULL
         ORDER BY next_attempt_at LIMIT ?",
    )
    .bind(claimed.saturating_add(1))
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    let mut due = Due::new(claims, now);
    for (rowid, at) in first {
        if !due.see(rowid, at) {
            break;
        }
    }
    Ok(due.earliest)
}

pub async fn count_pending(pool: &SqlitePool) -> StoreResult<u64> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    Ok(u64::try_from(count).unwrap_or(0))
}
