//! Stories about reading deliveries back: filters, time ranges, pages, and workspace boundaries.

use std::collections::HashMap;

use tidings_core::ids::{IdKind, new_id};
use tidings_core::webhook::WebhookState;
use tidings_store::*;

use crate::backends::Backend;
use crate::fixtures::*;

/// What the story knows about each delivery it made, to compute every filter's expected answer.
struct Made {
    id: String,
    webhook_id: String,
    event_type: String,
    status: DeliveryStatus,
    created_at: i64,
}

async fn list_all(
    store: &dyn Store,
    workspace_id: &str,
    filter: &DeliveryFilter,
    limit: u32,
) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_deliveries(
                workspace_id,
                filter,
                &Page {
                    limit,
                    after: after.clone(),
                },
            )
            .await
            .expect("list deliveries");
        sizes.push(page.len());
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        ids.extend(page.into_iter().map(|d| d.id));
        assert!(sizes.len() < 100, "paging does not end");
    }
    (ids, sizes)
}

pub async fn list_deliveries_filters_and_pages_newest_first(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let other = workspace(store).await;
    let first = webhook(store, &home.id, WebhookState::Active).await;
    let second = webhook(store, &home.id, WebhookState::Active).await;
    let foreign = webhook(store, &other.id, WebhookState::Active).await;
    publish_many(store, &foreign, 2, now() - 200_000).await;

    let base = now() - 100_000;
    let mut made = Vec::new();
    for index in 0..6i64 {
        let event_type = if index % 2 == 0 {
            "lead.created.v1"
        } else {
            "call.ended.v1"
        };
        let created_at = base + index * 1_000;
        let event = new_event(&home.id, event_type, created_at, &[&first, &second]);
        let published = publish(store, event).await;
        for (id, hook) in published.delivery_ids.into_iter().zip([&first, &second]) {
            made.push(Made {
                id,
                webhook_id: hook.id.clone(),
                event_type: event_type.to_owned(),
                status: DeliveryStatus::Pending,
                created_at,
            });
        }
    }
    // Finish some: the first webhook's first two delivered, the second's third failed.
    let claimed: HashMap<String, ClaimedDelivery> = claim_due(
        store,
        &Claim {
            exclude_webhooks: vec![foreign.id.clone()],
            ..claim("node-a", now(), 100)
        },
    )
    .await
    .into_iter()
    .map(|c| (c.delivery_id.clone(), c))
    .collect();
    assert_eq!(claimed.len(), 12);
    let mut outcomes = Vec::new();
    for (index, item) in made.iter_mut().enumerate() {
        let next = match index {
            0 | 2 => Some((NextState::Delivered, DeliveryStatus::Delivered)),
            5 => Some((NextState::Failed, DeliveryStatus::Failed)),
            _ => None,
        };
        if let Some((next, status)) = next {
            outcomes.push(if status == DeliveryStatus::Delivered {
                delivered(&claimed[&item.id])
            } else {
                failed(&claimed[&item.id], next)
            });
            item.status = status;
        }
    }
    record(store, "node-a", outcomes, &quiet_policy()).await;

    let expect = |keep: &dyn Fn(&Made) -> bool| -> Vec<String> {
        let mut ids: Vec<String> = made
            .iter()
            .filter(|m| keep(m))
            .map(|m| m.id.clone())
            .collect();
        ids.sort();
        ids.reverse();
        ids
    };

    // Everything, newest first, in pages of five with neither overlap nor gap.
    let everything = expect(&|_| true);
    assert_eq!(everything.len(), 12);
    let (paged, sizes) = list_all(store, &home.id, &DeliveryFilter::default(), 5).await;
    assert_eq!(sizes, vec![5, 5, 2, 0]);
    assert_eq!(paged, everything);

    let cases: Vec<(&str, DeliveryFilter, Vec<String>)> = vec![
        (
            "by webhook",
            DeliveryFilter {
                webhook_id: Some(first.id.clone()),
                ..DeliveryFilter::default()
            },
            expect(&|m| m.webhook_id == first.id),
        ),
        (
            "delivered",
            DeliveryFilter {
                status: Some(DeliveryStatus::Delivered),
                ..DeliveryFilter::default()
            },
            expect(&|m| m.status == DeliveryStatus::Delivered),
        ),
        (
            "pending",
            DeliveryFilter {
                status: Some(DeliveryStatus::Pending),
                ..DeliveryFilter::default()
            },
            expect(&|m| m.status == DeliveryStatus::Pending),
        ),
        (
            "skipped",
            DeliveryFilter {
                status: Some(DeliveryStatus::Skipped),
                ..DeliveryFilter::default()
            },
            Vec::new(),
        ),
        (
            "by event type",
            DeliveryFilter {
                event_type: Some("call.ended.v1".to_owned()),
                ..DeliveryFilter::default()
            },
            expect(&|m| m.event_type == "call.ended.v1"),
        ),
        (
            "since (inclusive)",
            DeliveryFilter {
                since: Some(base + 2_000),
                ..DeliveryFilter::default()
            },
            expect(&|m| m.created_at >= base + 2_000),
        ),
        (
            "until (exclusive)",
            DeliveryFilter {
                until: Some(base + 2_000),
                ..DeliveryFilter::default()
            },
            expect(&|m| m.created_at < base + 2_000),
        ),
        (
            "everything at once",
            DeliveryFilter {
                webhook_id: Some(second.id.clone()),
                status: Some(DeliveryStatus::Pending),
                event_type: Some("lead.created.v1".to_owned()),
                since: Some(base + 1_000),
                until: Some(base + 5_000),
            },
            expect(&|m| {
                m.webhook_id == second.id
                    && m.status == DeliveryStatus::Pending
                    && m.event_type == "lead.created.v1"
                    && (base + 1_000..base + 5_000).contains(&m.created_at)
            }),
        ),
        (
            "another workspace's webhook",
            DeliveryFilter {
                webhook_id: Some(foreign.id.clone()),
                ..DeliveryFilter::default()
            },
            Vec::new(),
        ),
    ];
    for (name, filter, want) in cases {
        let (got, _) = list_all(store, &home.id, &filter, 3).await;
        assert_eq!(got, want, "filter: {name}");
    }
    let (failed_ids, _) = list_all(
        store,
        &home.id,
        &DeliveryFilter {
            status: Some(DeliveryStatus::Failed),
            ..DeliveryFilter::default()
        },
        3,
    )
    .await;
    assert_eq!(failed_ids, vec![made[5].id.clone()]);

    // A listed delivery reads the same alone.
    let listed = store
        .list_deliveries(
            &home.id,
            &DeliveryFilter {
                status: Some(DeliveryStatus::Failed),
                ..DeliveryFilter::default()
            },
            &Page {
                limit: 10,
                after: None,
            },
        )
        .await
        .expect("list deliveries");
    let alone = delivery(store, &home.id, &made[5].id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(format!("{:?}", listed[0]), format!("{alone:?}"));
    assert_eq!(alone.webhook_id, second.id);
    assert_eq!(alone.event_type, "lead.created.v1");
    assert_eq!(alone.created_at, base + 2_000);
    assert_eq!(alone.last_status_code, Some(500));
}

pub async fn reads_stop_at_the_workspace_boundary(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let other = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let event = new_event(&home.id, "lead.created.v1", now(), &[&hook]);
    let published = publish(store, event.clone()).await;
    let id = &published.delivery_ids[0];

    let mine = delivery(store, &home.id, id).await;
    assert_eq!(mine.id, *id);
    assert_not_found(
        store.get_delivery(&other.id, id).await,
        "delivery through another workspace",
    );
    assert_not_found(
        store
            .get_delivery(&home.id, &new_id(IdKind::Delivery))
            .await,
        "unknown delivery",
    );
    assert_not_found(
        store.get_event(&other.id, &event.id).await,
        "event through another workspace",
    );
    // Whether an event of another workspace reads as "not found" or as "no deliveries", none of
    // its deliveries may show.
    match store.event_deliveries(&other.id, &event.id).await {
        Ok(found) => assert!(found.is_empty(), "{found:?}"),
        Err(StoreError::NotFound) => {}
        Err(error) => panic!("event deliveries through another workspace: {error}"),
    }
    assert!(
        store
            .list_deliveries(
                &other.id,
                &DeliveryFilter::default(),
                &Page {
                    limit: 10,
                    after: None
                }
            )
            .await
            .expect("list deliveries")
            .is_empty()
    );
    assert_not_found(
        store.retry_delivery(&other.id, id, now()).await,
        "retry through another workspace",
    );

    // A finished delivery cannot be sent again through another workspace either.
    let claimed = claim_due(store, &claim("node-a", now(), 10)).await;
    record(
        store,
        "node-a",
        vec![delivered(&claimed[0])],
        &quiet_policy(),
    )
    .await;
    let filter = RetriggerFilter {
        webhook_id: hook.id.clone(),
        since: 0,
        until: now() + 3_600_000,
        statuses: vec![DeliveryStatus::Failed, DeliveryStatus::Delivered],
    };
    assert_eq!(
        store
            .retrigger(&other.id, &filter, 100, now())
            .await
            .expect("retrigger through another workspace"),
        0
    );
    assert_eq!(
        status_of(store, &home.id, id).await,
        DeliveryStatus::Delivered
    );
    assert_eq!(
        store
            .retrigger(&home.id, &filter, 100, now())
            .await
            .expect("retrigger"),
        1
    );
}
