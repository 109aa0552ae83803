//! Several nodes claiming from one database: no delivery twice, the per-webhook concurrency limit
//! and rate limit for all nodes together, and leases that run out moving work to another node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use std::time::Duration;
use tidings_core::webhook::WebhookState;
use tidings_store::*;

use tidings_store_postgres::{PostgresOptions, PostgresStore};

use crate::helpers::*;

/// Runs every claim at once, each on the node it names (`a` for "node-a", `b` otherwise); returns
/// what each claimer got, with the node that got it.
async fn race(
    a: &Arc<PostgresStore>,
    b: &Arc<PostgresStore>,
    claims: Vec<Claim>,
) -> Vec<(String, ClaimedDelivery)> {
    let mut tasks = Vec::new();
    for claim in claims {
        let store = if claim.node == "node-a" {
            a.clone()
        } else {
            b.clone()
        };
        tasks.push(tokio::spawn(async move {
            let claimed = store.claim_due(&claim).await.expect("claim");
            claimed
                .into_iter()
                .map(|c| (claim.node.clone(), c))
                .collect::<Vec<_>>()
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("claimer"));
    }
    all
}

fn node_name(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "node-a"
    } else {
        "node-b"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_claiming_at_once_never_claim_one_delivery_twice() {
    let (url, a, b) = two_nodes().await;
    let ws = workspace(&a).await;
    let at = now() - 1_000;
    let mut webhooks = Vec::new();
    for _ in 0..20 {
        webhooks.push(webhook(&a, &ws.id).await);
    }
    let mut published = HashSet::new();
    for round in 0..30 {
        let targets: Vec<&Webhook> = webhooks.iter().skip(round % 3).collect();
        for result in a
            .publish(vec![new_event(&ws.id, at, &targets)])
            .await
            .expect("publish")
        {
            published.extend(result.delivery_ids);
        }
    }
    let nodes = [
        (Arc::new(a), "node-a"),
        (Arc::new(b), "node-b"),
        (Arc::new(node(&url).await), "node-c"),
    ];
    let mut tasks = Vec::new();
    for (store, name) in &nodes {
        // Two claimers per node, all racing until nothing is due.
        for _ in 0..2 {
            let store = store.clone();
            let name = name.to_string();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claimed = store
                        .claim_due(&claim(&name, now(), 17))
                        .await
                        .expect("claim");
                    if claimed.is_empty() {
                        return mine;
                    }
                    mine.extend(claimed.into_iter().map(|c| (c.delivery_id, name.clone())));
                }
            }));
        }
    }
    let mut owner = HashMap::new();
    for task in tasks {
        for (id, name) in task.await.expect("claimer") {
            assert!(
                owner.insert(id.clone(), name).is_none(),
                "{id} was claimed twice"
            );
        }
    }
    let claimed: HashSet<String> = owner.keys().cloned().collect();
    assert_eq!(
        claimed, published,
        "every delivery was claimed exactly once"
    );
    let look = inspect(&url).await;
    let stored: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id, claimed_by FROM deliveries")
            .fetch_all(&look)
            .await
            .expect("read claims");
    for (id, claimed_by) in stored {
        assert_eq!(claimed_by.as_ref(), owner.get(&id), "claim of {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_webhook_concurrency_holds_across_nodes_claiming_at_once() {
    let (_url, a, b) = two_nodes().await;
    let ws = workspace(&a).await;
    let busy = webhook(&a, &ws.id).await;
    let quiet = webhook(&a, &ws.id).await;
    let at = now() - 1_000;
    // Fewer than a claim's window (twice its limit of 50) so that every claim sees the quiet
    // webhook's deliveries behind the busy one's, whether or not the claims overlap: with more,
    // only claims skipping each other's locked rows reach them. (In the dispatcher a full lane is
    // left out of the next claim instead.)
    publish_many(&a, &busy, 60, at).await;
    publish_many(&a, &quiet, 3, at).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let limited = |i: usize| Claim {
        per_webhook_claims: 5,
        ..claim(node_name(i), now(), 50)
    };

    let first = race(&a, &b, (0..8).map(limited).collect()).await;
    let of_busy: Vec<&(String, ClaimedDelivery)> = first
        .iter()
        .filter(|(_, c)| c.webhook.id == busy.id)
        .collect();
    assert_eq!(
        of_busy.len(),
        5,
        "at most 5 of one webhook across both nodes"
    );
    assert_eq!(
        first
            .iter()
            .filter(|(_, c)| c.webhook.id == quiet.id)
            .count(),
        3,
        "a webhook at its limit does not hold back another"
    );

    // Two attempts finish: exactly two more may start, whichever node claims.
    for (owner, claimed) in of_busy.iter().take(2) {
        let store = if owner == "node-a" { &a } else { &b };
        store
            .record_outcomes(
                owner,
                vec![outcome(claimed, Some(200), NextState::Delivered)].into(),
                &quiet_policy(),
            )
            .await
            .expect("record");
    }
    let second = race(&a, &b, (0..8).map(limited).collect()).await;
    assert_eq!(second.len(), 2, "only the two freed places are taken");

    // A claim whose lease ran out no longer counts: at its end the webhook's places are free again.
    let later = now() + LONG_LEASE_MS + 1;
    let taken_over = race(
        &a,
        &b,
        (0..4)
            .map(|i| Claim {
                per_webhook_claims: 5,
                ..claim(node_name(i), later, 50)
            })
            .collect(),
    )
    .await;
    assert_eq!(
        taken_over
            .iter()
            .filter(|(_, c)| c.webhook.id == busy.id)
            .count(),
        5,
        "after the leases ran out, 5 places again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_ran_out_is_taken_over_and_the_late_record_is_ignored() {
    let (url, a, b) = two_nodes().await;
    let ws = workspace(&a).await;
    let hook = webhook(&a, &ws.id).await;
    let at = now() - 1_000;
    let ids = publish_many(&a, &hook, 1, at).await;

    let short = |name: &str, at| Claim {
        lease_ms: 5_000,
        ..claim(name, at, 10)
    };
    let t0 = now();
    let by_a = a.claim_due(&short("node-a", t0)).await.expect("claim on a");
    assert_eq!(by_a.len(), 1);
    assert!(
        b.claim_due(&short("node-b", t0 + 4_999))
            .await
            .expect("claim on b")
            .is_empty(),
        "held while the lease lasts"
    );
    let by_b = b
        .claim_due(&short("node-b", t0 + 5_000))
        .await
        .expect("claim on b");
    assert_eq!(by_b.len(), 1, "taken over when the lease ran out");
    assert_eq!(by_b[0].delivery_id, ids[0]);

    // Node a finally reports its attempt: too late, it no longer holds the claim.
    a.record_outcomes(
        "node-a",
        vec![outcome(&by_a[0], Some(500), NextState::RetryAt(now()))].into(),
        &quiet_policy(),
    )
    .await
    .expect("late record");
    a.renew_claims("node-a", &ids, t0 + 60_000)
        .await
        .expect("late renewal");
    a.release("node-a", &ids).await.expect("late release");
    let delivery = b.get_delivery(&ws.id, &ids[0]).await.expect("read");
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    assert_eq!(delivery.attempts, 0, "the late attempt is not counted");
    assert_eq!(
        delivery.next_attempt_at,
        Some(t0 + 10_000),
        "b's lease is intact"
    );
    assert!(b.list_attempts(&ids[0]).await.expect("attempts").is_empty());
    let health = b.get_webhook(&ws.id, &hook.id).await.expect("read").health;
    assert_eq!(health.failures_since_success, 0, "health untouched");
    let look = inspect(&url).await;
    let holder: Option<String> =
        sqlx::query_scalar("SELECT claimed_by FROM deliveries WHERE id = $1")
            .bind(&ids[0])
            .fetch_one(&look)
            .await
            .expect("read the claim");
    assert_eq!(holder.as_deref(), Some("node-b"));

    // The node holding the claim renews and records it.
    b.renew_claims("node-b", &ids, t0 + 60_000)
        .await
        .expect("renew");
    let delivery = b.get_delivery(&ws.id, &ids[0]).await.expect("read");
    assert_eq!(delivery.next_attempt_at, Some(t0 + 60_000));
    b.record_outcomes(
        "node-b",
        vec![outcome(&by_b[0], Some(200), NextState::Delivered)].into(),
        &quiet_policy(),
    )
    .await
    .expect("record");
    let delivery = a.get_delivery(&ws.id, &ids[0]).await.expect("read");
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_bucket_is_shared_by_all_nodes() {
    let (_url, a, b) = two_nodes().await;
    let ws = workspace(&a).await;
    let limited = rate_limited_webhook(&a, &ws.id, Some(5)).await;
    let free = webhook(&a, &ws.id).await;
    let t0 = now();
    publish_many(&a, &limited, 100, t0 - 1_000).await;
    publish_many(&a, &free, 20, t0 - 1_000).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let count_of = |claimed: &[(String, ClaimedDelivery)], webhook: &Webhook| {
        claimed
            .iter()
            .filter(|(_, c)| c.webhook.id == webhook.id)
            .count()
    };

    // A full bucket holds one second's worth, however many nodes ask at once.
    let at_once = race(&a, &b, (0..6).map(|i| claim(node_name(i), t0, 4)).collect()).await;
    assert_eq!(
        count_of(&at_once, &limited),
        5,
        "one second's worth at first"
    );
    let rest = a.claim_due(&claim("node-a", t0, 100)).await.expect("claim");
    let rest: Vec<(String, ClaimedDelivery)> =
        rest.into_iter().map(|c| ("node-a".to_owned(), c)).collect();
    assert_eq!(count_of(&rest, &limited), 0, "no tokens left at once");
    assert_eq!(
        count_of(&at_once, &free) + count_of(&rest, &free),
        20,
        "a rate-limited webhook does not hold back others"
    );

    // Refilled at 5 per second: 200 ms later one more, 1 s later a full bucket and no more.
    assert!(
        b.claim_due(&claim("node-b", t0 + 199, 100))
            .await
            .expect("claim")
            .is_empty(),
        "no whole token yet"
    );
    let one = race(
        &a,
        &b,
        (0..4).map(|i| claim(node_name(i), t0 + 200, 100)).collect(),
    )
    .await;
    assert_eq!(one.len(), 1, "one token after 200 ms");
    let later = race(
        &a,
        &b,
        (0..4)
            .map(|i| claim(node_name(i), t0 + 10_000, 100))
            .collect(),
    )
    .await;
    assert_eq!(
        later.len(),
        5,
        "a full bucket after a long pause, never more"
    );

    // Lowering the rate caps what is left in the bucket at the new rate.
    let mut slower = a.get_webhook(&ws.id, &limited.id).await.expect("read");
    slower.spec.rate_limit_per_s = Some(2);
    a.update_webhook(&slower).await.expect("update");
    let capped = b
        .claim_due(&claim("node-b", t0 + 60_000, 100))
        .await
        .expect("claim");
    assert_eq!(capped.len(), 2, "the new rate's bucket");
    // Removing the limit lets the rest go (up to the claim's limit).
    slower.spec.rate_limit_per_s = None;
    a.update_webhook(&slower).await.expect("update");
    let unlimited = b
        .claim_due(&claim("node-b", t0 + 60_000, 30))
        .await
        .expect("claim");
    assert_eq!(unlimited.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_and_records_racing_webhook_changes_and_deletes_never_deadlock() {
    let (url, a, b) = two_nodes().await;
    let ws = workspace(&a).await;
    let mut webhooks = Vec::new();
    for i in 0..6 {
        let webhook = rate_limited_webhook(&a, &ws.id, (i % 2 == 0).then_some(1_000)).await;
        publish_many(&a, &webhook, 150, now() - 1_000).await;
        webhooks.push(webhook);
    }
    let (a, b) = (Arc::new(a), Arc::new(b));
    let claimer = {
        let a = a.clone();
        tokio::spawn(async move {
            for _ in 0..60 {
                let claimed = a
                    .claim_due(&claim("node-a", now(), 40))
                    .await
                    .expect("claim");
                let ids: Vec<String> = claimed.into_iter().map(|c| c.delivery_id).collect();
                a.release("node-a", &ids).await.expect("release");
            }
        })
    };
    let changer = {
        let b = b.clone();
        let webhooks = webhooks.clone();
        tokio::spawn(async move {
            for round in 0..10 {
                for webhook in &webhooks[..4] {
                    let mut changed = b
                        .get_webhook(&webhook.workspace_id, &webhook.id)
                        .await
                        .expect("read");
                    changed.state = if round % 2 == 0 {
                        WebhookState::Paused
                    } else {
                        WebhookState::Active
                    };
                    changed.spec.rate_limit_per_s = Some(100 + round);
                    b.update_webhook(&changed).await.expect("update");
                }
            }
            for webhook in &webhooks[4..] {
                b.delete_webhook(&webhook.workspace_id, &webhook.id)
                    .await
                    .expect("delete");
            }
        })
    };
    let recorder = {
        let b = b.clone();
        tokio::spawn(async move {
            let policy = HealthPolicy {
                notify_operator: true,
                ..quiet_policy()
            };
            for round in 0..30 {
                let claimed = b
                    .claim_due(&claim("node-b", now(), 30))
                    .await
                    .expect("claim");
                let outcomes: Vec<_> = claimed
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        if i == 0 && round % 5 == 4 {
                            Outcome {
                                disable_webhook: Some("gone".to_owned()),
                                ..outcome(c, Some(410), NextState::Failed)
                            }
                        } else {
                            outcome(c, Some(503), NextState::RetryAt(now()))
                        }
                    })
                    .collect();
                b.record_outcomes("node-b", outcomes.into(), &policy)
                    .await
                    .expect("record");
                if round % 5 == 4
                    && let Some(first) = claimed.first()
                {
                    b.enable_webhook(&first.webhook.workspace_id, &first.webhook.id, now())
                        .await
                        .or_else(|e| match e {
                            StoreError::NotFound => Ok(()),
                            other => Err(other),
                        })
                        .expect("enable");
                }
            }
        })
    };
    claimer.await.expect("claimer");
    changer.await.expect("changer");
    recorder.await.expect("recorder");
    // Deadlocks are retried, so they show only in the database's statistics, which a session
    // reports when it ends.
    a.close().await;
    b.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let look = inspect(&url).await;
    let deadlocks: i64 = sqlx::query_scalar(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&look)
    .await
    .expect("read statistics");
    assert_eq!(deadlocks, 0);
}

/// Claims and recorded outcomes find their deliveries by key however much the table grew since
/// their statements first ran on a connection. A statement prepared there settles on one generic
/// plan after a few runs; made on a nearly empty table, that plan reads the whole table each time,
/// until autovacuum's next ANALYZE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_records_read_by_key_after_the_table_grew() {
    let url = tidings_testkit::postgres::fresh_database().await;
    // One connection, so every run of a statement lands on the same one.
    let store = PostgresStore::open(&PostgresOptions {
        max_connections: 1,
        ..options(&url)
    })
    .await
    .expect("open the PostgreSQL store");
    let ws = workspace(&store).await;
    let hook = webhook(&store, &ws.id).await;
    let look = inspect(&url).await;
    let cycle = || deliver_one(&store, &hook);
    // Sequential scans of the deliveries table so far. A backend reports its counts when it goes
    // idle at least a second after its last report: wait, then run a statement that does not read
    // deliveries.
    let seq_scans = || async {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        store
            .get_workspace(&ws.id)
            .await
            .expect("read the workspace");
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query_scalar::<_, i64>(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'deliveries'",
        )
        .fetch_one(&look)
        .await
        .expect("read the table's statistics")
    };
    // Well past the five runs after which a prepared statement may keep a generic plan, on a
    // nearly empty table.
    for _ in 0..10 {
        cycle().await;
    }
    // Then the table grows by far more than those plans saw, with deliveries not due yet.
    publish_many(&store, &hook, 20_000, now() + 86_400_000).await;
    let before = seq_scans().await;
    for _ in 0..5 {
        cycle().await;
    }
    assert_eq!(
        seq_scans().await,
        before,
        "a claim or a recorded outcome read the whole deliveries table"
    );
}
