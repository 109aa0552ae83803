//! Deliveries and attempts reference their event, webhook and delivery without foreign keys
//! (migration 0003): deleting what they hang off still takes them along, and a publish racing a
//! webhook's deletion leaves no delivery of a webhook that is gone.

use tidings_core::ids::{IdKind, new_id};
use tidings_store::*;

use crate::helpers::*;

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .expect("count rows")
}

/// Asserts `tables` hold no rows; `why` says what a row there would mean.
async fn assert_empty(pool: &sqlx::PgPool, tables: &[&str], why: &str) {
    for table in tables {
        let left = count(pool, &format!("SELECT COUNT(*) FROM {table}")).await;
        assert_eq!(left, 0, "{table}: {why}");
    }
}

#[tokio::test]
async fn deleting_events_webhooks_or_deliveries_takes_what_hangs_off_them() {
    let url = tidings_testkit::postgres::fresh_database().await;
    let store = node(&url).await;
    let look = inspect(&url).await;
    let home = workspace(&store).await;
    let first = webhook(&store, &home.id).await;
    let second = webhook(&store, &home.id).await;
    for hook in [&first, &second, &first] {
        deliver_one(&store, hook).await;
    }
    let attempts = "SELECT COUNT(*) FROM attempts";
    let deliveries = "SELECT COUNT(*) FROM deliveries";
    assert_eq!(count(&look, attempts).await, 3);

    // Rows deleted by any statement, not only the store's own deletes, take theirs along.
    sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(&first.id)
        .execute(&look)
        .await
        .expect("delete a webhook");
    assert_eq!(count(&look, deliveries).await, 1);
    assert_eq!(count(&look, attempts).await, 1);

    let event: String = sqlx::query_scalar("SELECT event_id FROM deliveries")
        .fetch_one(&look)
        .await
        .expect("the last delivery's event");
    sqlx::query("DELETE FROM events WHERE id = $1")
        .bind(&event)
        .execute(&look)
        .await
        .expect("delete an event");
    assert_eq!(count(&look, deliveries).await, 0);
    assert_eq!(count(&look, attempts).await, 0);

    deliver_one(&store, &second).await;
    store
        .delete_workspace(&home.id)
        .await
        .expect("delete the workspace");
    let tables = ["events", "deliveries", "attempts", "webhooks"];
    assert_empty(&look, &tables, "left behind by the workspace's deletion").await;
    store.close().await;
}

#[tokio::test]
async fn a_test_send_for_a_webhook_deleted_meanwhile_is_not_stored() {
    let url = tidings_testkit::postgres::fresh_database().await;
    let store = node(&url).await;
    let look = inspect(&url).await;
    let home = workspace(&store).await;
    let doomed = webhook(&store, &home.id).await;
    store
        .delete_webhook(&home.id, &doomed.id)
        .await
        .expect("delete the webhook");

    let event = new_event(&home.id, now(), &[]);
    let sent = Outcome {
        delivery_id: new_id(IdKind::Delivery),
        webhook_id: doomed.id.clone(),
        attempt: attempt(now(), Some(200)),
        next: NextState::Delivered,
        disable_webhook: None,
    };
    assert!(matches!(
        store.record_test_send(event, sent).await,
        Err(StoreError::NotFound)
    ));
    let tables = ["events", "deliveries", "attempts"];
    assert_empty(&look, &tables, "a row of the refused test send").await;
    store.close().await;
}

#[tokio::test]
async fn publishes_racing_a_webhooks_deletion_leave_no_delivery_of_it() {
    let url = tidings_testkit::postgres::fresh_database().await;
    let store = std::sync::Arc::new(node(&url).await);
    let look = inspect(&url).await;
    let home = workspace(store.as_ref()).await;
    for round in 0..20 {
        let doomed = webhook(store.as_ref(), &home.id).await;
        let publishing = {
            let store = store.clone();
            let doomed = doomed.clone();
            tokio::spawn(async move {
                let events = (0..5)
                    .map(|_| new_event(&doomed.workspace_id, now(), &[&doomed]))
                    .collect();
                store.publish(events).await
            })
        };
        // Every few rounds the deletion goes first, the others after the publish has begun.
        if round % 3 == 0 {
            tokio::task::yield_now().await;
        }
        store
            .delete_webhook(&home.id, &doomed.id)
            .await
            .expect("delete the webhook");
        publishing
            .await
            .expect("the publish task")
            .expect("publishing never fails on a deleted webhook");
        let orphans = count(
            &look,
            "SELECT COUNT(*) FROM deliveries d
             WHERE NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.id = d.webhook_id)",
        )
        .await;
        assert_eq!(orphans, 0, "round {round}: deliveries of a deleted webhook");
    }
    store.close().await;
}
