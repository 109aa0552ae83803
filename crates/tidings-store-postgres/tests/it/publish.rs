//! Publishing from several nodes at once: one event per idempotency key, wide fan-outs, and
//! publishes that wait behind others sharing one statement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_store::*;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_racing_with_one_key_on_two_nodes_store_one_event() {
    let (url, a, b) = two_nodes().await;
    let ws = workspace(&a).await;
    let hook = webhook(&a, &ws.id).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = Vec::new();
    for i in 0..16_u32 {
        let store = if i.is_multiple_of(2) {
            a.clone()
        } else {
            b.clone()
        };
        let mut event = new_event(&ws.id, now(), &[&hook]);
        event.idempotency_key = Some("order-1234".to_owned());
        event.idempotency_until = event.received_at + 60_000;
        tasks.push(tokio::spawn(async move {
            let mut published = store.publish(vec![event]).await.expect("publish");
            published.remove(0)
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("publisher"));
    }
    let first: Vec<&Published> = answers.iter().filter(|p| !p.duplicate).collect();
    assert_eq!(first.len(), 1, "exactly one publish stored its event");
    for answer in &answers {
        assert_eq!(
            answer.event_id, first[0].event_id,
            "every answer names that event"
        );
        assert_eq!(answer.delivery_ids, first[0].delivery_ids);
    }
    let look = inspect(&url).await;
    let (events, deliveries): (i64, i64) =
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM deliveries)")
            .fetch_one(&look)
            .await
            .expect("count");
    assert_eq!((events, deliveries), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_to_a_thousand_webhooks_is_stored_in_order() {
    let (_url, a, _b) = two_nodes().await;
    let ws = workspace(&a).await;
    let mut webhooks = Vec::new();
    for _ in 0..1_000 {
        webhooks.push(webhook(&a, &ws.id).await);
    }
    // One of them was deleted after fan-out read the list: it gets no delivery.
    a.delete_webhook(&ws.id, &webhooks[500].id)
        .await
        .expect("delete");
    let targets: Vec<&Webhook> = webhooks.iter().collect();
    let event = new_event(&ws.id, now(), &targets);
    let mut expected: Vec<String> = event.deliveries.iter().map(|d| d.id.clone()).collect();
    expected.remove(500);
    let published = a.publish(vec![event]).await.expect("publish").remove(0);
    assert_eq!(published.delivery_ids, expected, "in the order given");
    let stored = a
        .event_deliveries(&ws.id, &published.event_id)
        .await
        .expect("read");
    assert_eq!(stored.len(), 999);
    assert!(
        stored
            .iter()
            .all(|d| d.status == DeliveryStatus::Pending && d.next_attempt_at.is_some())
    );
}

/// A statement the database cannot finish within the statement timeout is "unavailable" (the API
/// answers 503 with Retry-After), not an internal error, and nothing of it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_the_timeout_is_unavailable_and_stores_nothing() {
    let url = tidings_testkit::postgres::fresh_database().await;
    let setup = node(&url).await;
    let ws = workspace(&setup).await;
    let hook = webhook(&setup, &ws.id).await;
    let hurried =
        tidings_store_postgres::PostgresStore::open(&tidings_store_postgres::PostgresOptions {
            statement_timeout: std::time::Duration::from_millis(1),
            ..options(&url)
        })
        .await
        .expect("open a store with a 1 ms statement timeout");
    // 20,000 events and deliveries in one statement take far longer than 1 ms.
    let events: Vec<NewEvent> = (0..20_000)
        .map(|_| new_event(&ws.id, now(), &[&hook]))
        .collect();
    match hurried.publish(events).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("statement timeout"), "{message}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(setup.count_pending().await.expect("count"), 0);
}

/// The store's publishing runners.
const RUNNERS: usize = 1;

/// Publishes `queued` while every runner is held by a publish waiting on a table lock, so that all
/// of them are queued before any runner comes free; returns their answers and how many
/// transactions wrote the events (the held publishes' included).
async fn publish_behind_held_runners(
    url: &str,
    store: &dyn Store,
    held: Vec<NewEvent>,
    queued: Vec<Vec<NewEvent>>,
) -> (Vec<StoreResult<Vec<Published>>>, i64) {
    let look = inspect(url).await;
    let mut lock = look.begin().await.expect("begin");
    sqlx::query("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock the events table");
    let mut waiting = Vec::new();
    // One at a time, so that each runner holds exactly one.
    for event in held {
        waiting.push(Box::pin(store.publish(vec![event])));
        assert!(futures::poll!(waiting.last_mut().expect("pushed")).is_pending());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let blocked: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&look)
            .await
            .expect("read pg_stat_activity");
            if blocked as usize == waiting.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} publishes waiting on the lock, not {}",
                blocked,
                waiting.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for events in queued {
        waiting.push(Box::pin(store.publish(events)));
        assert!(futures::poll!(waiting.last_mut().expect("pushed")).is_pending());
    }
    lock.commit().await.expect("release the lock");
    let answers = futures::future::join_all(waiting).await;
    let transactions: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT xmin::text) FROM events")
        .fetch_one(&look)
        .await
        .expect("count the transactions");
    (answers, transactions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_queued_behind_busy_runners_share_one_statement() {
    let url = tidings_testkit::postgres::fresh_database().await;
    let store = node(&url).await;
    let ws = workspace(&store).await;
    let (one, two) = (webhook(&store, &ws.id).await, webhook(&store, &ws.id).await);
    let held = (0..RUNNERS)
        .map(|_| new_event(&ws.id, now(), &[&one]))
        .collect();
    // Single events and batches, to one webhook or two.
    let (to_one, to_two): (&[&Webhook], &[&Webhook]) = (&[&one], &[&one, &two]);
    let queued: Vec<Vec<NewEvent>> = (0..40)
        .map(|i| {
            let targets = if i % 2 == 0 { to_one } else { to_two };
            (0..1 + i % 3)
                .map(|_| new_event(&ws.id, now(), targets))
                .collect()
        })
        .collect();
    let expected: Vec<Vec<(String, Vec<String>)>> = queued
        .iter()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    (
                        e.id.clone(),
                        e.deliveries.iter().map(|d| d.id.clone()).collect(),
                    )
                })
                .collect()
        })
        .collect();
    let (answers, transactions) = publish_behind_held_runners(&url, &store, held, queued).await;
    assert_eq!(
        transactions,
        RUNNERS as i64 + 1,
        "each held publish in its own statement, then every queued one in one more"
    );
    for (answer, expected) in answers[RUNNERS..].iter().zip(&expected) {
        let published = answer.as_ref().expect("publish");
        let got: Vec<(String, Vec<String>)> = published
            .iter()
            .map(|p| (p.event_id.clone(), p.delivery_ids.clone()))
            .collect();
        assert_eq!(&got, expected, "each publish answered with its own events");
    }
    let stored: usize = expected.iter().flatten().map(|(_, d)| d.len()).sum();
    assert_eq!(
        store.count_pending().await.expect("count") as usize,
        stored + RUNNERS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_refused_in_a_shared_statement_fails_alone() {
    let url = tidings_testkit::postgres::fresh_database().await;
    let store = node(&url).await;
    let ws = workspace(&store).await;
    let hook = webhook(&store, &ws.id).await;
    let held = (0..RUNNERS)
        .map(|_| new_event(&ws.id, now(), &[&hook]))
        .collect();
    let mut queued: Vec<Vec<NewEvent>> = (0..10)
        .map(|_| vec![new_event(&ws.id, now(), &[&hook])])
        .collect();
    // Its workspace is gone (deleted after the key was checked): the events' foreign key refuses it.
    let mut orphan = new_event(&ws.id, now(), &[&hook]);
    orphan.workspace_id = tidings_core::ids::new_id(tidings_core::ids::IdKind::Workspace);
    queued.insert(5, vec![orphan]);
    let (answers, _) = publish_behind_held_runners(&url, &store, held, queued).await;
    for (index, answer) in answers.iter().enumerate() {
        if index == RUNNERS + 5 {
            assert!(answer.is_err(), "the orphan event was refused: {answer:?}");
        } else {
            assert_eq!(
                answer.as_ref().expect("publish").len(),
                1,
                "publish {index}"
            );
        }
    }
    assert_eq!(
        store.count_pending().await.expect("count"),
        (RUNNERS + 10) as u64
    );
}
