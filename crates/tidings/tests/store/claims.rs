//! Stories about claiming due work: limits, exclusions, leases, renewals and releases.

use std::collections::BTreeSet;

use tidings_core::webhook::WebhookState;
use tidings_store::*;

use crate::backends::{Backend, Kind};
use crate::fixtures::*;
use crate::publish::AWKWARD_DATA;

pub async fn claim_due_respects_limit_exclusions_and_due_time(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let first = webhook(store, &home.id, WebhookState::Active).await;
    let second = webhook(store, &home.id, WebhookState::Active).await;
    let start = now();
    let first_due = publish_many(store, &first, 3, start - 5_000).await;
    let second_due = publish_many(store, &second, 3, start - 5_000).await;
    let later = start + 60_000;
    let first_later = publish_many(store, &first, 1, later).await;
    assert_eq!(
        store.next_due_at().await.expect("next due"),
        Some(start - 5_000)
    );

    let only_first = |limit| Claim {
        exclude_webhooks: vec![second.id.clone()],
        ..claim("node-a", start, limit)
    };
    let batch = claim_due(store, &only_first(2)).await;
    assert_eq!(batch.len(), 2, "at most `limit`");
    let rest = claim_due(store, &only_first(10)).await;
    assert_eq!(rest.len(), 1, "the future delivery is not due yet");
    let mut claimed_first = ids_of(&batch);
    claimed_first.extend(ids_of(&rest));
    assert_eq!(sorted(claimed_first), sorted(first_due));

    let only_second = Claim {
        exclude_webhooks: vec![first.id.clone()],
        ..claim("node-a", start, 10)
    };
    let batch = claim_due(store, &only_second).await;
    assert_eq!(ids_of(&batch), sorted(second_due));
    assert!(batch.iter().all(|c| c.webhook.id == second.id));

    assert!(
        claim_due(store, &claim("node-b", start, 10))
            .await
            .is_empty(),
        "claimed deliveries are not claimable again within their lease"
    );
    // Once its time comes (and before any lease above runs out), the future delivery is claimed.
    let batch = claim_due(store, &claim("node-b", later, 10)).await;
    assert_eq!(ids_of(&batch), first_later);
    assert!(
        claim_due(store, &claim("node-b", later, 10))
            .await
            .is_empty()
    );
    assert_eq!(
        store.count_pending().await.expect("count pending"),
        7,
        "claimed deliveries are still pending"
    );
}

pub async fn claimed_delivery_carries_event_and_webhook(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let received_at = now() - 1_000;
    let mut event = new_event(&home.id, "deal.won.v1", received_at, &[&hook]);
    event.data = AWKWARD_DATA.to_owned();
    event.occurred_at = received_at - 12_345;
    let published = publish(store, event.clone()).await;

    let claimed = claim_due(store, &claim("node-a", now(), 10)).await;
    assert_eq!(claimed.len(), 1);
    let first = &claimed[0];
    assert_eq!(first.delivery_id, published.delivery_ids[0]);
    assert_eq!(first.attempts, 0);
    assert_eq!(first.event_id, event.id);
    assert_eq!(first.event_type, "deal.won.v1");
    assert_eq!(first.occurred_at, received_at - 12_345);
    assert_eq!(&*first.data, AWKWARD_DATA, "data byte for byte");
    assert_eq!(*first.webhook, hook);

    record(
        store,
        "node-a",
        vec![failed(first, NextState::RetryAt(now()))],
        &quiet_policy(),
    )
    .await;
    let again = claim_due(store, &claim("node-a", now(), 10)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id, first.delivery_id);
    assert_eq!(again[0].attempts, 1, "one attempt made so far");
    assert_eq!(&*again[0].data, AWKWARD_DATA);
    assert_eq!(again[0].webhook.health.failures_since_success, 1);
}

/// A claim of up to ten deliveries whose lease lasts a second.
fn short_lease(node: &str, at: tidings_core::UnixMillis) -> Claim {
    Claim {
        lease_ms: 1_000,
        ..claim(node, at, 10)
    }
}

pub async fn lease_expiry_hands_the_delivery_to_another_node(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let ids = publish_many(store, &hook, 1, now() - 1_000).await;
    let start = now();
    let by_a = claim_due(store, &short_lease("node-a", start)).await;
    assert_eq!(ids_of(&by_a), ids);
    assert!(
        claim_due(store, &short_lease("node-b", start + 500))
            .await
            .is_empty(),
        "not claimable within the lease"
    );
    let by_b = claim_due(store, &short_lease("node-b", start + 1_001)).await;
    assert_eq!(
        ids_of(&by_b),
        ids,
        "claimable by another node once the lease ran out"
    );
    assert_eq!(by_b[0].attempts, 0);

    // node-a's late outcome is ignored: it no longer holds the claim.
    record(store, "node-a", vec![delivered(&by_a[0])], &quiet_policy()).await;
    let untouched = delivery(store, &home.id, &ids[0]).await;
    assert_eq!(untouched.status, DeliveryStatus::Pending);
    assert_eq!(untouched.attempts, 0);
    assert!(
        store
            .list_attempts(&ids[0])
            .await
            .expect("list attempts")
            .is_empty()
    );
    assert_eq!(
        webhook_now(store, &hook).await.health,
        WebhookHealth::default(),
        "an ignored outcome does not touch health"
    );

    record(store, "node-b", vec![delivered(&by_b[0])], &quiet_policy()).await;
    let done = delivery(store, &home.id, &ids[0]).await;
    assert_eq!(done.status, DeliveryStatus::Delivered);
    assert_eq!(done.attempts, 1);
    assert_eq!(
        store
            .list_attempts(&ids[0])
            .await
            .expect("list attempts")
            .len(),
        1
    );
}

pub async fn a_lapsed_claim_of_a_paused_webhook_waits_for_its_resume(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let ids = publish_many(store, &hook, 1, now() - 1_000).await;
    let start = now();
    assert_eq!(
        ids_of(&claim_due(store, &short_lease("node-a", start)).await),
        ids
    );

    // Paused while node-a holds the delivery; node-a stops without an outcome, so the claim
    // lapses with the delivery still due.
    set_state(store, &hook, WebhookState::Paused).await;
    assert!(
        claim_due(store, &short_lease("node-b", start + 1_001))
            .await
            .is_empty(),
        "a paused webhook's delivery is not claimed when a lapsed claim makes it due"
    );

    set_state(store, &hook, WebhookState::Active).await;
    assert_eq!(
        ids_of(&claim_due(store, &short_lease("node-b", now() + 1_001)).await),
        ids,
        "claimed once its webhook is active again"
    );
}

pub async fn renew_claims_pushes_the_lease_end(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let ids = publish_many(store, &hook, 2, now() - 1_000).await;
    let start = now();
    let by_a = claim_due(store, &short_lease("node-a", start)).await;
    assert_eq!(ids_of(&by_a), sorted(ids.clone()));
    let (renewed, other) = (&ids[0], &ids[1]);

    store
        .renew_claims("node-a", std::slice::from_ref(renewed), start + 10_000)
        .await
        .expect("renew a claim");
    // A renewal by a node that does not hold the claim changes nothing.
    store
        .renew_claims("node-b", std::slice::from_ref(other), start + 10_000)
        .await
        .expect("renew someone else's claim");
    // A renewal never shortens a lease.
    store
        .renew_claims("node-a", std::slice::from_ref(renewed), start + 100)
        .await
        .expect("renew a claim to an earlier time");

    let at_5s = claim_due(store, &claim("node-c", start + 5_000, 10)).await;
    assert_eq!(
        ids_of(&at_5s),
        vec![other.clone()],
        "only the unrenewed claim ran out"
    );
    assert!(
        claim_due(store, &claim("node-c", start + 9_000, 10))
            .await
            .is_empty()
    );
    let at_10s = claim_due(store, &short_lease("node-d", start + 10_001)).await;
    assert_eq!(ids_of(&at_10s), vec![renewed.clone()]);
}

pub async fn release_makes_a_claimed_delivery_due_at_once(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let ids = publish_many(store, &hook, 2, now() - 1_000).await;
    let by_a = claim_due(store, &claim("node-a", now(), 10)).await;
    assert_eq!(by_a.len(), 2);

    // Only the holder can give a claim back.
    store
        .release("node-b", &ids)
        .await
        .expect("release someone else's claims");
    assert!(
        claim_due(store, &claim("node-c", now(), 10))
            .await
            .is_empty()
    );

    store
        .release("node-a", std::slice::from_ref(&ids[0]))
        .await
        .expect("release a claim");
    let released = delivery(store, &home.id, &ids[0]).await;
    assert_eq!(released.status, DeliveryStatus::Pending);
    assert_eq!(released.attempts, 0, "a release is not an attempt");
    let due = released
        .next_attempt_at
        .expect("a released delivery is due");
    assert!(due <= now());
    assert_eq!(store.next_due_at().await.expect("next due"), Some(due));
    let by_c = claim_due(store, &claim("node-c", now(), 10)).await;
    assert_eq!(ids_of(&by_c), vec![ids[0].clone()]);
    assert!(
        store
            .list_attempts(&ids[0])
            .await
            .expect("list attempts")
            .is_empty()
    );
}

pub async fn release_all_claims_depends_on_who_owns_the_store(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    publish_many(store, &hook, 3, now() - 1_000).await;
    let by_a = claim_due(store, &claim("node-a", now(), 10)).await;
    assert_eq!(by_a.len(), 3);
    record(store, "node-a", vec![delivered(&by_a[0])], &quiet_policy()).await;
    let held: BTreeSet<String> = by_a[1..].iter().map(|c| c.delivery_id.clone()).collect();

    let released = store
        .release_all_claims()
        .await
        .expect("release all claims");
    let after = claim_due(store, &claim("node-b", now(), 10)).await;
    match backend.kind() {
        // One process owns an SQLite file: every earlier claim is released at start-up.
        Kind::Sqlite => {
            assert_eq!(released, 2);
            assert_eq!(
                after
                    .iter()
                    .map(|c| c.delivery_id.clone())
                    .collect::<BTreeSet<_>>(),
                held
            );
        }
        // A shared database releases none: other nodes may still hold them.
        Kind::Postgres => {
            assert_eq!(released, 0);
            assert!(after.is_empty());
        }
    }
}

pub async fn publish_and_release_wake_the_work_signal(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    let signal = store.work_signal();
    assert!(
        wakes(&signal, async {
            publish(
                store,
                new_event(&home.id, "lead.created.v1", now(), &[&hook]),
            )
            .await;
        })
        .await,
        "a publish wakes the work signal"
    );
    let claimed = claim_due(store, &claim("node-a", now(), 10)).await;
    assert_eq!(claimed.len(), 1);
    assert!(
        wakes(&signal, async {
            store
                .release("node-a", &ids_of(&claimed))
                .await
                .expect("release");
        })
        .await,
        "a release wakes the work signal"
    );
}

pub async fn claim_due_caps_live_claims_per_webhook(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let busy = webhook(store, &home.id, WebhookState::Active).await;
    let quiet = webhook(store, &home.id, WebhookState::Active).await;
    publish_many(store, &busy, 10, now() - 1_000).await;
    publish_many(store, &quiet, 2, now() - 1_000).await;
    let start = now();
    let capped = |at| Claim {
        per_webhook_claims: 3,
        lease_ms: 1_000,
        ..claim("node-a", at, 100)
    };
    let count_for = |claimed: &[ClaimedDelivery], hook: &Webhook| {
        claimed.iter().filter(|c| c.webhook.id == hook.id).count()
    };

    let first = claim_due(store, &capped(start)).await;
    assert_eq!(count_for(&first, &busy), 3, "at most 3 of one webhook");
    assert_eq!(count_for(&first, &quiet), 2);
    assert!(claim_due(store, &capped(start)).await.is_empty());

    // An outcome frees one place.
    let busy_claim = first
        .iter()
        .find(|c| c.webhook.id == busy.id)
        .expect("a claim of the busy webhook");
    record(
        store,
        "node-a",
        vec![delivered(busy_claim)],
        &quiet_policy(),
    )
    .await;
    let next = claim_due(store, &capped(start)).await;
    assert_eq!(count_for(&next, &busy), 1);
    assert_eq!(next.len(), 1);

    // Claims whose lease ran out no longer count.
    let later = claim_due(store, &capped(start + 1_001)).await;
    assert_eq!(count_for(&later, &busy), 3);
    assert_eq!(count_for(&later, &quiet), 2);
}

/// Deliveries whose attempt is over but whose outcome is not committed yet (the claim's `settled`)
/// no longer take one of the webhook's places: only the claims still waiting or in flight count.
pub async fn settled_claims_do_not_count_against_the_cap(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    publish_many(store, &hook, 10, now() - 1_000).await;
    let start = now();
    let capped = |settled: Vec<String>| Claim {
        per_webhook_claims: 3,
        settled,
        ..claim("node-a", start, 100)
    };

    let first = claim_due(store, &capped(Vec::new())).await;
    assert_eq!(first.len(), 3);
    assert!(claim_due(store, &capped(Vec::new())).await.is_empty());

    // Two of the three finished their attempts; their outcomes are still on the way.
    let settled: Vec<String> = first[..2].iter().map(|c| c.delivery_id.clone()).collect();
    let second = claim_due(store, &capped(settled.clone())).await;
    assert_eq!(second.len(), 2, "the two settled places are free again");
    assert!(claim_due(store, &capped(settled.clone())).await.is_empty());

    // Their outcomes committing changes nothing: the same places, not two more.
    record(
        store,
        "node-a",
        first[..2].iter().map(delivered).collect(),
        &quiet_policy(),
    )
    .await;
    assert!(claim_due(store, &capped(settled)).await.is_empty());
}

/// A node that is the only one holding claims of a webhook may hold up to `alone_claims` of them;
/// while another node holds some too, all of them together stay under `per_webhook_claims`.
pub async fn a_lone_node_holds_more_and_a_second_shares_the_cap(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    publish_many(store, &hook, 30, now() - 1_000).await;
    let start = now();
    let deep = |node: &str| Claim {
        per_webhook_claims: 3,
        alone_claims: 8,
        ..claim(node, start, 100)
    };

    let a = claim_due(store, &deep("node-a")).await;
    assert_eq!(a.len(), 8, "alone, a node holds its deep lane");
    assert!(
        claim_due(store, &deep("node-b")).await.is_empty(),
        "the other node's 8 already exceed the shared cap of 3"
    );

    // Six of node-a's outcomes commit: two of its claims stay live, so node-b may take one.
    record(
        store,
        "node-a",
        a[..6].iter().map(delivered).collect(),
        &quiet_policy(),
    )
    .await;
    let b = claim_due(store, &deep("node-b")).await;
    assert_eq!(
        b.len(),
        1,
        "2 live on node-a, so 1 more under the shared cap"
    );
    assert!(
        claim_due(store, &deep("node-a")).await.is_empty(),
        "node-b holds one too, so node-a is back under the shared cap"
    );

    // Once node-b holds none, node-a is alone again.
    record(store, "node-b", vec![delivered(&b[0])], &quiet_policy()).await;
    let again = claim_due(store, &deep("node-a")).await;
    assert_eq!(again.len(), 6, "alone again: up to 8 with its 2 live");
}

/// A claim that finds nothing but full lanes' work (every due delivery belongs to an excluded
/// webhook) must still see, on the next claim, anything that has since become due elsewhere: a
/// publish, a resume, a release, a retry falling due, a manual retry, a lane no longer excluded.
pub async fn work_due_outside_full_lanes_is_claimed_at_once(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let full = webhook(store, &home.id, WebhookState::Active).await;
    let other = webhook(store, &home.id, WebhookState::Active).await;
    let paused = webhook(store, &home.id, WebhookState::Paused).await;
    let start = now();
    let backlog = publish_many(store, &full, 5, start - 1_000).await;
    let held = publish_many(store, &paused, 1, start - 1_000).await;
    let past_full = |at| Claim {
        exclude_webhooks: vec![full.id.clone()],
        ..claim("node-a", at, 10)
    };
    let nothing_else = |what: &str, claimed: Vec<ClaimedDelivery>| {
        assert!(
            claimed.is_empty(),
            "{what}: nothing due outside the full lane"
        );
    };
    nothing_else("at first", claim_due(store, &past_full(start)).await);

    // More work for the full lane changes nothing; work for another webhook is found at once.
    publish_many(store, &full, 2, start).await;
    nothing_else(
        "after a publish to the full lane",
        claim_due(store, &past_full(start)).await,
    );
    let fresh = publish_many(store, &other, 1, start).await;
    let claimed = claim_due(store, &past_full(start)).await;
    assert_eq!(ids_of(&claimed), fresh, "a publish to another webhook");
    nothing_else("again", claim_due(store, &past_full(start)).await);

    // A resumed webhook's held delivery.
    let mut resumed = webhook_now(store, &paused).await;
    resumed.state = WebhookState::Active;
    store.update_webhook(&resumed).await.expect("resume");
    let after_resume = claim_due(store, &past_full(now())).await;
    assert_eq!(ids_of(&after_resume), held, "a resumed webhook's delivery");
    nothing_else(
        "after the resume",
        claim_due(store, &past_full(now())).await,
    );

    // A released claim.
    store
        .release("node-a", &ids_of(&claimed))
        .await
        .expect("release");
    let again = claim_due(store, &past_full(now())).await;
    assert_eq!(ids_of(&again), fresh, "a released delivery");
    nothing_else(
        "after the release",
        claim_due(store, &past_full(now())).await,
    );

    // A retry falling due a moment later.
    let moment = now();
    record(
        store,
        "node-a",
        vec![failed(&again[0], NextState::RetryAt(moment + 300))],
        &quiet_policy(),
    )
    .await;
    nothing_else(
        "before the retry is due",
        claim_due(store, &past_full(moment + 3)).await,
    );
    let retried = claim_due(store, &past_full(moment + 301)).await;
    assert_eq!(ids_of(&retried), fresh, "a retry once due");

    // A delivery that failed for good, retried by hand.
    record(
        store,
        "node-a",
        vec![failed(&retried[0], NextState::Failed)],
        &quiet_policy(),
    )
    .await;
    nothing_else(
        "after the failure",
        claim_due(store, &past_full(moment + 302)).await,
    );
    store
        .retry_delivery(&home.id, &fresh[0], moment + 302)
        .await
        .expect("retry by hand");
    let by_hand = claim_due(store, &past_full(moment + 303)).await;
    assert_eq!(ids_of(&by_hand), fresh, "a delivery retried by hand");
    nothing_else(
        "after the manual retry",
        claim_due(store, &past_full(moment + 303)).await,
    );

    // The full lane itself, once it is no longer excluded.
    let drained = claim_due(store, &claim("node-a", moment + 304, 10)).await;
    assert_eq!(drained.len(), 7, "the lane's backlog once it has room");
    assert!(ids_of(&drained).iter().all(|id| !fresh.contains(id)));
    assert!(backlog.iter().all(|id| ids_of(&drained).contains(id)));
}

/// When the full lanes are every active webhook's, a claim past them finds nothing, and the
/// webhooks that are not active (paused, disabled) count for nothing; one of them made active is
/// outside the exclusions, and its waiting work is claimed at once, its next due time seen.
pub async fn a_claim_past_every_active_webhook_finds_nothing(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let full = webhook(store, &home.id, WebhookState::Active).await;
    let also_full = webhook(store, &home.id, WebhookState::Active).await;
    let paused = webhook(store, &home.id, WebhookState::Paused).await;
    let disabled = webhook(store, &home.id, WebhookState::Disabled).await;
    let start = now();
    publish_many(store, &full, 3, start - 1_000).await;
    publish_many(store, &also_full, 2, start - 1_000).await;
    let held = publish_many(store, &paused, 2, start - 1_000).await;
    publish_many(store, &disabled, 1, start - 1_000).await;
    let past_full = |at| Claim {
        exclude_webhooks: vec![full.id.clone(), also_full.id.clone()],
        ..claim("node-a", at, 10)
    };
    assert!(
        claim_due(store, &past_full(start)).await.is_empty(),
        "only the excluded webhooks are active"
    );

    let mut resumed = webhook_now(store, &paused).await;
    resumed.state = WebhookState::Active;
    store.update_webhook(&resumed).await.expect("resume");
    let claimed = claim_due(store, &past_full(now())).await;
    assert_eq!(
        sorted(ids_of(&claimed)),
        sorted(held),
        "the resumed webhook's work"
    );
    assert!(claim_due(store, &past_full(now())).await.is_empty());

    // Its retry is the next due time outside the full lanes: nothing is claimed before it.
    let moment = now();
    record(
        store,
        "node-a",
        vec![failed(&claimed[0], NextState::RetryAt(moment + 200))],
        &quiet_policy(),
    )
    .await;
    assert!(
        claim_due(store, &past_full(moment + 1)).await.is_empty(),
        "the retry is not due yet"
    );
    let retried = claim_due(store, &past_full(moment + 201)).await;
    assert_eq!(ids_of(&retried), vec![claimed[0].delivery_id.clone()]);

    // Without exclusions the full lanes' own work is claimed, and still none of the disabled one's.
    let drained = claim_due(store, &claim("node-a", moment + 202, 20)).await;
    assert_eq!(drained.len(), 5, "the two full lanes' backlog");
    assert!(drained.iter().all(|c| c.webhook.id != disabled.id));
}

/// Deliveries of several events claimed together each carry their own event's data, and those of
/// one event share one copy of it.
pub async fn deliveries_of_one_event_share_its_data_in_a_claim(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let mut hooks = Vec::new();
    for _ in 0..3 {
        hooks.push(webhook(store, &home.id, WebhookState::Active).await);
    }
    let received_at = now() - 1_000;
    let mut first = new_event(
        &home.id,
        "lead.created.v1",
        received_at,
        &[&hooks[0], &hooks[1], &hooks[2]],
    );
    first.data = AWKWARD_DATA.to_owned();
    let mut second = new_event(
        &home.id,
        "lead.created.v1",
        received_at,
        &[&hooks[0], &hooks[2]],
    );
    second.data = r#"{"lead_id":"l_2"}"#.to_owned();
    publish(store, first.clone()).await;
    publish(store, second.clone()).await;

    let claimed = claim_due(store, &claim("node-a", now(), 10)).await;
    assert_eq!(claimed.len(), 5, "every delivery of both events");
    for (event, count) in [(&first, 3), (&second, 2)] {
        let of_event: Vec<&ClaimedDelivery> =
            claimed.iter().filter(|c| c.event_id == event.id).collect();
        assert_eq!(of_event.len(), count);
        for delivery in &of_event {
            assert_eq!(
                &*delivery.data, event.data,
                "each delivery carries its event's data"
            );
            assert!(
                std::sync::Arc::ptr_eq(&delivery.data, &of_event[0].data),
                "deliveries of one event share one copy of its data"
            );
            assert!(
                event
                    .deliveries
                    .iter()
                    .any(|d| d.id == delivery.delivery_id && d.webhook_id == delivery.webhook.id)
            );
        }
    }
}
