//! Stories about recording attempts: delivery states, attempts, endpoint health, disabling webhooks
//! and the operator notifications that go with it; and test sends, which touch none of it.

use std::collections::HashMap;

use serde_json::Value;
use tidings_core::ids::{IdKind, new_id};
use tidings_core::outcome::ErrorKind;
use tidings_core::webhook::WebhookState;
use tidings_store::*;

use crate::backends::Backend;
use crate::fixtures::*;

const WEBHOOK_DISABLED: &str = "tidings.webhook.disabled";
const DELIVERY_FAILED: &str = "tidings.delivery.failed";

fn by_id(claimed: Vec<ClaimedDelivery>) -> HashMap<String, ClaimedDelivery> {
    claimed
        .into_iter()
        .map(|c| (c.delivery_id.clone(), c))
        .collect()
}

fn payload(notification: &Notification) -> Value {
    serde_json::from_str(&notification.payload).expect("a notification payload is JSON")
}

pub async fn record_outcomes_moves_deliveries_and_lists_attempts(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let ids = publish_many(store, &hook, 3, now() - 1_000).await;
    let (ok_id, retry_id, failed_id) = (&ids[0], &ids[1], &ids[2]);
    let claimed = claim_due(store, &claim("node-a", now(), 10)).await;
    assert_eq!(claimed.len(), 3);

    let started = now() - 500;
    let ok_attempt = attempt(started, 42, Some(200));
    let retry_attempt = attempt(started + 1, 180, Some(503));
    let failed_attempt = attempt(started + 2, 10_000, None);
    let retry_at = now() + 60_000;
    let before = now();
    record(
        store,
        "node-a",
        vec![
            outcome(ok_id, &hook.id, ok_attempt.clone(), NextState::Delivered),
            outcome(
                retry_id,
                &hook.id,
                retry_attempt.clone(),
                NextState::RetryAt(retry_at),
            ),
            outcome(
                failed_id,
                &hook.id,
                failed_attempt.clone(),
                NextState::Failed,
            ),
        ],
        &quiet_policy(),
    )
    .await;
    let after = now();

    let ok = delivery(store, &home.id, ok_id).await;
    assert_eq!(ok.status, DeliveryStatus::Delivered);
    assert_eq!(ok.attempts, 1);
    assert_eq!(ok.next_attempt_at, None);
    assert_eq!(ok.last_status_code, Some(200));
    assert_eq!(ok.last_error_kind, None);
    assert!((before..=after).contains(&ok.updated_at));

    let retry = delivery(store, &home.id, retry_id).await;
    assert_eq!(retry.status, DeliveryStatus::Pending);
    assert_eq!(retry.attempts, 1);
    assert_eq!(retry.next_attempt_at, Some(retry_at));
    assert_eq!(retry.last_status_code, Some(503));
    assert_eq!(retry.last_error_kind, Some(ErrorKind::HttpStatus));

    let gave_up = delivery(store, &home.id, failed_id).await;
    assert_eq!(gave_up.status, DeliveryStatus::Failed);
    assert_eq!(gave_up.attempts, 1);
    assert_eq!(gave_up.next_attempt_at, None);
    assert_eq!(gave_up.last_status_code, None);
    assert_eq!(gave_up.last_error_kind, Some(ErrorKind::Timeout));

    for (id, want) in [
        (ok_id, &ok_attempt),
        (retry_id, &retry_attempt),
        (failed_id, &failed_attempt),
    ] {
        let attempts = store.list_attempts(id).await.expect("list attempts");
        assert_eq!(attempts.len(), 1);
        assert_attempt(&attempts[0], 1, want);
    }

    // Within one commit the outcomes apply in order: a success, then two failures.
    let health = webhook_now(store, &hook).await.health;
    assert_eq!(health.failing_since, Some(started + 1));
    assert_eq!(health.failures_since_success, 2);
    let last_success = health.last_success_at.expect("a last success");
    assert!((before..=after).contains(&last_success));
    let last_failure = health.last_failure_at.expect("a last failure");
    assert!((before..=after).contains(&last_failure));
    assert_eq!(
        health.last_failure_reason.as_deref(),
        Some("no response within 10 s")
    );

    // The retry is due at its time, not before; its second attempt succeeds.
    assert_eq!(store.next_due_at().await.expect("next due"), Some(retry_at));
    assert!(
        claim_due(store, &claim("node-a", retry_at - 1, 10))
            .await
            .is_empty()
    );
    let second = claim_due(store, &claim("node-a", retry_at, 10)).await;
    assert_eq!(ids_of(&second), vec![retry_id.clone()]);
    assert_eq!(second[0].attempts, 1);
    let second_attempt = attempt(now(), 25, Some(204));
    record(
        store,
        "node-a",
        vec![outcome(
            retry_id,
            &hook.id,
            second_attempt.clone(),
            NextState::Delivered,
        )],
        &quiet_policy(),
    )
    .await;
    let retried = delivery(store, &home.id, retry_id).await;
    assert_eq!(retried.status, DeliveryStatus::Delivered);
    assert_eq!(retried.attempts, 2);
    assert_eq!(retried.last_status_code, Some(204));
    assert_eq!(retried.last_error_kind, None);
    let attempts = store.list_attempts(retry_id).await.expect("list attempts");
    assert_eq!(attempts.len(), 2);
    assert_attempt(&attempts[0], 1, &retry_attempt);
    assert_attempt(&attempts[1], 2, &second_attempt);
    assert_eq!(store.count_pending().await.expect("count pending"), 0);
    assert!(
        store
            .list_attempts(&new_id(IdKind::Delivery))
            .await
            .expect("list attempts of an unknown delivery")
            .is_empty()
    );
}

pub async fn health_counts_failures_until_a_success(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let neighbour = webhook(store, &home.id, WebhookState::Active).await;
    publish_many(store, &hook, 4, now() - 1_000).await;
    let claimed = claim_due(store, &claim("node-a", now(), 10)).await;
    assert_eq!(claimed.len(), 4);

    let first_failure = now() - 30_000;
    for (index, claimed) in claimed[..3].iter().enumerate() {
        let before = now();
        let status = [502, 429, 500][index];
        record(
            store,
            "node-a",
            vec![outcome(
                &claimed.delivery_id,
                &hook.id,
                attempt(first_failure + index as i64 * 1_000, 50, Some(status)),
                NextState::RetryAt(now() + 3_600_000),
            )],
            &quiet_policy(),
        )
        .await;
        let health = webhook_now(store, &hook).await.health;
        assert_eq!(
            health.failing_since,
            Some(first_failure),
            "the first failure since the last success"
        );
        assert_eq!(health.failures_since_success, index as u32 + 1);
        assert_eq!(health.last_success_at, None);
        let last_failure = health.last_failure_at.expect("a last failure");
        assert!((before..=now()).contains(&last_failure));
        assert_eq!(
            health.last_failure_reason,
            Some(format!("HTTP {status}")),
            "the reason names the status"
        );
    }
    let last_failure = webhook_now(store, &hook)
        .await
        .health
        .last_failure_at
        .expect("a last failure");

    let before = now();
    record(
        store,
        "node-a",
        vec![delivered(&claimed[3])],
        &quiet_policy(),
    )
    .await;
    let health = webhook_now(store, &hook).await.health;
    assert_eq!(health.failing_since, None, "a success ends the failing run");
    assert_eq!(health.failures_since_success, 0);
    let last_success = health.last_success_at.expect("a last success");
    assert!((before..=now()).contains(&last_success));
    assert_eq!(
        health.last_failure_at,
        Some(last_failure),
        "the last failure is kept"
    );
    assert_eq!(
        webhook_now(store, &neighbour).await.health,
        WebhookHealth::default(),
        "another webhook's health is its own"
    );
    let hook_now = webhook_now(store, &hook).await;
    assert_eq!(hook_now.state, WebhookState::Active);
    assert_eq!(hook_now.spec, hook.spec);
}

pub async fn auto_disable_follows_the_policy_and_notifies_once(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let failing = webhook(store, &home.id, WebhookState::Active).await;
    let young = webhook(store, &home.id, WebhookState::Active).await;
    let failing_ids = publish_many(store, &failing, 7, now() - 1_000).await;
    publish_many(store, &young, 3, now() - 1_000).await;
    let policy = HealthPolicy {
        auto_disable_after_ms: 60_000,
        auto_disable_min_failures: 3,
        notify_operator: true,
    };

    // Three failures, but failing for less than the policy's period: still active.
    let young_claimed = claim_due(
        store,
        &Claim {
            exclude_webhooks: vec![failing.id.clone()],
            ..claim("node-a", now(), 10)
        },
    )
    .await;
    assert_eq!(young_claimed.len(), 3);
    let outcomes = young_claimed
        .iter()
        .map(|c| failed(c, NextState::RetryAt(now() + 3_600_000)))
        .collect();
    record(store, "node-a", outcomes, &policy).await;
    let young_now = webhook_now(store, &young).await;
    assert_eq!(young_now.state, WebhookState::Active);
    assert_eq!(young_now.health.failures_since_success, 3);

    let claimed = claim_due(
        store,
        &Claim {
            exclude_webhooks: vec![young.id.clone()],
            ..claim("node-a", now(), 4)
        },
    )
    .await;
    assert_eq!(claimed.len(), 4);
    let long_ago = now() - 120_000;
    let failure = |c: &ClaimedDelivery, next| {
        outcome(
            &c.delivery_id,
            &failing.id,
            attempt(long_ago, 30, Some(500)),
            next,
        )
    };
    // Failing for long enough, but only two failures: still active.
    record(
        store,
        "node-a",
        vec![
            failure(&claimed[0], NextState::RetryAt(now() + 3_600_000)),
            failure(&claimed[1], NextState::RetryAt(now() + 3_600_000)),
        ],
        &policy,
    )
    .await;
    assert_eq!(
        webhook_now(store, &failing).await.state,
        WebhookState::Active
    );
    assert!(
        notifications_due(store, now()).await.is_empty(),
        "retries tell the operator nothing"
    );

    // The third failure disables it.
    let before = now();
    record(
        store,
        "node-a",
        vec![failure(&claimed[2], NextState::Failed)],
        &policy,
    )
    .await;
    let disabled = webhook_now(store, &failing).await;
    assert_eq!(disabled.state, WebhookState::Disabled);
    assert!(
        disabled
            .disabled_reason
            .as_deref()
            .is_some_and(|r| !r.is_empty()),
        "a disabled webhook says why"
    );
    assert_eq!(disabled.health.failures_since_success, 3);
    assert_eq!(disabled.health.failing_since, Some(long_ago));

    // Its waiting deliveries are skipped; the one still claimed by a running attempt is not.
    let still_claimed = &claimed[3].delivery_id;
    for id in &failing_ids {
        let got = delivery(store, &home.id, id).await;
        let want = if id == still_claimed {
            DeliveryStatus::Pending
        } else if *id == claimed[2].delivery_id {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Skipped
        };
        assert_eq!(got.status, want, "delivery {id}");
        if want != DeliveryStatus::Pending {
            assert_eq!(got.next_attempt_at, None);
        }
    }

    // The running attempt's outcome is recorded; the webhook is already disabled, so no second
    // notice.
    record(
        store,
        "node-a",
        vec![failure(&claimed[3], NextState::Failed)],
        &policy,
    )
    .await;
    assert_eq!(
        status_of(store, &home.id, still_claimed).await,
        DeliveryStatus::Failed
    );
    assert_eq!(
        webhook_now(store, &failing)
            .await
            .health
            .failures_since_success,
        4
    );

    let notifications = notifications_due(store, now()).await;
    assert_eq!(count_of_type(&notifications, WEBHOOK_DISABLED), 1);
    assert_eq!(count_of_type(&notifications, DELIVERY_FAILED), 2);
    assert_eq!(notifications.len(), 3);
    let notice = notifications
        .iter()
        .find(|n| n.event_type == WEBHOOK_DISABLED)
        .expect("the disabled notice");
    let body = payload(notice);
    assert_eq!(body["webhook_id"], failing.id.as_str());
    assert_eq!(body["workspace_id"], home.id.as_str());
    assert_eq!(body["url"], failing.spec.url.as_str());
    assert_eq!(notice.attempts, 0);
    assert!(notice.created_at >= before);

    // Nothing of the disabled webhook is pending or claimable; new events for it are skipped.
    assert!(
        claim_due(
            store,
            &Claim {
                exclude_webhooks: vec![young.id.clone()],
                ..claim("node-b", now() + 86_400_000, 100)
            }
        )
        .await
        .is_empty()
    );
    let later = publish(
        store,
        new_event(&home.id, "lead.created.v1", now(), &[&failing]),
    )
    .await;
    assert_eq!(
        status_of(store, &home.id, &later.delivery_ids[0]).await,
        DeliveryStatus::Skipped
    );
    assert_eq!(
        store.count_pending().await.expect("count pending"),
        3,
        "only the young webhook's retries"
    );
}

pub async fn gone_disables_the_webhook_at_once(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let loud = webhook(store, &home.id, WebhookState::Active).await;
    let quiet = webhook(store, &home.id, WebhookState::Active).await;
    let loud_ids = publish_many(store, &loud, 3, now() - 1_000).await;
    let quiet_ids = publish_many(store, &quiet, 2, now() - 1_000).await;
    let claimed = by_id(claim_due(store, &claim("node-a", now(), 100)).await);
    assert_eq!(claimed.len(), 5);
    // Give back all but one delivery of each, so they are waiting, not claimed.
    store
        .release("node-a", &[loud_ids[1].clone(), loud_ids[2].clone()])
        .await
        .expect("release");
    store
        .release("node-a", std::slice::from_ref(&quiet_ids[1]))
        .await
        .expect("release");

    let gone = |id: &String, hook: &Webhook| Outcome {
        disable_webhook: Some("gone".to_owned()),
        ..outcome(
            id,
            &hook.id,
            attempt(now(), 15, Some(410)),
            NextState::Failed,
        )
    };
    let notify = HealthPolicy {
        notify_operator: true,
        ..HealthPolicy::default()
    };
    record(store, "node-a", vec![gone(&loud_ids[0], &loud)], &notify).await;
    record(
        store,
        "node-a",
        vec![gone(&quiet_ids[0], &quiet)],
        &HealthPolicy::default(),
    )
    .await;

    for (hook, ids) in [(&loud, &loud_ids), (&quiet, &quiet_ids)] {
        let now_hook = webhook_now(store, hook).await;
        assert_eq!(now_hook.state, WebhookState::Disabled);
        assert_eq!(now_hook.disabled_reason.as_deref(), Some("gone"));
        assert_eq!(now_hook.health.failures_since_success, 1);
        assert_eq!(
            status_of(store, &home.id, &ids[0]).await,
            DeliveryStatus::Failed
        );
        for id in &ids[1..] {
            assert_eq!(
                status_of(store, &home.id, id).await,
                DeliveryStatus::Skipped
            );
        }
    }
    assert!(claimed.contains_key(&loud_ids[0]));
    assert_eq!(store.count_pending().await.expect("count pending"), 0);
    assert_eq!(store.next_due_at().await.expect("next due"), None);

    let notifications = notifications_due(store, now()).await;
    assert_eq!(
        count_of_type(&notifications, WEBHOOK_DISABLED),
        1,
        "only the webhook whose policy notifies"
    );
    assert_eq!(count_of_type(&notifications, DELIVERY_FAILED), 1);
    assert_eq!(notifications.len(), 2);
    let notice = notifications
        .iter()
        .find(|n| n.event_type == WEBHOOK_DISABLED)
        .expect("the disabled notice");
    assert_eq!(payload(notice)["webhook_id"], loud.id.as_str());
    assert_eq!(payload(notice)["reason"], "gone");
}

pub async fn failed_delivery_notifies_the_operator(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let event = new_event(&home.id, "lead.created.v1", now() - 1_000, &[&hook]);
    let published = publish(store, event.clone()).await;
    publish_many(store, &hook, 2, now() - 1_000).await;
    let claimed = by_id(claim_due(store, &claim("node-a", now(), 10)).await);
    assert_eq!(claimed.len(), 3);
    let notified_id = &published.delivery_ids[0];
    let mut others = claimed.keys().filter(|id| *id != notified_id);
    let (retried_id, quiet_id) = (
        others.next().expect("a second delivery"),
        others.next().expect("a third delivery"),
    );
    let notify = HealthPolicy {
        notify_operator: true,
        ..HealthPolicy::default()
    };
    record(
        store,
        "node-a",
        vec![
            failed(&claimed[notified_id], NextState::Failed),
            failed(&claimed[retried_id], NextState::RetryAt(now() + 60_000)),
        ],
        &notify,
    )
    .await;
    record(
        store,
        "node-a",
        vec![failed(&claimed[quiet_id], NextState::Failed)],
        &HealthPolicy::default(),
    )
    .await;

    let notifications = notifications_due(store, now()).await;
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    assert_eq!(notifications[0].event_type, DELIVERY_FAILED);
    assert_eq!(notifications[0].attempts, 0);
    let body = payload(&notifications[0]);
    assert_eq!(body["delivery_id"], notified_id.as_str());
    assert_eq!(body["webhook_id"], hook.id.as_str());
    assert_eq!(body["event_id"], event.id.as_str());
    assert_eq!(body["workspace_id"], home.id.as_str());
    assert_eq!(body["event_type"], "lead.created.v1");
    assert_eq!(body["attempts"], 1);
    assert_eq!(body["last_status_code"], 500);
    assert_eq!(
        webhook_now(store, &hook).await.state,
        WebhookState::Active,
        "three failures are far from the default policy"
    );
}

pub async fn a_test_send_for_a_deleted_webhook_stores_nothing(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    // Deleted while its test send's attempt was in flight.
    store
        .delete_webhook(&home.id, &hook.id)
        .await
        .expect("delete the webhook");
    let event = new_event(&home.id, "lead.created.v1", now(), &[]);
    let delivery_id = new_id(IdKind::Delivery);
    assert_not_found(
        store
            .record_test_send(
                event.clone(),
                outcome(
                    &delivery_id,
                    &hook.id,
                    attempt(now(), 8, Some(200)),
                    NextState::Delivered,
                ),
            )
            .await,
        "a test send for a deleted webhook",
    );
    assert_not_found(
        store.get_event(&home.id, &event.id).await,
        "the event of a refused test send",
    );
    assert_not_found(
        store.get_delivery(&home.id, &delivery_id).await,
        "the delivery of a refused test send",
    );
}

pub async fn test_send_is_stored_finished_and_leaves_health_alone(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let received_at = now() - 1_000;

    let failing_event = new_event(&home.id, "lead.created.v1", received_at, &[]);
    let failing_id = new_id(IdKind::Delivery);
    let failing_attempt = attempt(received_at + 5, 70, Some(500));
    store
        .record_test_send(
            failing_event.clone(),
            outcome(
                &failing_id,
                &hook.id,
                failing_attempt.clone(),
                NextState::Failed,
            ),
        )
        .await
        .expect("record a failed test send");
    let passing_event = new_event(&home.id, "lead.created.v1", received_at, &[]);
    let passing_id = new_id(IdKind::Delivery);
    store
        .record_test_send(
            passing_event.clone(),
            outcome(
                &passing_id,
                &hook.id,
                attempt(received_at + 5, 8, Some(200)),
                NextState::Delivered,
            ),
        )
        .await
        .expect("record a passing test send");

    let stored = delivery(store, &home.id, &failing_id).await;
    assert!(stored.is_test);
    assert_eq!(stored.status, DeliveryStatus::Failed);
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.next_attempt_at, None);
    assert_eq!(stored.last_status_code, Some(500));
    assert_eq!(stored.last_error_kind, Some(ErrorKind::HttpStatus));
    assert_eq!(stored.event_id, failing_event.id);
    assert_eq!(stored.webhook_id, hook.id);
    assert_eq!(stored.created_at, received_at);
    let attempts = store
        .list_attempts(&failing_id)
        .await
        .expect("list attempts");
    assert_eq!(attempts.len(), 1);
    assert_attempt(&attempts[0], 1, &failing_attempt);
    let passed = delivery(store, &home.id, &passing_id).await;
    assert!(passed.is_test);
    assert_eq!(passed.status, DeliveryStatus::Delivered);
    assert_eq!(
        store
            .get_event(&home.id, &failing_event.id)
            .await
            .expect("the test event is stored")
            .data,
        failing_event.data
    );

    assert_eq!(webhook_now(store, &hook).await, hook, "health untouched");
    assert_eq!(store.count_pending().await.expect("count pending"), 0);
    assert_eq!(store.next_due_at().await.expect("next due"), None);
    assert!(
        claim_due(store, &claim("node-a", now() + 86_400_000, 10))
            .await
            .is_empty()
    );
    assert!(
        matches!(
            store.retry_delivery(&home.id, &failing_id, now()).await,
            Err(StoreError::Conflict(_))
        ),
        "test sends are not retried"
    );
    let summary = store
        .webhook_summary(&hook.id, received_at - 3_600_000, now() + 3_600_000)
        .await
        .expect("summary");
    assert!(summary.counts.is_empty(), "{:?}", summary.counts);
    assert!(summary.latency.is_empty(), "{:?}", summary.latency);
    assert!(notifications_due(store, now()).await.is_empty());
}

pub async fn outcomes_of_deleted_webhooks_and_repeated_deliveries_are_dropped(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let kept = webhook(store, &home.id, WebhookState::Active).await;
    let deleted = webhook(store, &home.id, WebhookState::Active).await;
    let kept_ids = publish_many(store, &kept, 2, now() - 1_000).await;
    let deleted_ids = publish_many(store, &deleted, 2, now() - 1_000).await;
    let claimed = by_id(claim_due(store, &claim("node-a", now(), 10)).await);
    assert_eq!(claimed.len(), 4);

    // The webhook is deleted while its attempts are in flight; their outcomes arrive in the same
    // batch as others, which must still be recorded.
    store
        .delete_webhook(&home.id, &deleted.id)
        .await
        .expect("delete a webhook");
    let first_attempt = attempt(now(), 11, Some(200));
    record(
        store,
        "node-a",
        vec![
            failed(&claimed[&deleted_ids[0]], NextState::Failed),
            outcome(
                &kept_ids[0],
                &kept.id,
                first_attempt.clone(),
                NextState::Delivered,
            ),
            // The same delivery twice in one batch: only the first outcome counts.
            failed(&claimed[&kept_ids[0]], NextState::Failed),
            delivered(&claimed[&deleted_ids[1]]),
            failed(&claimed[&kept_ids[1]], NextState::RetryAt(now() + 60_000)),
        ],
        &HealthPolicy {
            notify_operator: true,
            ..HealthPolicy::default()
        },
    )
    .await;

    let first = delivery(store, &home.id, &kept_ids[0]).await;
    assert_eq!(first.status, DeliveryStatus::Delivered);
    assert_eq!(first.attempts, 1);
    let attempts = store
        .list_attempts(&kept_ids[0])
        .await
        .expect("list attempts");
    assert_eq!(attempts.len(), 1);
    assert_attempt(&attempts[0], 1, &first_attempt);
    let second = delivery(store, &home.id, &kept_ids[1]).await;
    assert_eq!(second.status, DeliveryStatus::Pending);
    assert_eq!(second.attempts, 1);
    for id in &deleted_ids {
        assert_not_found(
            store.get_delivery(&home.id, id).await,
            "a deleted webhook's delivery",
        );
    }
    let health = webhook_now(store, &kept).await.health;
    assert_eq!(health.failures_since_success, 1, "only the retry failed");
    assert!(health.last_success_at.is_some());
    assert!(
        notifications_due(store, now()).await.is_empty(),
        "nothing failed for good on a webhook that still exists"
    );
}

pub async fn retry_recorded_after_a_pause_is_held(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let ids = publish_many(store, &hook, 1, now() - 1_000).await;
    let claimed = claim_due(store, &claim("node-a", now(), 10)).await;
    assert_eq!(claimed.len(), 1);

    // Paused while the attempt is in flight; the attempt fails and is to be retried.
    set_state(store, &hook, WebhookState::Paused).await;
    let retry_at = now() + 1_000;
    record(
        store,
        "node-a",
        vec![failed(&claimed[0], NextState::RetryAt(retry_at))],
        &quiet_policy(),
    )
    .await;
    let waiting = delivery(store, &home.id, &ids[0]).await;
    assert_eq!(waiting.status, DeliveryStatus::Pending);
    assert_eq!(waiting.attempts, 1);
    assert!(
        claim_due(store, &claim("node-b", retry_at + 1, 10))
            .await
            .is_empty(),
        "a paused webhook's retry is not claimed"
    );
    assert_eq!(
        (
            waiting.next_attempt_at,
            store.next_due_at().await.expect("next due")
        ),
        (None, None),
        "held like every other delivery of a paused webhook, so no node keeps waking for it"
    );

    set_state(store, &hook, WebhookState::Active).await;
    let due = delivery(store, &home.id, &ids[0])
        .await
        .next_attempt_at
        .expect("due again once resumed");
    let claimed = claim_due(store, &claim("node-b", due.max(now()), 10)).await;
    assert_eq!(ids_of(&claimed), ids);
}
