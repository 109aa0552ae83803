//! Stories about several nodes sharing one database (PostgreSQL only): each node is a store opened
//! on the same database, and they claim, record, retrigger, purge and notify at the same time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_core::webhook::WebhookState;
use tidings_store::*;

use crate::backends::Backend;
use crate::fixtures::*;

const WEBHOOK_DISABLED: &str = "tidings.webhook.disabled";

async fn nodes(backend: &Backend, count: usize) -> Vec<Arc<dyn Store>> {
    let mut stores = Vec::with_capacity(count);
    for _ in 0..count {
        stores.push(backend.open().await);
    }
    stores
}

/// Runs `work` on every node at once and collects what each returned, in node order.
async fn on_every_node<T, F, Fut>(stores: &[Arc<dyn Store>], work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, Arc<dyn Store>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(index, store)| tokio::spawn(work(index, Arc::clone(store))))
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("a node's task"));
    }
    results
}

fn node_name(index: usize) -> String {
    format!("node-{index}")
}

pub async fn nodes_never_share_a_delivery(backend: Backend) {
    let stores = nodes(&backend, 3).await;
    let store = stores[0].as_ref();
    let home = workspace(store).await;
    let mut all = BTreeSet::new();
    for _ in 0..3 {
        let hook = webhook(store, &home.id, WebhookState::Active).await;
        all.extend(publish_many(store, &hook, 100, now() - 1_000).await);
    }
    assert_eq!(all.len(), 300);

    let per_node = on_every_node(&stores, |index, store| async move {
        let mut mine = Vec::new();
        loop {
            let batch = claim_due(store.as_ref(), &claim(&node_name(index), now(), 20)).await;
            if batch.is_empty() {
                break;
            }
            mine.extend(batch.into_iter().map(|c| c.delivery_id));
        }
        mine
    })
    .await;

    let mut seen = BTreeSet::new();
    for (index, mine) in per_node.iter().enumerate() {
        for id in mine {
            assert!(
                seen.insert(id.clone()),
                "delivery {id} handed to node-{index} and another node"
            );
        }
    }
    assert_eq!(seen, all, "together the nodes claimed every delivery");
    assert!(
        claim_due(store, &claim("node-x", now(), 100))
            .await
            .is_empty()
    );
}

pub async fn per_webhook_concurrency_holds_across_nodes(backend: Backend) {
    let stores = nodes(&backend, 3).await;
    let store = stores[0].as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    publish_many(store, &hook, 50, now() - 1_000).await;
    let capped = |node: &str| Claim {
        per_webhook_claims: 4,
        ..claim(node, now(), 10)
    };

    let mut finished = BTreeSet::new();
    for round in 0..5 {
        let held: Vec<Vec<ClaimedDelivery>> = on_every_node(&stores, |index, store| async move {
            claim_due(
                store.as_ref(),
                &Claim {
                    per_webhook_claims: 4,
                    ..claim(&node_name(index), now(), 10)
                },
            )
            .await
        })
        .await;
        let live: usize = held.iter().map(Vec::len).sum();
        assert!(
            (1..=4).contains(&live),
            "round {round}: {live} live claims across the nodes"
        );
        // A node claiming alone tops the webhook up to the limit and no further.
        let topped = claim_due(store, &capped("node-0")).await;
        assert_eq!(live + topped.len(), 4, "round {round}");
        assert!(
            claim_due(stores[1].as_ref(), &capped("node-1"))
                .await
                .is_empty(),
            "round {round}: at the limit"
        );

        // Once their outcomes are recorded, more can be claimed.
        for (index, claimed) in held.iter().enumerate() {
            let outcomes: Vec<Outcome> = claimed.iter().map(delivered).collect();
            record(
                stores[index].as_ref(),
                &node_name(index),
                outcomes,
                &quiet_policy(),
            )
            .await;
        }
        record(
            store,
            "node-0",
            topped.iter().map(delivered).collect(),
            &quiet_policy(),
        )
        .await;
        for claimed in held.iter().flatten().chain(&topped) {
            assert!(
                finished.insert(claimed.delivery_id.clone()),
                "delivered twice"
            );
        }
    }
    assert_eq!(finished.len(), 20);
    assert_eq!(store.count_pending().await.expect("count pending"), 30);
}

pub async fn rate_limit_is_shared_across_nodes(backend: Backend) {
    let stores = nodes(&backend, 3).await;
    let store = stores[0].as_ref();
    let home = workspace(store).await;
    let hook = webhook_with_spec(store, &home.id, |spec| spec.rate_limit_per_s = Some(5)).await;
    publish_many(store, &hook, 100, now() - 1_000).await;

    let started = Instant::now();
    let per_node = on_every_node(&stores, move |index, store| async move {
        let mut claimed = 0usize;
        while started.elapsed() < Duration::from_millis(1_500) {
            let batch = claim_due(store.as_ref(), &claim(&node_name(index), now(), 10)).await;
            claimed += batch.len();
            // Finished at once, so only the rate limit holds the nodes back.
            if !batch.is_empty() {
                record(
                    store.as_ref(),
                    &node_name(index),
                    batch.iter().map(delivered).collect(),
                    &quiet_policy(),
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        claimed
    })
    .await;
    let total: usize = per_node.iter().sum();
    // A full bucket (5) and 1.5 s of refill (7.5): about 12. Three nodes each with a bucket of their
    // own would take about 36.
    assert!(
        (5..15).contains(&total),
        "{total} deliveries claimed in 1.5 s at 5/s ({per_node:?})"
    );
}

pub async fn concurrent_retrigger_requeues_each_delivery_once(backend: Backend) {
    let stores = nodes(&backend, 2).await;
    let store = stores[0].as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let since = now() - 60_000;
    publish_many(store, &hook, 200, since + 1_000).await;
    let claimed = claim_due(store, &claim("node-0", now(), 1_000)).await;
    assert_eq!(claimed.len(), 200);
    record(
        store,
        "node-0",
        claimed
            .iter()
            .map(|c| failed(c, NextState::Failed))
            .collect(),
        &quiet_policy(),
    )
    .await;

    let filter = RetriggerFilter {
        webhook_id: hook.id.clone(),
        since,
        until: now() + 1,
        statuses: vec![DeliveryStatus::Failed],
    };
    let workspace_id = home.id.clone();
    let counts = on_every_node(&stores, |_, store| {
        let filter = filter.clone();
        let workspace_id = workspace_id.clone();
        async move {
            let mut counts = Vec::new();
            loop {
                let count = store
                    .retrigger(&workspace_id, &filter, 20, now())
                    .await
                    .expect("retrigger");
                counts.push(count);
                if count == 0 {
                    break counts;
                }
            }
        }
    })
    .await;
    let total: u64 = counts.iter().flatten().sum();
    assert_eq!(
        total, 200,
        "each finished delivery re-queued exactly once ({counts:?})"
    );
    assert_eq!(store.count_pending().await.expect("count pending"), 200);
    assert_eq!(
        store
            .retrigger(&home.id, &filter, 1_000, now())
            .await
            .expect("retrigger"),
        0
    );
    let requeued = claim_due(store, &claim("node-0", now(), 1_000)).await;
    assert_eq!(ids_of(&requeued), ids_of(&claimed));
}

pub async fn concurrent_purge_counts_each_delivery_once(backend: Backend) {
    let stores = nodes(&backend, 2).await;
    let store = stores[0].as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    publish_many(store, &hook, 200, now() - 1_000).await;
    let claimed = claim_due(store, &claim("node-0", now(), 1_000)).await;
    assert_eq!(claimed.len(), 200);
    record(
        store,
        "node-0",
        claimed.iter().map(delivered).collect(),
        &quiet_policy(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = now();

    let counts = on_every_node(&stores, move |_, store| async move {
        let mut counts = Vec::new();
        loop {
            let count = store
                .purge_finished(cutoff, 20)
                .await
                .expect("purge finished deliveries");
            counts.push(count);
            if count == 0 {
                break counts;
            }
        }
    })
    .await;
    let total: u64 = counts.iter().flatten().sum();
    assert_eq!(total, 200, "each delivery counted once ({counts:?})");
    assert!(
        store
            .list_deliveries(
                &home.id,
                &DeliveryFilter::default(),
                &Page {
                    limit: 1_000,
                    after: None
                }
            )
            .await
            .expect("list deliveries")
            .is_empty()
    );
    for claimed in claimed.iter().take(10) {
        assert_not_found(
            store.get_event(&home.id, &claimed.event_id).await,
            "a purged delivery's event",
        );
    }
}

pub async fn concurrent_failures_keep_one_count_and_one_notification(backend: Backend) {
    let stores = nodes(&backend, 2).await;
    let store = stores[0].as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let ids = publish_many(store, &hook, 40, now() - 1_000).await;
    let mut held = Vec::new();
    for (index, node) in stores.iter().enumerate() {
        let claimed = claim_due(node.as_ref(), &claim(&node_name(index), now(), 20)).await;
        assert_eq!(claimed.len(), 20);
        held.push(claimed);
    }
    let policy = HealthPolicy {
        auto_disable_after_ms: 60_000,
        auto_disable_min_failures: 30,
        notify_operator: true,
    };
    let long_ago = now() - 120_000;
    let held = Arc::new(held);
    on_every_node(&stores, |index, store| {
        let held = Arc::clone(&held);
        let policy = policy.clone();
        async move {
            for chunk in held[index].chunks(5) {
                let outcomes = chunk
                    .iter()
                    .map(|c| {
                        outcome(
                            &c.delivery_id,
                            &c.webhook.id,
                            attempt(long_ago, 30, Some(503)),
                            NextState::RetryAt(now() + 3_600_000),
                        )
                    })
                    .collect();
                record(store.as_ref(), &node_name(index), outcomes, &policy).await;
            }
        }
    })
    .await;

    let after = webhook_now(store, &hook).await;
    assert_eq!(
        after.health.failures_since_success, 40,
        "no failure lost between nodes"
    );
    assert_eq!(after.health.failing_since, Some(long_ago));
    assert_eq!(after.state, WebhookState::Disabled);
    for id in &ids {
        assert_eq!(
            delivery(store, &home.id, id).await.attempts,
            1,
            "delivery {id}"
        );
    }
    let notifications = notifications_due(store, now()).await;
    assert_eq!(
        count_of_type(&notifications, WEBHOOK_DISABLED),
        1,
        "{notifications:?}"
    );
    assert_eq!(notifications.len(), 1);
}

pub async fn concurrent_notification_claims_never_share_one(backend: Backend) {
    let stores = nodes(&backend, 2).await;
    let store = stores[0].as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    publish_many(store, &hook, 30, now() - 1_000).await;
    let claimed = claim_due(store, &claim("node-0", now(), 100)).await;
    let notify = HealthPolicy {
        notify_operator: true,
        ..HealthPolicy::default()
    };
    record(
        store,
        "node-0",
        claimed
            .iter()
            .map(|c| failed(c, NextState::Failed))
            .collect(),
        &notify,
    )
    .await;

    let at = now();
    let per_node = on_every_node(&stores, move |_, store| async move {
        let mut mine = Vec::new();
        loop {
            let batch = store
                .claim_notifications(at, 4, 60_000)
                .await
                .expect("claim notifications");
            if batch.is_empty() {
                break mine;
            }
            mine.extend(batch.into_iter().map(|n| n.id));
        }
    })
    .await;
    let mut seen = BTreeSet::new();
    for id in per_node.iter().flatten() {
        assert!(
            seen.insert(id.clone()),
            "notification {id} handed out twice"
        );
    }
    assert_eq!(seen.len(), 30, "{per_node:?}");
}

pub async fn publish_on_one_node_wakes_another(backend: Backend) {
    let stores = nodes(&backend, 2).await;
    let (publisher, sleeper) = (stores[0].as_ref(), stores[1].as_ref());
    let home = workspace(publisher).await;
    let hook = webhook(publisher, &home.id, WebhookState::Active).await;
    let signal = sleeper.work_signal();
    // A listener may wake its node once when it starts listening (to look for work it missed);
    // let that pass first, so it cannot be mistaken for the publish's wake-up below.
    let _ = tokio::time::timeout(Duration::from_secs(2), signal.notified()).await;
    drain(&signal).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), signal.notified())
            .await
            .is_err(),
        "no wake-up without work"
    );
    assert!(
        wakes(&signal, async {
            publish(
                publisher,
                new_event(&home.id, "lead.created.v1", now(), &[&hook]),
            )
            .await;
        })
        .await,
        "a publish on one node wakes the other within a second"
    );
}

pub async fn rate_limit_follows_webhook_updates(backend: Backend) {
    let stores = nodes(&backend, 2).await;
    let store = stores[0].as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    publish_many(store, &hook, 20, now() - 1_000).await;

    // A limit set after creation holds for every node: a full bucket of 2, then nothing for now.
    let mut limited = webhook_now(store, &hook).await;
    limited.spec.rate_limit_per_s = Some(2);
    limited.updated_at = now();
    store
        .update_webhook(&limited)
        .await
        .expect("set a rate limit");
    let first = claim_due(stores[1].as_ref(), &claim("node-1", now(), 20)).await;
    assert_eq!(first.len(), 2, "one second's worth");
    assert!(
        claim_due(store, &claim("node-0", now(), 20))
            .await
            .is_empty(),
        "the bucket is shared"
    );

    // Lifting the limit lets everything due through at once.
    let mut unlimited = webhook_now(store, &hook).await;
    unlimited.spec.rate_limit_per_s = None;
    unlimited.updated_at = now();
    store
        .update_webhook(&unlimited)
        .await
        .expect("lift the rate limit");
    let rest = claim_due(stores[1].as_ref(), &claim("node-1", now(), 100)).await;
    assert_eq!(rest.len(), 18);
}

/// A node remembers a claim that found nothing outside its full lanes; work another node makes due
/// outside them ends that at once (its notification reaches the node), not a second later.
pub async fn work_from_another_node_is_claimed_past_full_lanes(backend: Backend) {
    let stores = nodes(&backend, 2).await;
    let (publisher, claimer) = (stores[0].as_ref(), stores[1].as_ref());
    let home = workspace(publisher).await;
    let full = webhook(publisher, &home.id, WebhookState::Active).await;
    let other = webhook(publisher, &home.id, WebhookState::Active).await;
    publish_many(publisher, &full, 5, now() - 1_000).await;
    let signal = claimer.work_signal();
    // Wake-ups from starting to listen and from the publish above pass first.
    let _ = tokio::time::timeout(Duration::from_secs(2), signal.notified()).await;
    drain(&signal).await;

    let start = now();
    let past_full = || Claim {
        exclude_webhooks: vec![full.id.clone()],
        ..claim("node-1", start, 10)
    };
    assert!(claim_due(claimer, &past_full()).await.is_empty());
    assert!(claim_due(claimer, &past_full()).await.is_empty());
    let mut fresh = Vec::new();
    assert!(
        wakes(&signal, async {
            fresh = publish_many(publisher, &other, 1, start).await;
        })
        .await,
        "the other node's publish reaches this one"
    );
    let claimed = claim_due(claimer, &past_full()).await;
    assert_eq!(ids_of(&claimed), fresh);
}

/// Deliveries given back unattempted give back the rate tokens their claim spent, so a
/// rate-limited webhook loses no sending time to a release (a full lane, a node stopping).
pub async fn released_claims_give_their_rate_tokens_back(backend: Backend) {
    let stores = nodes(&backend, 2).await;
    let store = stores[0].as_ref();
    let home = workspace(store).await;
    let hook = webhook_with_spec(store, &home.id, |spec| spec.rate_limit_per_s = Some(2)).await;
    publish_many(store, &hook, 10, now() - 1_000).await;

    let first = claim_due(store, &claim("node-0", now(), 10)).await;
    assert_eq!(first.len(), 2, "a full bucket of 2");
    assert!(
        claim_due(stores[1].as_ref(), &claim("node-1", now(), 10))
            .await
            .is_empty()
    );
    store
        .release("node-0", &ids_of(&first))
        .await
        .expect("release");
    let again = claim_due(stores[1].as_ref(), &claim("node-1", now(), 10)).await;
    assert_eq!(again.len(), 2, "the released claims' tokens are back");
}
