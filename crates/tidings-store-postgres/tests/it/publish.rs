//! Publishing from several nodes at once: one event per idempotency key, and wide fan-outs.

use std::sync::Arc;

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
