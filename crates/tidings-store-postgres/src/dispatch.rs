//! Claiming due deliveries across nodes, renewing and releasing claims, and storing attempts.
//!
//! Several nodes claim from one table at once. Candidates are locked with `FOR UPDATE SKIP LOCKED`,
//! so two nodes never take one delivery; then one gate row per candidate webhook is locked, in
//! webhook id order, and under that lock each webhook's live claims are counted and its rate
//! tokens spent, so the per-webhook concurrency and rate limits hold for all nodes together.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sqlx::{Connection, PgConnection, PgPool, Row};
use tidings_core::{UnixMillis, now_millis};
use tidings_store::*;

use crate::errors::{TxResult, retrying};
use crate::held::Held;
use crate::quiet::{Ask, Quiet};
use crate::{map_err, rows};

/// A delivery this node has just claimed, with its event; the event's data comes with one of the
/// event's deliveries only.
struct Picked {
    id: String,
    attempts: i64,
    event_id: String,
    webhook_id: String,
    event_type: String,
    occurred_at: UnixMillis,
    data: Option<String>,
}

/// A candidate webhook's gate, locked for the rest of the claim.
struct Gate {
    rate_per_s: Option<i64>,
    tokens: f64,
    updated_at: i64,
}

impl Gate {
    /// The tokens in the bucket at `now`: refilled at the rate since the last claim, up to one
    /// second's worth.
    fn tokens_at(&self, rate: i64, now: UnixMillis) -> f64 {
        let rate = rate as f64;
        let elapsed = (now - self.updated_at).max(0) as f64;
        (self.tokens + elapsed * rate / 1000.0).min(rate)
    }
}

/// Claims due deliveries of active webhooks for `claim.node`; the claim's end becomes the
/// delivery's due time.
pub async fn claim(
    pool: &PgPool,
    held: &Held,
    claim: &Claim,
    quiet: &Quiet,
) -> StoreResult<Vec<ClaimedDelivery>> {
    if claim.limit == 0 {
        return Ok(Vec::new());
    }
    let generation = match quiet.ask(claim) {
        Ask::Empty => return Ok(Vec::new()),
        Ask::Read(generation) => generation,
    };
    let once = move || claim_once(pool, held, claim);
    let mut claimed = retrying("claiming due deliveries", once).await?;
    if let Claimed::GatesMissing(webhook_ids) = claimed {
        // Only webhooks stored without a gate (none are: every webhook is created with one) get
        // here; theirs are made outside the claim, so no claim ever waits on another's insert.
        add_gates(pool, &webhook_ids).await?;
        claimed = retrying("claiming due deliveries", once).await?;
    }
    match claimed {
        Claimed::Picked(picked, webhooks) if !picked.is_empty() => Ok(assemble(picked, &webhooks)),
        _ => {
            // Nothing claimed may also mean lanes at their cap or rows another claim holds: only
            // an empty claim with nothing due outside its exclusions is worth remembering.
            if let Some(generation) = generation {
                quiet.learn(generation, claim.now, next_due_outside(pool, claim).await?);
            }
            Ok(Vec::new())
        }
    }
}

/// When the first delivery outside the claim's exclusions is due (a claimed one: when its lease
/// ends), if there is one. Held deliveries (paused or disabled webhooks) have no due time.
async fn next_due_outside(pool: &PgPool, claim: &Claim) -> StoreResult<Option<UnixMillis>> {
    sqlx::query_scalar(
        "SELECT next_attempt_at FROM deliveries
         WHERE status = 'pending' AND next_attempt_at IS NOT NULL AND NOT (webhook_id = ANY($1))
           AND (cardinality($1) = 0 OR EXISTS (SELECT 1 FROM webhooks w
                                               WHERE w.state = 'active' AND NOT (w.id = ANY($1))))
         ORDER BY next_attempt_at LIMIT 1",
    )
    .bind(&claim.exclude_webhooks)
    .fetch_optional(pool)
    .await
    .map_err(map_err)
}

async fn add_gates(pool: &PgPool, webhook_ids: &[String]) -> StoreResult<()> {
    let found = sqlx::query("SELECT * FROM webhooks WHERE id = ANY($1)")
        .bind(webhook_ids)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    for row in &found {
        let webhook = rows::webhook(row)?;
        sqlx::query(
            "INSERT INTO webhook_gates (webhook_id, rate_per_s) VALUES ($1, $2)
             ON CONFLICT (webhook_id) DO NOTHING",
        )
        .bind(&webhook.id)
        .bind(webhook.spec.rate_limit_per_s.map(i64::from))
        .execute(pool)
        .await
        .map_err(map_err)?;
    }
    Ok(())
}

enum Claimed {
    Picked(Vec<Picked>, HashMap<String, Arc<Webhook>>),
    GatesMissing(Vec<String>),
}

async fn claim_once(pool: &PgPool, held: &Held, claim: &Claim) -> TxResult<Claimed> {
    held.run(pool, async |conn| claim_on(conn, claim).await)
        .await
}

async fn claim_on(conn: &mut PgConnection, claim: &Claim) -> TxResult<Claimed> {
    let concurrency = i64::from(claim.per_webhook_claims.max(1));
    // A claim need not wait for its WAL flush: one lost to a database crash leaves the delivery
    // due again (sent again, as after any lost claim), and a claim a later commit depends on is
    // flushed with that commit. Each claim would otherwise wait for an fsync while its webhook's
    // live-claim cap holds the lane still.
    // No bitmap scans: the indexes a claim reads are full of entries of rows every claim and
    // outcome just rewrote, and only plain index scans mark those dead and skip them afterwards
    // (the live-claim count read ~3 ms of dead rows per claim through a bitmap, 0.03 ms without).
    // The update gets a custom plan at each run, as the record's does (see `record.rs`). All three
    // are set with the BEGIN, in the same round trip.
    let mut tx = conn
        .begin_with(
            "BEGIN; SET LOCAL synchronous_commit TO OFF; SET LOCAL enable_bitmapscan TO OFF;
             SET LOCAL plan_cache_mode TO force_custom_plan",
        )
        .await?;
    // Due deliveries, oldest due first, skipping any another node is claiming right now. A claim
    // whose lease ran out is due again and is taken over here. One table, one index, a bounded
    // window: the deliveries table grows and churns faster than its statistics follow, and a
    // query joining it elsewhere can get a plan that reads the whole backlog per claim. Limits
    // (webhook state, concurrency, rate tokens) are applied below under the gates' locks; a
    // webhook at its limit leaves its window rows for the next claim. When the exclusions are
    // every active webhook, nothing else can be due, and the one-time condition spares the read
    // past their backlog.
    let candidates: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, webhook_id FROM deliveries
         WHERE status = 'pending' AND next_attempt_at <= $1 AND NOT (webhook_id = ANY($2))
           AND (cardinality($2) = 0 OR EXISTS (SELECT 1 FROM webhooks w
                                               WHERE w.state = 'active' AND NOT (w.id = ANY($2))))
         ORDER BY next_attempt_at
         LIMIT $3
         FOR UPDATE SKIP LOCKED",
    )
    .bind(claim.now)
    .bind(&claim.exclude_webhooks)
    .bind(i64::from(claim.limit).saturating_mul(2))
    .fetch_all(&mut *tx)
    .await?;
    if candidates.is_empty() {
        tx.rollback().await?;
        return Ok(Claimed::Picked(Vec::new(), HashMap::new()));
    }
    let mut webhook_ids: Vec<String> = candidates.iter().map(|(_, w)| w.clone()).collect();
    webhook_ids.sort_unstable();
    webhook_ids.dedup();

    // Gates are locked in webhook id order on every node, so claims serialize per webhook without
    // deadlocking each other. The webhooks are read here too, for the attempts.
    let gate_rows = sqlx::query(
        "SELECT g.webhook_id, g.rate_per_s, g.rate_tokens, g.rate_updated_at, w.*
         FROM webhook_gates g JOIN webhooks w ON w.id = g.webhook_id
         WHERE g.webhook_id = ANY($1)
         ORDER BY g.webhook_id
         FOR UPDATE OF g",
    )
    .bind(&webhook_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut gates: HashMap<String, Gate> = HashMap::with_capacity(gate_rows.len());
    let mut webhooks: HashMap<String, Arc<Webhook>> = HashMap::with_capacity(gate_rows.len());
    for row in &gate_rows {
        let webhook = rows::webhook(row)?;
        gates.insert(
            webhook.id.clone(),
            Gate {
                rate_per_s: row.try_get("rate_per_s")?,
                tokens: row.try_get("rate_tokens")?,
                updated_at: row.try_get("rate_updated_at")?,
            },
        );
        webhooks.insert(webhook.id.clone(), Arc::new(webhook));
    }
    if gates.len() < webhook_ids.len() {
        let missing: Vec<String> = webhook_ids
            .into_iter()
            .filter(|id| !gates.contains_key(id))
            .collect();
        // A webhook deleted since the candidates were read has no deliveries any more either.
        let exists: Vec<String> = sqlx::query_scalar("SELECT id FROM webhooks WHERE id = ANY($1)")
            .bind(&missing)
            .fetch_all(&mut *tx)
            .await?;
        if !exists.is_empty() {
            tx.rollback().await?;
            return Ok(Claimed::GatesMissing(exists));
        }
    }

    // Claims committed by other nodes before they released these gates are counted here; this
    // node's settled ones (attempt over, outcome not committed yet) are not. Other nodes' settled
    // claims still count, which only errs on the safe side. Every live claim is read from
    // deliveries_live (at most what the nodes hold in memory) and the webhooks picked after: asked
    // per webhook, the planner chose a webhook index and read its whole backlog.
    let live: HashMap<String, (i64, i64)> = sqlx::query_as::<_, (String, i64, i64)>(
        "WITH live AS MATERIALIZED (
             SELECT id, webhook_id, claimed_by FROM deliveries
             WHERE claimed_by IS NOT NULL AND status = 'pending' AND next_attempt_at > $2)
         SELECT webhook_id, COUNT(*), COUNT(*) FILTER (WHERE claimed_by <> $4) FROM live
         WHERE webhook_id = ANY($1) AND NOT (id = ANY($3))
         GROUP BY webhook_id",
    )
    .bind(gates.keys().map(String::as_str).collect::<Vec<_>>())
    .bind(claim.now)
    .bind(&claim.settled)
    .bind(&claim.node)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(webhook_id, live, others)| (webhook_id, (live, others)))
    .collect();

    // What each webhook may still take: its free concurrency, and its whole rate tokens.
    let mut allowance: HashMap<&str, i64> = HashMap::with_capacity(gates.len());
    for (webhook_id, gate) in &gates {
        let active = webhooks
            .get(webhook_id)
            .is_some_and(|w| w.state == tidings_core::webhook::WebhookState::Active);
        if !active {
            continue;
        }
        let (live, others) = live.get(webhook_id).copied().unwrap_or((0, 0));
        // Alone, a node may hold more than the limit: it runs at most that many at once, and
        // another node's claim sees these and takes only what brings the total back under it.
        let cap = if others == 0 {
            concurrency.max(i64::from(claim.alone_claims))
        } else {
            concurrency
        };
        let mut free = cap - live;
        if let Some(rate) = gate.rate_per_s {
            free = free.min(gate.tokens_at(rate, claim.now).floor() as i64);
        }
        allowance.insert(webhook_id, free.max(0));
    }
    let mut chosen: Vec<&str> = Vec::with_capacity(candidates.len());
    let mut taken: BTreeMap<&str, i64> = BTreeMap::new();
    for (id, webhook_id) in &candidates {
        if chosen.len() >= claim.limit as usize {
            break;
        }
        if let Some(left) = allowance.get_mut(webhook_id.as_str())
            && *left > 0
        {
            *left -= 1;
            *taken.entry(webhook_id.as_str()).or_default() += 1;
            chosen.push(id);
        }
    }
    if chosen.is_empty() {
        tx.rollback().await?;
        return Ok(Claimed::Picked(Vec::new(), HashMap::new()));
    }

    // Spend the rate tokens taken (only rate-limited webhooks' buckets change).
    let mut spent_ids = Vec::new();
    let mut spent_tokens = Vec::new();
    let mut spent_at = Vec::new();
    for (webhook_id, count) in &taken {
        if let Some(gate) = gates.get(*webhook_id)
            && let Some(rate) = gate.rate_per_s
        {
            spent_ids.push(*webhook_id);
            spent_tokens.push(gate.tokens_at(rate, claim.now) - *count as f64);
            spent_at.push(gate.updated_at.max(claim.now));
        }
    }
    if !spent_ids.is_empty() {
        sqlx::query(
            "UPDATE webhook_gates g SET rate_tokens = s.tokens, rate_updated_at = s.at
             FROM UNNEST($1::TEXT[], $2::DOUBLE PRECISION[], $3::BIGINT[]) AS s(webhook_id, tokens, at)
             WHERE g.webhook_id = s.webhook_id",
        )
        .bind(&spent_ids)
        .bind(&spent_tokens)
        .bind(&spent_at)
        .execute(&mut *tx)
        .await?;
    }

    // The claimed deliveries' events are read by the same statement: a round trip fewer before
    // the first attempt. A delivery whose event is gone (deleted with its workspace since the
    // candidates were read) is left out, with nothing to attempt.
    let updated = sqlx::query(
        "WITH u AS (
             UPDATE deliveries SET claimed_by = $1, next_attempt_at = $2
             WHERE id = ANY($3)
             RETURNING id, attempts, event_id, webhook_id)
         SELECT u.id, u.attempts, u.event_id, u.webhook_id, e.event_type, e.occurred_at,
                CASE WHEN row_number() OVER (PARTITION BY u.event_id) = 1 THEN e.data END AS data
         FROM u JOIN events e ON e.id = u.event_id",
    )
    .bind(&claim.node)
    .bind(claim.now + claim.lease_ms)
    .bind(&chosen)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let mut by_id: HashMap<String, Picked> = HashMap::with_capacity(updated.len());
    for row in updated {
        let picked = Picked {
            id: row.try_get("id")?,
            attempts: row.try_get("attempts")?,
            event_id: row.try_get("event_id")?,
            webhook_id: row.try_get("webhook_id")?,
            event_type: row.try_get("event_type")?,
            occurred_at: row.try_get("occurred_at")?,
            data: row.try_get("data")?,
        };
        by_id.insert(picked.id.clone(), picked);
    }
    // In due order, as chosen.
    let picked = chosen.iter().filter_map(|id| by_id.remove(*id)).collect();
    Ok(Claimed::Picked(picked, webhooks))
}

/// What the dispatcher needs of claimed deliveries: each event's data is held once, however many
/// of its deliveries were claimed, as are webhooks (read in the claim).
fn assemble(
    mut picked: Vec<Picked>,
    webhooks: &HashMap<String, Arc<Webhook>>,
) -> Vec<ClaimedDelivery> {
    let mut data: HashMap<String, Arc<str>> = HashMap::new();
    for delivery in &mut picked {
        if let Some(text) = delivery.data.take() {
            data.insert(delivery.event_id.clone(), Arc::from(text));
        }
    }
    picked
        .into_iter()
        .filter_map(|delivery| {
            // A webhook not read with the gates, or an event whose data did not come back (both
            // are read in the claim, so neither is expected): nothing to attempt.
            let webhook = webhooks.get(&delivery.webhook_id)?;
            let data = data.get(&delivery.event_id)?;
            Some(ClaimedDelivery {
                delivery_id: delivery.id,
                attempts: u32::try_from(delivery.attempts).unwrap_or(0),
                event_id: delivery.event_id,
                event_type: delivery.event_type,
                occurred_at: delivery.occurred_at,
                data: data.clone(),
                webhook: webhook.clone(),
            })
        })
        .collect()
}

/// PostgreSQL text cannot hold NUL characters, which an endpoint's response (or an error built from
/// it) may contain; they are stored as U+FFFD so the outcome is still recorded.
pub fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Inserts attempts (delivery id, attempt number, record) in one statement.
pub async fn insert_attempts(
    conn: &mut PgConnection,
    attempts: &[(&str, i64, &AttemptRecord)],
) -> TxResult<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let mut delivery_ids = Vec::with_capacity(attempts.len());
    let mut numbers = Vec::with_capacity(attempts.len());
    let mut started = Vec::with_capacity(attempts.len());
    let mut durations = Vec::with_capacity(attempts.len());
    let mut codes = Vec::with_capacity(attempts.len());
    let mut kinds = Vec::with_capacity(attempts.len());
    let mut messages = Vec::with_capacity(attempts.len());
    let mut excerpts = Vec::with_capacity(attempts.len());
    let mut request_headers = Vec::with_capacity(attempts.len());
    let mut response_headers = Vec::with_capacity(attempts.len());
    for (delivery_id, number, attempt) in attempts {
        delivery_ids.push(*delivery_id);
        numbers.push(*number);
        started.push(attempt.started_at);
        durations.push(attempt.duration_ms);
        codes.push(attempt.status_code.map(i64::from));
        kinds.push(attempt.error_kind.map(|k| k.as_str()));
        messages.push(attempt.error_message.as_deref().map(storable));
        excerpts.push(attempt.response_excerpt.as_deref().map(storable));
        // JSON escapes NUL, so headers are always storable.
        request_headers.push(serde_json::to_string(&attempt.request_headers).unwrap_or_default());
        response_headers.push(serde_json::to_string(&attempt.response_headers).unwrap_or_default());
    }
    sqlx::query(
        "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error_kind, error_message,
                               response_excerpt, request_headers, response_headers)
         SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::TEXT[],
                              $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[])",
    )
    .bind(&delivery_ids)
    .bind(&numbers)
    .bind(&started)
    .bind(&durations)
    .bind(&codes)
    .bind(&kinds)
    .bind(&messages)
    .bind(&excerpts)
    .bind(&request_headers)
    .bind(&response_headers)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives back claimed deliveries, due at once; returns whether any was given back.
pub async fn release(pool: &PgPool, node: &str, ids: &[String]) -> StoreResult<bool> {
    // The rate tokens the claim spent on them go back to their webhooks' buckets (never above a
    // full bucket); gates are locked in webhook id order, as claims lock them.
    let released: i64 = sqlx::query_scalar(
        "WITH released AS (
             UPDATE deliveries d SET claimed_by = NULL, next_attempt_at = $1
             FROM (SELECT id FROM deliveries
                   WHERE claimed_by = $2 AND status = 'pending' AND id = ANY($3)
                   ORDER BY id FOR UPDATE) mine
             WHERE d.id = mine.id
             RETURNING d.webhook_id),
         back AS (
             SELECT webhook_id, COUNT(*) AS tokens FROM released GROUP BY webhook_id),
         gates AS (
             SELECT g.webhook_id FROM webhook_gates g JOIN back ON back.webhook_id = g.webhook_id
             WHERE g.rate_per_s IS NOT NULL
             ORDER BY g.webhook_id FOR UPDATE OF g),
         refunded AS (
             UPDATE webhook_gates g SET rate_tokens = LEAST(g.rate_per_s, g.rate_tokens + back.tokens)
             FROM back JOIN gates ON gates.webhook_id = back.webhook_id
             WHERE g.webhook_id = back.webhook_id)
         SELECT COUNT(*) FROM released",
    )
    .bind(now_millis())
    .bind(node)
    .bind(ids)
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    Ok(released > 0)
}

pub async fn renew(
    pool: &PgPool,
    node: &str,
    ids: &[String],
    until: UnixMillis,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deliveries d SET next_attempt_at = GREATEST(d.next_attempt_at, $1)
         FROM (SELECT id FROM deliveries
               WHERE claimed_by = $2 AND status = 'pending' AND id = ANY($3)
               ORDER BY id FOR UPDATE) mine
         WHERE d.id = mine.id",
    )
    .bind(until)
    .bind(node)
    .bind(ids)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub async fn next_due_at(pool: &PgPool) -> StoreResult<Option<UnixMillis>> {
    // Held deliveries (paused or disabled webhooks) have no due time, so this reads one index entry.
    sqlx::query_scalar(
        "SELECT next_attempt_at FROM deliveries
         WHERE status = 'pending' AND next_attempt_at IS NOT NULL
         ORDER BY next_attempt_at LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    .map_err(map_err)
}

pub async fn count_pending(pool: &PgPool) -> StoreResult<u64> {
    // Counted as due plus held, so each half is read from its own partial index.
    let count: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at IS NOT NULL)
              + (SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at IS NULL)",
    )
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    Ok(u64::try_from(count).unwrap_or(0))
}
