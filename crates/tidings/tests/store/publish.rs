//! Stories about publishing: events with their deliveries, idempotency keys, batches, and what a
//! webhook's state does to the deliveries made for it.

use std::sync::Arc;

use tidings_core::matching::EventScope;
use tidings_core::webhook::WebhookState;
use tidings_store::*;

use crate::backends::Backend;
use crate::fixtures::*;

/// Data with escapes, non-ASCII text, key order a JSON database would change and a number no float
/// holds: it must come back byte for byte.
pub const AWKWARD_DATA: &str = r#"{"z":1,"a":"Zoë \"quoted\" \\ \u00e9 ✓","big":123456789012345678901234567890,"f":1.50,"nested":{"b":[],"a":{}},"e":null}"#;

pub async fn publish_stores_event_and_deliveries_in_one_call(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let first = webhook(store, &home.id, WebhookState::Active).await;
    let second = webhook(store, &home.id, WebhookState::Active).await;
    assert_eq!(store.count_pending().await.expect("count pending"), 0);
    assert_eq!(store.next_due_at().await.expect("next due"), None);

    let received_at = now() - 1_000;
    let mut event = new_event(&home.id, "lead.created.v1", received_at, &[&first, &second]);
    event.data = AWKWARD_DATA.to_owned();
    event.scope = EventScope {
        campaign_id: Some("c_1".to_owned()),
        client_id: Some("cl_9".to_owned()),
        agent_id: None,
        category_id: Some("hot".to_owned()),
    };
    let delivery_ids: Vec<String> = event.deliveries.iter().map(|d| d.id.clone()).collect();
    let published = publish(store, event.clone()).await;
    assert_eq!(
        published,
        Published {
            event_id: event.id.clone(),
            delivery_ids: delivery_ids.clone(),
            duplicate: false,
        }
    );

    let stored = store
        .get_event(&home.id, &event.id)
        .await
        .expect("read the event");
    assert_eq!(stored.id, event.id);
    assert_eq!(stored.workspace_id, home.id);
    assert_eq!(stored.event_type, "lead.created.v1");
    assert_eq!(stored.occurred_at, event.occurred_at);
    assert_eq!(stored.received_at, received_at);
    assert_eq!(stored.data, AWKWARD_DATA);
    assert_eq!(stored.scope, event.scope);
    assert_eq!(stored.idempotency_key, None);

    let deliveries = store
        .event_deliveries(&home.id, &event.id)
        .await
        .expect("read the event's deliveries");
    assert_eq!(
        deliveries.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        delivery_ids,
        "the event's deliveries, in id order"
    );
    for (delivery, hook) in deliveries.iter().zip([&first, &second]) {
        assert_eq!(delivery.workspace_id, home.id);
        assert_eq!(delivery.event_id, event.id);
        assert_eq!(delivery.webhook_id, hook.id);
        assert_eq!(delivery.event_type, "lead.created.v1");
        assert_eq!(delivery.status, DeliveryStatus::Pending);
        assert_eq!(delivery.attempts, 0);
        assert_eq!(delivery.next_attempt_at, Some(received_at));
        assert_eq!(delivery.last_status_code, None);
        assert_eq!(delivery.last_error_kind, None);
        assert!(!delivery.is_test);
        assert_eq!(delivery.created_at, received_at);
        assert_eq!(delivery.updated_at, received_at);
    }
    assert_eq!(store.count_pending().await.expect("count pending"), 2);
    assert_eq!(
        store.next_due_at().await.expect("next due"),
        Some(received_at)
    );

    // Events list newest first, in pages.
    let later: Vec<NewEvent> = (0..3)
        .map(|_| new_event(&home.id, "lead.updated.v1", now(), &[&first]))
        .collect();
    store.publish(later.clone()).await.expect("publish a batch");
    let mut want: Vec<String> = later.iter().map(|e| e.id.clone()).collect();
    want.push(event.id.clone());
    want.sort();
    want.reverse();
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_events(
                &home.id,
                &Page {
                    limit: 3,
                    after: after.clone(),
                },
            )
            .await
            .expect("list events");
        sizes.push(page.len());
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(page.into_iter().map(|e| e.id));
    }
    assert_eq!(sizes, vec![3, 1, 0]);
    assert_eq!(seen, want);

    let other = workspace(store).await;
    assert_not_found(
        store.get_event(&other.id, &event.id).await,
        "event read through another workspace",
    );
    assert!(
        store
            .list_events(
                &other.id,
                &Page {
                    limit: 10,
                    after: None
                }
            )
            .await
            .expect("list events")
            .is_empty()
    );
}

pub async fn publish_into_a_deleted_workspace_fails_and_stores_nothing(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    // The API read the workspace (its key, its webhooks) before it was deleted.
    store
        .delete_workspace(&home.id)
        .await
        .expect("delete the workspace");
    let late = new_event(&home.id, "lead.created.v1", now(), &[&hook]);
    assert_not_found(
        store.publish(vec![late.clone()]).await,
        "publish into a deleted workspace",
    );
    assert_not_found(
        store.get_event(&home.id, &late.id).await,
        "the event of a refused publish",
    );
    assert_eq!(store.count_pending().await.expect("count pending"), 0);
}

pub async fn publish_skips_deliveries_of_deleted_webhooks(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let kept = webhook(store, &home.id, WebhookState::Active).await;
    let gone = webhook(store, &home.id, WebhookState::Active).await;
    // Fan-out read both webhooks; one is deleted before the publish commits.
    let event = new_event(&home.id, "lead.created.v1", now(), &[&kept, &gone]);
    store
        .delete_webhook(&home.id, &gone.id)
        .await
        .expect("delete a webhook");
    let published = publish(store, event.clone()).await;
    assert_eq!(published.event_id, event.id);
    assert_eq!(published.delivery_ids, vec![event.deliveries[0].id.clone()]);
    assert!(!published.duplicate);
    let deliveries = store
        .event_deliveries(&home.id, &event.id)
        .await
        .expect("read the event's deliveries");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].webhook_id, kept.id);
    assert_eq!(store.count_pending().await.expect("count pending"), 1);
}

pub async fn publish_with_idempotency_key_returns_the_first_event(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let other = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let other_hook = webhook(store, &other.id, WebhookState::Active).await;

    let received_at = now();
    let window = 3_600_000;
    let keyed = |workspace: &str, hook: &Webhook, at| {
        let mut event = new_event(workspace, "lead.created.v1", at, &[hook]);
        event.idempotency_key = Some("order-7".to_owned());
        event.idempotency_until = at + window;
        event
    };
    let first = keyed(&home.id, &hook, received_at);
    let first_published = publish(store, first.clone()).await;
    assert_eq!(
        first_published,
        Published {
            event_id: first.id.clone(),
            delivery_ids: vec![first.deliveries[0].id.clone()],
            duplicate: false,
        }
    );
    assert_eq!(
        store
            .get_event(&home.id, &first.id)
            .await
            .expect("read the event")
            .idempotency_key
            .as_deref(),
        Some("order-7")
    );

    // Within the window: the first event comes back and nothing new is stored.
    let again = keyed(&home.id, &hook, received_at + window - 1);
    let again_published = publish(store, again.clone()).await;
    assert_eq!(
        again_published,
        Published {
            event_id: first.id.clone(),
            delivery_ids: vec![first.deliveries[0].id.clone()],
            duplicate: true,
        }
    );
    assert_not_found(
        store.get_event(&home.id, &again.id).await,
        "the duplicate event",
    );
    assert_not_found(
        store.get_delivery(&home.id, &again.deliveries[0].id).await,
        "the duplicate's delivery",
    );
    assert_eq!(store.count_pending().await.expect("count pending"), 1);

    // The same key in another workspace is another event.
    let elsewhere = keyed(&other.id, &other_hook, received_at);
    let elsewhere_published = publish(store, elsewhere.clone()).await;
    assert_eq!(elsewhere_published.event_id, elsewhere.id);
    assert!(!elsewhere_published.duplicate);
    assert_eq!(store.count_pending().await.expect("count pending"), 2);

    // After the window the key starts over with a new event, which later duplicates return.
    let late = keyed(&home.id, &hook, received_at + window + 1);
    let late_published = publish(store, late.clone()).await;
    assert_eq!(late_published.event_id, late.id);
    assert!(!late_published.duplicate);
    let late_again = keyed(&home.id, &hook, received_at + window + 2);
    let late_again_published = publish(store, late_again).await;
    assert_eq!(
        late_again_published,
        Published {
            event_id: late.id.clone(),
            delivery_ids: vec![late.deliveries[0].id.clone()],
            duplicate: true,
        }
    );
    assert_eq!(store.count_pending().await.expect("count pending"), 3);
}

pub async fn concurrent_publishes_with_one_key_store_one_event(backend: Backend) {
    let store = backend.open().await;
    let home = workspace(store.as_ref()).await;
    let hook = webhook(store.as_ref(), &home.id, WebhookState::Active).await;
    let received_at = now();
    let mut tasks = Vec::new();
    let mut event_ids = Vec::new();
    for _ in 0..8 {
        let mut event = new_event(&home.id, "lead.created.v1", received_at, &[&hook]);
        event.idempotency_key = Some("same-key".to_owned());
        event.idempotency_until = received_at + 60_000;
        event_ids.push(event.id.clone());
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store.publish(vec![event]).await.expect("publish")
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.expect("publish task"));
    }
    let originals: Vec<&Published> = answers.iter().filter(|p| !p.duplicate).collect();
    assert_eq!(originals.len(), 1, "exactly one publish stores the event");
    let winner = originals[0].clone();
    assert!(event_ids.contains(&winner.event_id));
    for answer in &answers {
        assert_eq!(answer.event_id, winner.event_id);
        assert_eq!(answer.delivery_ids, winner.delivery_ids);
    }
    let events = store
        .list_events(
            &home.id,
            &Page {
                limit: 100,
                after: None,
            },
        )
        .await
        .expect("list events");
    assert_eq!(
        events.into_iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![winner.event_id]
    );
    assert_eq!(store.count_pending().await.expect("count pending"), 1);
}

pub async fn batch_publish_answers_each_event_in_order(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let first = webhook(store, &home.id, WebhookState::Active).await;
    let second = webhook(store, &home.id, WebhookState::Active).await;
    let at = now();
    let plain = new_event(&home.id, "lead.created.v1", at, &[&first, &second]);
    let no_receivers = new_event(&home.id, "lead.created.v1", at, &[]);
    let mut keyed = new_event(&home.id, "lead.updated.v1", at, &[&second]);
    keyed.idempotency_key = Some("k-1".to_owned());
    keyed.idempotency_until = at + 60_000;
    // The same key twice in one batch: the second is a duplicate of the first.
    let mut keyed_again = new_event(&home.id, "lead.updated.v1", at, &[&second]);
    keyed_again.idempotency_key = Some("k-1".to_owned());
    keyed_again.idempotency_until = at + 60_000;
    let published = store
        .publish(vec![
            plain.clone(),
            no_receivers.clone(),
            keyed.clone(),
            keyed_again.clone(),
        ])
        .await
        .expect("publish a batch");
    assert_eq!(
        published,
        vec![
            Published {
                event_id: plain.id.clone(),
                delivery_ids: plain.deliveries.iter().map(|d| d.id.clone()).collect(),
                duplicate: false,
            },
            Published {
                event_id: no_receivers.id.clone(),
                delivery_ids: Vec::new(),
                duplicate: false,
            },
            Published {
                event_id: keyed.id.clone(),
                delivery_ids: vec![keyed.deliveries[0].id.clone()],
                duplicate: false,
            },
            Published {
                event_id: keyed.id.clone(),
                delivery_ids: vec![keyed.deliveries[0].id.clone()],
                duplicate: true,
            },
        ]
    );
    for event in [&plain, &no_receivers, &keyed] {
        store
            .get_event(&home.id, &event.id)
            .await
            .expect("each event of the batch is stored");
    }
    assert_not_found(
        store.get_event(&home.id, &keyed_again.id).await,
        "the duplicate in the batch",
    );
    assert_eq!(store.count_pending().await.expect("count pending"), 3);
    let claimed = claim_due(store, &claim("node-a", now(), 100)).await;
    let mut want: Vec<String> = plain.deliveries.iter().map(|d| d.id.clone()).collect();
    want.push(keyed.deliveries[0].id.clone());
    assert_eq!(ids_of(&claimed), sorted(want));
}

pub async fn a_batch_keeps_each_body_byte_for_byte(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    // Bodies of different byte lengths, several with characters of two to four bytes, side by
    // side in one batch: each must come back whole, from its own start to its own end.
    let bodies = [
        AWKWARD_DATA.to_owned(),
        "{}".to_owned(),
        r#"{"note":"日本語 🚀 ok","n":-0.0}"#.to_owned(),
        format!(r#"{{"long":"{}"}}"#, "é".repeat(700)),
        r#"{"a":"\\","b":"\u0000"}"#.to_owned(),
    ];
    let events: Vec<NewEvent> = bodies
        .iter()
        .map(|body| {
            let mut event = new_event(&home.id, "lead.created.v1", now(), &[&hook]);
            event.data = body.clone();
            event
        })
        .collect();
    store
        .publish(events.clone())
        .await
        .expect("publish the batch");
    for (event, body) in events.iter().zip(&bodies) {
        let stored = store
            .get_event(&home.id, &event.id)
            .await
            .expect("read an event back");
        assert_eq!(&stored.data, body);
    }
    let claimed = claim_due(store, &claim("node-a", now(), 100)).await;
    assert_eq!(claimed.len(), bodies.len());
    for delivery in &claimed {
        let index = events
            .iter()
            .position(|e| e.id == delivery.event_id)
            .expect("a delivery of the batch");
        assert_eq!(&*delivery.data, bodies[index].as_str());
    }
}

pub async fn paused_webhook_holds_deliveries_until_resumed(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let active = webhook(store, &home.id, WebhookState::Active).await;
    let paused = webhook(store, &home.id, WebhookState::Paused).await;
    let received_at = now() - 1_000;
    let event = new_event(
        &home.id,
        "lead.created.v1",
        received_at,
        &[&active, &paused],
    );
    let published = publish(store, event).await;
    assert_eq!(
        published.delivery_ids.len(),
        2,
        "a paused webhook still gets its delivery"
    );
    let (to_active, to_paused) = (&published.delivery_ids[0], &published.delivery_ids[1]);

    let held = delivery(store, &home.id, to_paused).await;
    assert_eq!(held.status, DeliveryStatus::Pending);
    assert_eq!(held.next_attempt_at, None, "held: no due time");
    assert_eq!(store.count_pending().await.expect("count pending"), 2);
    assert_eq!(
        store.next_due_at().await.expect("next due"),
        Some(received_at)
    );

    let claimed = claim_due(store, &claim("node-a", now(), 100)).await;
    assert_eq!(ids_of(&claimed), vec![to_active.clone()]);
    record(
        store,
        "node-a",
        vec![delivered(&claimed[0])],
        &quiet_policy(),
    )
    .await;
    assert_eq!(
        store.next_due_at().await.expect("next due"),
        None,
        "held deliveries are never due"
    );
    assert!(
        claim_due(store, &claim("node-a", now() + 86_400_000, 100))
            .await
            .is_empty(),
        "held deliveries are not claimed however late it is"
    );
    assert_eq!(store.count_pending().await.expect("count pending"), 1);

    // Resuming gives the held delivery a due time of now or earlier.
    let mut resumed = paused.clone();
    resumed.state = WebhookState::Active;
    resumed.updated_at = now();
    store
        .update_webhook(&resumed)
        .await
        .expect("resume a webhook");
    let after_resume = now();
    let due = delivery(store, &home.id, to_paused)
        .await
        .next_attempt_at
        .expect("a resumed webhook's delivery is due");
    assert!(due <= after_resume, "due at once, not {due}");
    assert_eq!(store.next_due_at().await.expect("next due"), Some(due));
    let claimed = claim_due(store, &claim("node-a", after_resume, 100)).await;
    assert_eq!(ids_of(&claimed), vec![to_paused.clone()]);
    assert_eq!(claimed[0].attempts, 0);
    record(
        store,
        "node-a",
        vec![delivered(&claimed[0])],
        &quiet_policy(),
    )
    .await;

    // Pausing an active webhook holds what was already waiting for it.
    let waiting = publish(
        store,
        new_event(&home.id, "lead.created.v1", now() - 1_000, &[&active]),
    )
    .await;
    set_state(store, &active, WebhookState::Paused).await;
    let held = delivery(store, &home.id, &waiting.delivery_ids[0]).await;
    assert_eq!(held.status, DeliveryStatus::Pending);
    assert_eq!(held.next_attempt_at, None);
    assert_eq!(store.next_due_at().await.expect("next due"), None);
    assert!(
        claim_due(store, &claim("node-a", now(), 100))
            .await
            .is_empty()
    );
}

pub async fn disabled_webhook_skips_new_deliveries_and_enable_releases_held_ones(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let disabled = webhook(store, &home.id, WebhookState::Disabled).await;
    let paused = webhook(store, &home.id, WebhookState::Paused).await;
    let active = webhook(store, &home.id, WebhookState::Active).await;
    let received_at = now() - 1_000;
    let mut event = new_event(
        &home.id,
        "lead.created.v1",
        received_at,
        &[&disabled, &paused, &active],
    );
    // Fan-out may itself decide a delivery is skipped (level precedence).
    event.deliveries[2].status = DeliveryStatus::Skipped;
    let published = publish(store, event.clone()).await;
    assert_eq!(
        published.delivery_ids,
        event
            .deliveries
            .iter()
            .map(|d| d.id.clone())
            .collect::<Vec<_>>(),
        "nothing published is dropped because of a webhook's state"
    );
    let skipped = delivery(store, &home.id, &published.delivery_ids[0]).await;
    assert_eq!(skipped.status, DeliveryStatus::Skipped);
    assert_eq!(skipped.next_attempt_at, None);
    let fanout_skipped = delivery(store, &home.id, &published.delivery_ids[2]).await;
    assert_eq!(fanout_skipped.status, DeliveryStatus::Skipped);
    assert_eq!(fanout_skipped.next_attempt_at, None);
    assert_eq!(store.count_pending().await.expect("count pending"), 1);
    assert_eq!(store.next_due_at().await.expect("next due"), None);
    assert!(
        claim_due(store, &claim("node-a", now(), 100))
            .await
            .is_empty()
    );

    let enabled_at = now();
    store
        .enable_webhook(&home.id, &paused.id, enabled_at)
        .await
        .expect("enable the paused webhook");
    let released = delivery(store, &home.id, &published.delivery_ids[1]).await;
    assert_eq!(released.status, DeliveryStatus::Pending);
    let due = released
        .next_attempt_at
        .expect("an enabled webhook's held delivery is due");
    assert!(due <= now(), "due at once, not {due}");
    let claimed = claim_due(store, &claim("node-a", now(), 100)).await;
    assert_eq!(ids_of(&claimed), vec![published.delivery_ids[1].clone()]);

    // Enabling the disabled webhook does not bring its skipped delivery back.
    store
        .enable_webhook(&home.id, &disabled.id, now())
        .await
        .expect("enable the disabled webhook");
    assert_eq!(
        status_of(store, &home.id, &published.delivery_ids[0]).await,
        DeliveryStatus::Skipped
    );
    let later = publish(
        store,
        new_event(&home.id, "lead.created.v1", now(), &[&disabled]),
    )
    .await;
    assert_eq!(
        status_of(store, &home.id, &later.delivery_ids[0]).await,
        DeliveryStatus::Pending
    );
}

pub async fn disabling_by_hand_holds_waiting_deliveries_until_enabled(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let waiting = publish_many(store, &hook, 2, now() - 1_000).await;
    let mut off = webhook_now(store, &hook).await;
    off.state = WebhookState::Disabled;
    off.disabled_reason = Some("turned off by hand".to_owned());
    off.updated_at = now();
    store.update_webhook(&off).await.expect("disable by hand");

    // What was already waiting is kept, held; only what comes later is skipped.
    for id in &waiting {
        let held = delivery(store, &home.id, id).await;
        assert_eq!(held.status, DeliveryStatus::Pending);
        assert_eq!(held.next_attempt_at, None);
    }
    let later = publish(
        store,
        new_event(&home.id, "lead.created.v1", now(), &[&hook]),
    )
    .await;
    assert_eq!(
        status_of(store, &home.id, &later.delivery_ids[0]).await,
        DeliveryStatus::Skipped
    );
    assert_eq!(store.next_due_at().await.expect("next due"), None);
    assert!(
        claim_due(store, &claim("node-a", now(), 10))
            .await
            .is_empty()
    );

    store
        .enable_webhook(&home.id, &hook.id, now())
        .await
        .expect("enable");
    let claimed = claim_due(store, &claim("node-a", now(), 10)).await;
    assert_eq!(ids_of(&claimed), sorted(waiting));
}
