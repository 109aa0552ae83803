//! Stories about operations on deliveries and the server: manual retries, retriggers, summaries,
//! retention, the notification outbox, the due-work queries and server values.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidings_core::ids::{IdKind, new_id};
use tidings_core::stats;
use tidings_core::webhook::WebhookState;
use tidings_store::*;

use crate::backends::Backend;
use crate::fixtures::*;

fn by_id(claimed: Vec<ClaimedDelivery>) -> HashMap<String, ClaimedDelivery> {
    claimed
        .into_iter()
        .map(|c| (c.delivery_id.clone(), c))
        .collect()
}

pub async fn next_due_at_and_count_pending_follow_the_queue(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    assert_eq!(store.next_due_at().await.expect("next due"), None);
    assert_eq!(store.count_pending().await.expect("count pending"), 0);
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let paused = webhook(store, &home.id, WebhookState::Paused).await;
    let start = now();
    let due_ids = publish_many(store, &hook, 1, start - 5_000).await;
    let later_ids = publish_many(store, &hook, 1, start + 10_000).await;
    publish_many(store, &paused, 1, start - 9_000).await;
    assert_eq!(
        store.next_due_at().await.expect("next due"),
        Some(start - 5_000),
        "the earliest due delivery; held ones have no due time"
    );
    assert_eq!(store.count_pending().await.expect("count pending"), 3);

    let claimed = claim_due(store, &claim("node-a", start, 10)).await;
    assert_eq!(ids_of(&claimed), due_ids);
    assert_eq!(
        store.next_due_at().await.expect("next due"),
        Some(start + 10_000),
        "a claimed delivery is not due before its lease ends"
    );
    assert_eq!(
        store.count_pending().await.expect("count pending"),
        3,
        "claimed deliveries are pending"
    );
    record(
        store,
        "node-a",
        vec![delivered(&claimed[0])],
        &quiet_policy(),
    )
    .await;
    assert_eq!(store.count_pending().await.expect("count pending"), 2);
    assert_eq!(
        store.next_due_at().await.expect("next due"),
        Some(start + 10_000)
    );

    let claimed = claim_due(store, &claim("node-a", start + 10_000, 10)).await;
    assert_eq!(ids_of(&claimed), later_ids);
    record(
        store,
        "node-a",
        vec![failed(&claimed[0], NextState::Failed)],
        &quiet_policy(),
    )
    .await;
    assert_eq!(store.count_pending().await.expect("count pending"), 1);
    assert_eq!(store.next_due_at().await.expect("next due"), None);
}

pub async fn retry_delivery_queues_a_finished_delivery_again(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let ids = publish_many(store, &hook, 3, now() - 1_000).await;
    let (failed_id, waiting_id, paused_id) = (&ids[0], &ids[1], &ids[2]);
    let claimed = by_id(claim_due(store, &claim("node-a", now(), 10)).await);
    record(
        store,
        "node-a",
        vec![
            failed(&claimed[failed_id], NextState::Failed),
            failed(&claimed[waiting_id], NextState::RetryAt(now() + 3_600_000)),
            delivered(&claimed[paused_id]),
        ],
        &quiet_policy(),
    )
    .await;

    let at = now();
    let retried = store
        .retry_delivery(&home.id, failed_id, at)
        .await
        .expect("retry a failed delivery");
    assert_eq!(retried.id, *failed_id, "the same delivery, not a new one");
    assert_eq!(retried.status, DeliveryStatus::Pending);
    assert_eq!(retried.next_attempt_at, Some(at));
    assert_eq!(retried.attempts, 1);
    assert_eq!(retried.updated_at, at);
    assert_eq!(retried.last_status_code, Some(500));
    assert_eq!(
        store.next_due_at().await.expect("next due"),
        Some(at),
        "due at once"
    );

    // A pending delivery waiting for its retry can be brought forward.
    let forward = store
        .retry_delivery(&home.id, waiting_id, at)
        .await
        .expect("retry a waiting delivery");
    assert_eq!(forward.status, DeliveryStatus::Pending);
    assert_eq!(forward.next_attempt_at, Some(at));

    let claimed = claim_due(store, &claim("node-b", at, 10)).await;
    assert_eq!(
        ids_of(&claimed),
        sorted(vec![failed_id.clone(), waiting_id.clone()])
    );
    assert!(claimed.iter().all(|c| c.attempts == 1));
    assert!(
        matches!(
            store.retry_delivery(&home.id, failed_id, now()).await,
            Err(StoreError::Conflict(_))
        ),
        "not while an attempt of it is in flight"
    );
    assert_eq!(
        status_of(store, &home.id, failed_id).await,
        DeliveryStatus::Pending
    );
    assert_not_found(
        store
            .retry_delivery(&home.id, &new_id(IdKind::Delivery), now())
            .await,
        "retry an unknown delivery",
    );

    // A paused webhook's delivery is queued but held.
    set_state(store, &hook, WebhookState::Paused).await;
    let held = store
        .retry_delivery(&home.id, paused_id, now())
        .await
        .expect("retry a paused webhook's delivery");
    assert_eq!(held.status, DeliveryStatus::Pending);
    assert_eq!(held.next_attempt_at, None);
    assert!(
        claim_due(store, &claim("node-c", now() + 86_400_000, 10))
            .await
            .iter()
            .all(|c| c.delivery_id != *paused_id)
    );
}

pub async fn retrigger_requeues_only_finished_matching_deliveries(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let neighbour = webhook(store, &home.id, WebhookState::Active).await;
    let until = now() - 10_000;
    let since = until - 40_000;

    let in_range = |index: i64| since + index * 1_000;
    let mut failed_ids = Vec::new();
    for index in 0..5 {
        failed_ids.extend(publish_many(store, &hook, 1, in_range(index)).await);
    }
    let mut delivered_ids = Vec::new();
    for index in 5..8 {
        delivered_ids.extend(publish_many(store, &hook, 1, in_range(index)).await);
    }
    let waiting_ids = publish_many(store, &hook, 1, in_range(8)).await;
    let mut skipped_event = new_event(&home.id, "lead.created.v1", in_range(9), &[&hook]);
    skipped_event.deliveries[0].status = DeliveryStatus::Skipped;
    let skipped_ids = publish(store, skipped_event).await.delivery_ids;
    let mut outside_ids = publish_many(store, &hook, 1, since - 1).await;
    outside_ids.extend(publish_many(store, &hook, 1, until).await);
    let neighbour_ids = publish_many(store, &neighbour, 1, in_range(1)).await;
    let test_id = new_id(IdKind::Delivery);
    store
        .record_test_send(
            new_event(&home.id, "lead.created.v1", in_range(2), &[]),
            outcome(
                &test_id,
                &hook.id,
                attempt(in_range(2), 5, Some(500)),
                NextState::Failed,
            ),
        )
        .await
        .expect("record a test send");

    let claimed = by_id(claim_due(store, &claim("node-a", now(), 100)).await);
    assert_eq!(claimed.len(), 12);
    let mut outcomes = Vec::new();
    for id in failed_ids.iter().chain(&outside_ids).chain(&neighbour_ids) {
        outcomes.push(failed(&claimed[id], NextState::Failed));
    }
    for id in &delivered_ids {
        outcomes.push(delivered(&claimed[id]));
    }
    let retry_time = now() + 3_600_000;
    outcomes.push(failed(
        &claimed[&waiting_ids[0]],
        NextState::RetryAt(retry_time),
    ));
    record(store, "node-a", outcomes, &quiet_policy()).await;

    let filter = |statuses: Vec<DeliveryStatus>| RetriggerFilter {
        webhook_id: hook.id.clone(),
        since,
        until,
        statuses,
    };
    let at = now();
    let mut counts = Vec::new();
    loop {
        let count = store
            .retrigger(&home.id, &filter(vec![DeliveryStatus::Failed]), 2, at)
            .await
            .expect("retrigger");
        counts.push(count);
        if count < 2 {
            break;
        }
    }
    assert_eq!(counts, vec![2, 2, 1], "batches of at most `limit`");
    for id in &failed_ids {
        let queued = delivery(store, &home.id, id).await;
        assert_eq!(queued.status, DeliveryStatus::Pending, "delivery {id}");
        assert_eq!(queued.next_attempt_at, Some(at));
        assert_eq!(queued.attempts, 1, "its attempts are kept");
    }
    for id in outside_ids.iter().chain(&neighbour_ids).chain([&test_id]) {
        assert_eq!(
            status_of(store, &home.id, id).await,
            DeliveryStatus::Failed,
            "delivery {id} does not match"
        );
    }
    let waiting = delivery(store, &home.id, &waiting_ids[0]).await;
    assert_eq!(waiting.status, DeliveryStatus::Pending);
    assert_eq!(
        waiting.next_attempt_at,
        Some(retry_time),
        "a pending delivery keeps its own time"
    );

    // Repeating it queues nothing twice: those deliveries are pending now.
    assert_eq!(
        store
            .retrigger(&home.id, &filter(vec![DeliveryStatus::Failed]), 100, now())
            .await
            .expect("retrigger again"),
        0
    );
    assert_eq!(
        store
            .retrigger(&home.id, &filter(vec![DeliveryStatus::Pending]), 100, now())
            .await
            .expect("retrigger pending"),
        0,
        "pending deliveries are queued already"
    );
    assert_eq!(
        store
            .retrigger(
                &home.id,
                &filter(vec![DeliveryStatus::Delivered, DeliveryStatus::Skipped]),
                100,
                now(),
            )
            .await
            .expect("retrigger delivered and skipped"),
        4
    );
    for id in delivered_ids.iter().chain(&skipped_ids) {
        assert_eq!(
            status_of(store, &home.id, id).await,
            DeliveryStatus::Pending
        );
    }
    let claimable = claim_due(store, &claim("node-b", now(), 100)).await;
    let mut want: Vec<String> = failed_ids.clone();
    want.extend(delivered_ids);
    want.extend(skipped_ids);
    assert_eq!(ids_of(&claimable), sorted(want));
}

pub async fn webhook_summary_counts_statuses_types_and_latency(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let neighbour = webhook(store, &home.id, WebhookState::Active).await;
    let since = stats::hour_of(now()) - 3 * 3_600_000;
    let until = since + 2 * 3_600_000;
    let at = |offset: i64| since + offset;

    let mut created = Vec::new();
    for offset in [0, 60_000, 3_600_000] {
        created.push(
            publish(
                store,
                new_event(&home.id, "lead.created.v1", at(offset), &[&hook]),
            )
            .await
            .delivery_ids[0]
                .clone(),
        );
    }
    let called = publish(
        store,
        new_event(&home.id, "call.ended.v1", at(7_000_000), &[&hook]),
    )
    .await
    .delivery_ids[0]
        .clone();
    let mut skipped = new_event(&home.id, "call.ended.v1", at(10), &[&hook]);
    skipped.deliveries[0].status = DeliveryStatus::Skipped;
    publish(store, skipped).await;
    let before_since = publish_many(store, &hook, 1, since - 1).await;
    let at_until = publish_many(store, &hook, 1, until).await;
    let neighbours = publish_many(store, &neighbour, 1, at(5)).await;
    store
        .record_test_send(
            new_event(&home.id, "lead.created.v1", at(20), &[]),
            outcome(
                &new_id(IdKind::Delivery),
                &hook.id,
                attempt(at(20), 4, Some(200)),
                NextState::Delivered,
            ),
        )
        .await
        .expect("record a test send");

    let claimed = by_id(claim_due(store, &claim("node-a", now(), 100)).await);
    assert_eq!(claimed.len(), 7);
    let with = |id: &String, started: i64, duration: i64, next: NextState| {
        let status = if next == NextState::Delivered {
            200
        } else {
            500
        };
        outcome(
            id,
            &claimed[id].webhook.id,
            attempt(started, duration, Some(status)),
            next,
        )
    };
    record(
        store,
        "node-a",
        vec![
            with(&created[0], at(100), 4, NextState::Delivered),
            with(&created[1], at(60_100), 4, NextState::Delivered),
            with(&created[2], at(3_600_100), 120, NextState::Failed),
            // Attempts outside the period, and another webhook's, are not counted.
            with(&before_since[0], since - 3_600_000, 4, NextState::Delivered),
            with(&at_until[0], until + 10, 4, NextState::Delivered),
            with(&neighbours[0], at(200), 4, NextState::Delivered),
        ],
        &quiet_policy(),
    )
    .await;
    store
        .release("node-a", std::slice::from_ref(&called))
        .await
        .expect("release");

    let summary = store
        .webhook_summary(&hook.id, since, until)
        .await
        .expect("summary");
    let mut counts: Vec<(String, String, u64)> = summary
        .counts
        .iter()
        .map(|(status, event_type, n)| (status.as_str().to_owned(), event_type.clone(), *n))
        .collect();
    counts.sort();
    let text = |s: &str| s.to_owned();
    assert_eq!(
        counts,
        vec![
            (text("delivered"), text("lead.created.v1"), 2),
            (text("failed"), text("lead.created.v1"), 1),
            (text("pending"), text("call.ended.v1"), 1),
            (text("skipped"), text("call.ended.v1"), 1),
        ]
    );
    let mut latency = summary.latency.clone();
    latency.sort();
    assert_eq!(
        latency,
        vec![(stats::bucket(4), 2), (stats::bucket(120), 1)]
    );

    let neighbour_summary = store
        .webhook_summary(&neighbour.id, since, until)
        .await
        .expect("summary");
    assert_eq!(
        neighbour_summary.counts,
        vec![(DeliveryStatus::Delivered, text("lead.created.v1"), 1)]
    );
    assert_eq!(neighbour_summary.latency, vec![(stats::bucket(4), 1)]);

    let empty = store
        .webhook_summary(&hook.id, until + 3_600_000, until + 7_200_000)
        .await
        .expect("summary");
    assert!(empty.counts.is_empty());
    assert!(empty.latency.is_empty());
}

pub async fn purge_finished_deletes_old_finished_deliveries_in_batches(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let old = now() - 10_000;
    let finished_ids = publish_many(store, &hook, 6, old).await;
    let mut skipped_event = new_event(&home.id, "lead.created.v1", old, &[&hook]);
    skipped_event.deliveries[0].status = DeliveryStatus::Skipped;
    let skipped = publish(store, skipped_event.clone()).await;
    let future_ids = publish_many(store, &hook, 2, now() + 3_600_000).await;
    let claimed = by_id(claim_due(store, &claim("node-a", now(), 100)).await);
    assert_eq!(claimed.len(), 6);
    let retry_id = &finished_ids[5];
    let mut outcomes: Vec<Outcome> = finished_ids[..3]
        .iter()
        .map(|id| delivered(&claimed[id]))
        .collect();
    outcomes.extend(
        finished_ids[3..5]
            .iter()
            .map(|id| failed(&claimed[id], NextState::Failed)),
    );
    outcomes.push(failed(
        &claimed[retry_id],
        NextState::RetryAt(now() + 3_600_000),
    ));
    record(store, "node-a", outcomes, &quiet_policy()).await;

    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let recent = publish_many(store, &hook, 1, old).await;
    let claimed = claim_due(store, &claim("node-a", now(), 100)).await;
    assert_eq!(ids_of(&claimed), recent);
    record(
        store,
        "node-a",
        vec![delivered(&claimed[0])],
        &quiet_policy(),
    )
    .await;

    let mut counts = Vec::new();
    loop {
        let count = store
            .purge_finished(cutoff, 2)
            .await
            .expect("purge finished deliveries");
        counts.push(count);
        if count == 0 {
            break;
        }
        assert!(counts.len() < 20, "purging does not end");
    }
    assert_eq!(counts, vec![2, 2, 2, 0]);

    let mut purged: Vec<&String> = finished_ids[..5].iter().collect();
    purged.push(&skipped.delivery_ids[0]);
    for id in purged {
        assert_not_found(store.get_delivery(&home.id, id).await, "purged delivery");
        assert!(
            store
                .list_attempts(id)
                .await
                .expect("list attempts")
                .is_empty(),
            "its attempts went with it"
        );
    }
    assert_not_found(
        store.get_event(&home.id, &skipped_event.id).await,
        "an event no delivery refers to",
    );
    for id in [retry_id, &future_ids[0], &future_ids[1]] {
        assert_eq!(
            status_of(store, &home.id, id).await,
            DeliveryStatus::Pending,
            "pending deliveries stay"
        );
    }
    assert_eq!(
        store
            .list_attempts(retry_id)
            .await
            .expect("list attempts")
            .len(),
        1
    );
    assert_eq!(
        status_of(store, &home.id, &recent[0]).await,
        DeliveryStatus::Delivered,
        "finished after the cutoff: kept"
    );
    let event_of_recent = delivery(store, &home.id, &recent[0]).await.event_id;
    store
        .get_event(&home.id, &event_of_recent)
        .await
        .expect("its event stays");
    assert_eq!(store.count_pending().await.expect("count pending"), 3);
}

pub async fn notifications_are_held_then_deleted_or_rescheduled(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    publish_many(store, &hook, 3, now() - 1_000).await;
    let claimed = claim_due(store, &claim("node-a", now(), 10)).await;
    let notify = HealthPolicy {
        notify_operator: true,
        ..HealthPolicy::default()
    };
    let before = now();
    record(
        store,
        "node-a",
        claimed
            .iter()
            .map(|c| failed(c, NextState::Failed))
            .collect(),
        &notify,
    )
    .await;
    let after = now();

    let start = now();
    let lease = 60_000;
    let first = store
        .claim_notifications(start, 2, lease)
        .await
        .expect("claim notifications");
    assert_eq!(first.len(), 2, "at most `limit`");
    let second = store
        .claim_notifications(start, 10, lease)
        .await
        .expect("claim notifications");
    assert_eq!(second.len(), 1, "the rest");
    let mut all: Vec<&Notification> = first.iter().chain(&second).collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all.dedup_by(|a, b| a.id == b.id);
    assert_eq!(all.len(), 3);
    for notification in &all {
        assert_eq!(notification.event_type, "tidings.delivery.failed");
        assert_eq!(notification.attempts, 0);
        assert!((before..=after).contains(&notification.created_at));
    }
    assert!(
        store
            .claim_notifications(start + lease - 1, 10, lease)
            .await
            .expect("claim notifications")
            .is_empty(),
        "held for the lease"
    );

    let (sent, failing, forgotten) = (all[0].id.clone(), all[1].id.clone(), all[2].id.clone());
    store
        .finish_notification(&sent, None)
        .await
        .expect("finish a sent notification");
    store
        .finish_notification(&failing, Some(start + 5_000))
        .await
        .expect("reschedule a notification");
    assert!(
        store
            .claim_notifications(start + 4_999, 10, lease)
            .await
            .expect("claim notifications")
            .is_empty()
    );
    let retried = store
        .claim_notifications(start + 5_000, 10, lease)
        .await
        .expect("claim notifications");
    assert_eq!(
        retried.iter().map(|n| n.id.clone()).collect::<Vec<_>>(),
        vec![failing.clone()]
    );
    assert_eq!(retried[0].attempts, 1);

    // The one never finished comes back once its lease runs out; the sent one never does.
    let expired = store
        .claim_notifications(start + lease, 10, lease)
        .await
        .expect("claim notifications");
    assert_eq!(
        expired.iter().map(|n| n.id.clone()).collect::<Vec<_>>(),
        vec![forgotten]
    );
    let much_later = store
        .claim_notifications(start + 10 * lease, 10, lease)
        .await
        .expect("claim notifications");
    let mut ids: Vec<String> = much_later.into_iter().map(|n| n.id).collect();
    ids.sort();
    assert!(!ids.contains(&sent));
    assert_eq!(ids.len(), 2);
}

pub async fn server_value_keeps_the_first_value(backend: Backend) {
    let store = backend.open().await;
    let racers: Vec<_> = (0u8..4)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .server_value("portal-key", vec![n; 32])
                    .await
                    .expect("server value")
            })
        })
        .collect();
    let mut values = Vec::new();
    for racer in racers {
        values.push(racer.await.expect("server value task"));
    }
    let first = values[0].clone();
    assert_eq!(first.len(), 32);
    assert!(values.iter().all(|v| *v == first), "{values:?}");
    assert_eq!(
        store
            .server_value("portal-key", b"something else".to_vec())
            .await
            .expect("server value"),
        first
    );
    assert_eq!(
        store
            .server_value("another", vec![0, 255, 1])
            .await
            .expect("server value"),
        vec![0, 255, 1]
    );
}
