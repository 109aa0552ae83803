//! Recording outcomes: two nodes recording at once keep exact counts and announce a disabled
//! webhook once, and batches of outcomes end exactly where the SQLite store's one-by-one recording
//! ends.

use std::collections::BTreeMap;
use std::sync::Arc;

use tidings_core::UnixMillis;
use tidings_core::webhook::WebhookState;
use tidings_store::*;
use tidings_store_sqlite::{SqliteOptions, SqliteStore};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_recording_at_once_keep_exact_health_and_latency_counts() {
    let (_url, a, b) = two_nodes().await;
    let ws = workspace(&a).await;
    let hook = webhook(&a, &ws.id).await;
    let other = webhook(&a, &ws.id).await;
    let at = now() - 1_000;
    publish_many(&a, &hook, 200, at).await;
    publish_many(&a, &other, 200, at).await;
    let by_a = a
        .claim_due(&claim("node-a", now(), 200))
        .await
        .expect("claim");
    let by_b = b
        .claim_due(&claim("node-b", now(), 200))
        .await
        .expect("claim");
    assert_eq!(by_a.len() + by_b.len(), 400);
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = Vec::new();
    for (store, name, claimed) in [(a.clone(), "node-a", by_a), (b.clone(), "node-b", by_b)] {
        // Batches that mix both webhooks, recorded concurrently by both nodes.
        for batch in claimed.chunks(10) {
            let store = store.clone();
            let outcomes: Vec<Outcome> = batch
                .iter()
                .map(|c| outcome(c, Some(503), NextState::RetryAt(now() + 60_000)))
                .collect();
            tasks.push(tokio::spawn(async move {
                store
                    .record_outcomes(name, outcomes.into(), &quiet_policy())
                    .await
                    .expect("record");
            }));
        }
    }
    for task in tasks {
        task.await.expect("recorder");
    }
    for webhook in [&hook, &other] {
        let health = a
            .get_webhook(&ws.id, &webhook.id)
            .await
            .expect("read")
            .health;
        assert_eq!(
            health.failures_since_success, 200,
            "no failure lost or doubled"
        );
        assert!(health.failing_since.is_some() && health.last_failure_at.is_some());
        assert_eq!(health.last_failure_reason.as_deref(), Some("HTTP 503"));
        let summary = a
            .webhook_summary(&webhook.id, at - 3_600_000, now() + 3_600_000)
            .await
            .expect("summary");
        let attempts: u64 = summary.latency.iter().map(|(_, n)| n).sum();
        assert_eq!(attempts, 200, "every attempt in the latency rollup once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_gone_on_two_nodes_at_once_is_announced_once() {
    let (_url, a, b) = two_nodes().await;
    let ws = workspace(&a).await;
    let hook = webhook(&a, &ws.id).await;
    let at = now() - 1_000;
    publish_many(&a, &hook, 30, at).await;
    let by_a = a
        .claim_due(&claim("node-a", now(), 10))
        .await
        .expect("claim");
    let by_b = b
        .claim_due(&claim("node-b", now(), 10))
        .await
        .expect("claim");
    let policy = HealthPolicy {
        notify_operator: true,
        ..quiet_policy()
    };
    let gone = |claimed: &[ClaimedDelivery]| -> Vec<Outcome> {
        claimed
            .iter()
            .map(|c| Outcome {
                disable_webhook: Some("the endpoint answered 410 Gone".to_owned()),
                ..outcome(c, Some(410), NextState::Failed)
            })
            .collect()
    };
    let (first, second) = tokio::join!(
        a.record_outcomes("node-a", gone(&by_a).into(), &policy),
        b.record_outcomes("node-b", gone(&by_b).into(), &policy),
    );
    first.expect("record on a");
    second.expect("record on b");
    let webhook = a.get_webhook(&ws.id, &hook.id).await.expect("read");
    assert_eq!(webhook.state, WebhookState::Disabled);
    assert_eq!(
        webhook.disabled_reason.as_deref(),
        Some("the endpoint answered 410 Gone")
    );
    let notifications = a
        .claim_notifications(now(), 100, LONG_LEASE_MS)
        .await
        .expect("notifications");
    let announced = notifications
        .iter()
        .filter(|n| n.event_type == "tidings.webhook.disabled")
        .count();
    assert_eq!(announced, 1, "one announcement whichever node disabled it");
    assert_eq!(
        notifications
            .iter()
            .filter(|n| n.event_type == "tidings.delivery.failed")
            .count(),
        20
    );
    // Neither node can take the same notification while the other holds it.
    assert!(
        b.claim_notifications(now(), 100, LONG_LEASE_MS)
            .await
            .expect("notifications")
            .is_empty()
    );
    let skipped = a
        .list_deliveries(
            &ws.id,
            &DeliveryFilter {
                status: Some(DeliveryStatus::Skipped),
                ..DeliveryFilter::default()
            },
            &Page {
                limit: 100,
                after: None,
            },
        )
        .await
        .expect("list");
    assert_eq!(skipped.len(), 10, "what was waiting is skipped");
}

/// A small deterministic generator, so a failing run can be repeated.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

/// Everything recording can change, with the times only the recording clock decides left out.
#[derive(Debug, PartialEq)]
struct Observed {
    deliveries: BTreeMap<String, String>,
    webhooks: BTreeMap<String, String>,
    notifications: Vec<String>,
    summaries: BTreeMap<String, String>,
}

async fn observe(
    store: &dyn Store,
    workspace_id: &str,
    webhooks: &[Webhook],
    now: UnixMillis,
) -> Observed {
    let mut deliveries = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store
            .list_deliveries(
                workspace_id,
                &DeliveryFilter::default(),
                &Page {
                    limit: 500,
                    after: after.clone(),
                },
            )
            .await
            .expect("list deliveries");
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for d in &page {
            let attempts: Vec<String> = store
                .list_attempts(&d.id)
                .await
                .expect("attempts")
                .iter()
                .map(|a| {
                    format!(
                        "{}:{}:{:?}:{:?}:{:?}",
                        a.number,
                        a.record.started_at,
                        a.record.status_code,
                        a.record.error_kind,
                        a.record.error_message
                    )
                })
                .collect();
            deliveries.insert(
                d.id.clone(),
                format!(
                    "{:?} attempts={} next={:?} code={:?} kind={:?} {attempts:?}",
                    d.status, d.attempts, d.next_attempt_at, d.last_status_code, d.last_error_kind
                ),
            );
        }
    }
    let mut seen_webhooks = BTreeMap::new();
    let mut summaries = BTreeMap::new();
    for webhook in webhooks {
        let w = store
            .get_webhook(workspace_id, &webhook.id)
            .await
            .expect("webhook");
        let h = &w.health;
        seen_webhooks.insert(
            w.id.clone(),
            format!(
                "{:?} {:?} since={:?} failures={} success={} failure={} reason={:?}",
                w.state,
                w.disabled_reason,
                h.failing_since,
                h.failures_since_success,
                h.last_success_at.is_some(),
                h.last_failure_at.is_some(),
                h.last_failure_reason
            ),
        );
        let mut summary = store
            .webhook_summary(&w.id, 0, now + 7_200_000)
            .await
            .expect("summary");
        summary
            .counts
            .sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
        summary.latency.sort();
        summaries.insert(
            w.id.clone(),
            format!("{:?} {:?}", summary.counts, summary.latency),
        );
    }
    let mut notifications: Vec<String> = store
        .claim_notifications(now + 7_200_000, 10_000, LONG_LEASE_MS)
        .await
        .expect("notifications")
        .into_iter()
        .map(|n| {
            let mut payload: serde_json::Value =
                serde_json::from_str(&n.payload).expect("notification payload");
            // Stamped with the recording clock.
            if let Some(fields) = payload.as_object_mut() {
                fields.remove("disabled_at");
            }
            format!("{} {payload} attempts={}", n.event_type, n.attempts)
        })
        .collect();
    notifications.sort();
    Observed {
        deliveries,
        webhooks: seen_webhooks,
        notifications,
        summaries,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_outcomes_end_where_the_sqlite_store_ends() {
    let dir = tempfile::tempdir().expect("a directory for SQLite");
    let sqlite = SqliteStore::open(&SqliteOptions {
        url: format!("sqlite://{}", dir.path().join("reference.db").display()),
        synchronous_full: false,
        readers: 2,
    })
    .await
    .expect("open SQLite");
    let url = tidings_testkit::postgres::fresh_database().await;
    let postgres = node(&url).await;
    let stores: [&dyn Store; 2] = [&sqlite, &postgres];

    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let ws = workspace(&sqlite).await;
    postgres.create_workspace(&ws).await.expect("workspace");
    let webhooks: Vec<Webhook> = (0..5).map(|_| new_webhook(&ws.id, None)).collect();
    for store in stores {
        for webhook in &webhooks {
            store.create_webhook(webhook).await.expect("webhook");
        }
    }
    let base = now() - 3_600_000;
    let mut events = Vec::new();
    for _ in 0..60 {
        let targets: Vec<&Webhook> = webhooks.iter().filter(|_| dice.roll(3) > 0).collect();
        events.push(new_event(&ws.id, base, &targets));
    }
    for store in stores {
        for chunk in events.chunks(7) {
            store.publish(chunk.to_vec()).await.expect("publish");
        }
    }
    // Disables after 4 failures in a row at once; tells the operator everything.
    let policy = HealthPolicy {
        auto_disable_after_ms: 0,
        auto_disable_min_failures: 4,
        notify_operator: true,
    };

    for round in 0..10 {
        let at = base + round * 1_000;
        let mut claimed_sets = Vec::new();
        for store in stores {
            let mut claimed = store
                .claim_due(&claim("node-a", at, 10_000))
                .await
                .expect("claim");
            claimed.sort_by(|x, y| x.delivery_id.cmp(&y.delivery_id));
            claimed_sets.push(claimed);
        }
        let ids = |c: &[ClaimedDelivery]| -> Vec<String> {
            c.iter().map(|d| d.delivery_id.clone()).collect()
        };
        assert_eq!(
            ids(&claimed_sets[0]),
            ids(&claimed_sets[1]),
            "round {round}: the same deliveries are due"
        );
        let mut outcomes: Vec<Outcome> = claimed_sets[0]
            .iter()
            .map(|c| {
                let (code, next, gone) = match dice.roll(20) {
                    0..=4 => (Some(200), NextState::Delivered, false),
                    5..=12 => (Some(500), NextState::RetryAt(at + 500), false),
                    13..=14 => (None, NextState::RetryAt(at + 700), false),
                    15..=18 => (Some(500), NextState::Failed, false),
                    _ => (Some(410), NextState::Failed, true),
                };
                Outcome {
                    delivery_id: c.delivery_id.clone(),
                    webhook_id: c.webhook.id.clone(),
                    attempt: attempt(at + i64::try_from(dice.roll(300)).unwrap_or(0), code),
                    next,
                    disable_webhook: gone.then(|| "the endpoint answered 410 Gone".to_owned()),
                }
            })
            .collect();
        // Shuffled, so one batch interleaves webhooks and their successes and failures.
        for i in (1..outcomes.len()).rev() {
            let j = usize::try_from(dice.roll(u64::try_from(i + 1).unwrap_or(1))).unwrap_or(0);
            outcomes.swap(i, j);
        }
        let mut start = 0;
        while start < outcomes.len() {
            let size = usize::try_from(1 + dice.roll(9)).unwrap_or(1);
            let batch = &outcomes[start..(start + size).min(outcomes.len())];
            for store in stores {
                store
                    .record_outcomes("node-a", batch.into(), &policy)
                    .await
                    .expect("record");
            }
            start += size;
        }
        // Now and then a disabled webhook is turned back on.
        if round % 3 == 2 {
            for webhook in &webhooks {
                let state = sqlite
                    .get_webhook(&ws.id, &webhook.id)
                    .await
                    .expect("webhook")
                    .state;
                if state == WebhookState::Disabled && dice.roll(2) == 0 {
                    for store in stores {
                        store
                            .enable_webhook(&ws.id, &webhook.id, at + 900)
                            .await
                            .expect("enable");
                    }
                }
            }
        }
    }
    let end = base + 20_000;
    let reference = observe(&sqlite, &ws.id, &webhooks, end).await;
    let ours = observe(&postgres, &ws.id, &webhooks, end).await;
    assert!(
        reference
            .webhooks
            .values()
            .any(|w| w.starts_with("Disabled")),
        "the story disables webhooks: {:?}",
        reference.webhooks
    );
    for (id, want) in &reference.deliveries {
        assert_eq!(ours.deliveries.get(id), Some(want), "delivery {id}");
    }
    assert_eq!(ours.deliveries.len(), reference.deliveries.len());
    assert_eq!(ours.webhooks, reference.webhooks, "webhooks");
    assert_eq!(ours.notifications, reference.notifications, "notifications");
    assert_eq!(ours.summaries, reference.summaries, "summaries");
    sqlite.close().await;
    postgres.close().await;
}
