//! Stories about what the API configures: workspaces, API keys, custom event types and webhooks.

use serde_json::json;
use tidings_core::catalog::EventTypeDef;
use tidings_core::ids::{IdKind, new_id};
use tidings_core::matching::LevelPrecedence;
use tidings_core::webhook::WebhookState;
use tidings_store::*;

use crate::backends::Backend;
use crate::fixtures::*;

pub async fn workspaces_round_trip_page_update_and_delete(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    assert!(
        store
            .list_workspaces(&Page {
                limit: 10,
                after: None
            })
            .await
            .expect("list workspaces")
            .is_empty()
    );

    let mut created = Vec::new();
    for name in ["one", "two", "three", "four", "five"] {
        let workspace = new_workspace(name);
        store
            .create_workspace(&workspace)
            .await
            .expect("create a workspace");
        assert_eq!(
            store
                .get_workspace(&workspace.id)
                .await
                .expect("read a workspace"),
            workspace
        );
        created.push(workspace);
    }
    created.sort_by(|a, b| a.id.cmp(&b.id));

    // Pages of two in id order, each strictly after the cursor.
    let mut seen = Vec::new();
    let mut after = None;
    let mut sizes = Vec::new();
    loop {
        let page = store
            .list_workspaces(&Page {
                limit: 2,
                after: after.clone(),
            })
            .await
            .expect("list workspaces");
        sizes.push(page.len());
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(page);
    }
    assert_eq!(sizes, vec![2, 2, 1, 0]);
    assert_eq!(seen, created);

    let mut renamed = created[1].clone();
    renamed.name = "renamed".to_owned();
    renamed.level_precedence = LevelPrecedence::Broadest;
    renamed.updated_at += 1_000;
    store
        .update_workspace(&renamed)
        .await
        .expect("update a workspace");
    assert_eq!(
        store
            .get_workspace(&renamed.id)
            .await
            .expect("read a workspace"),
        renamed
    );

    let unknown = new_workspace("unknown");
    assert_not_found(
        store.get_workspace(&unknown.id).await,
        "get unknown workspace",
    );
    assert_not_found(
        store.update_workspace(&unknown).await,
        "update unknown workspace",
    );
    assert_not_found(
        store.delete_workspace(&unknown.id).await,
        "delete unknown workspace",
    );

    // Deleting a workspace takes its keys, webhooks, events and deliveries with it, and nothing else.
    let doomed = &created[0];
    let kept = &created[2];
    let doomed_hook = webhook(store, &doomed.id, WebhookState::Active).await;
    let kept_hook = webhook(store, &kept.id, WebhookState::Active).await;
    let doomed_key = api_key(&doomed.id);
    store
        .create_api_key(&doomed_key)
        .await
        .expect("create a key");
    let at = now();
    let doomed_event = new_event(&doomed.id, "lead.created.v1", at, &[&doomed_hook]);
    let kept_event = new_event(&kept.id, "lead.created.v1", at, &[&kept_hook]);
    let doomed_published = publish(store, doomed_event.clone()).await;
    let kept_published = publish(store, kept_event.clone()).await;
    assert_eq!(store.count_pending().await.expect("count pending"), 2);

    store
        .delete_workspace(&doomed.id)
        .await
        .expect("delete a workspace");
    assert_not_found(store.get_workspace(&doomed.id).await, "deleted workspace");
    assert_not_found(
        store.get_webhook(&doomed.id, &doomed_hook.id).await,
        "webhook of a deleted workspace",
    );
    assert_not_found(
        store.get_event(&doomed.id, &doomed_event.id).await,
        "event of a deleted workspace",
    );
    assert_not_found(
        store
            .get_delivery(&doomed.id, &doomed_published.delivery_ids[0])
            .await,
        "delivery of a deleted workspace",
    );
    assert_not_found(
        store.get_api_key(&doomed_key.id).await,
        "key of a deleted workspace",
    );
    assert!(
        store
            .list_api_keys(Some(&doomed.id))
            .await
            .expect("list keys")
            .is_empty()
    );
    assert!(
        store
            .list_deliveries(
                &doomed.id,
                &DeliveryFilter::default(),
                &Page {
                    limit: 100,
                    after: None
                }
            )
            .await
            .expect("list deliveries")
            .is_empty()
    );
    assert_eq!(store.count_pending().await.expect("count pending"), 1);
    let claimed = claim_due(store, &claim("node-a", now(), 10)).await;
    assert_eq!(ids_of(&claimed), kept_published.delivery_ids);

    // The other workspace is untouched.
    assert_eq!(
        store.get_workspace(&kept.id).await.expect("read workspace"),
        *kept
    );
    assert_eq!(webhook_now(store, &kept_hook).await, kept_hook);
    let remaining = store
        .list_workspaces(&Page {
            limit: 100,
            after: None,
        })
        .await
        .expect("list workspaces");
    assert_eq!(remaining.len(), 4);
    assert!(remaining.iter().all(|w| w.id != doomed.id));
}

fn api_key(workspace_id: &str) -> ApiKey {
    ApiKey {
        id: new_id(IdKind::ApiKey),
        scope: KeyScope::Workspace,
        workspace_id: Some(workspace_id.to_owned()),
        name: "ci".to_owned(),
        secret_hash: (0u8..32).collect(),
        created_at: now(),
        revoked_at: None,
    }
}

pub async fn api_keys_create_list_and_revoke(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let first = workspace(store).await;
    let second = workspace(store).await;

    let operator = ApiKey {
        id: new_id(IdKind::ApiKey),
        scope: KeyScope::Operator,
        workspace_id: None,
        name: "operator".to_owned(),
        secret_hash: vec![0xff; 32],
        created_at: now(),
        revoked_at: None,
    };
    let first_a = api_key(&first.id);
    let first_b = ApiKey {
        name: "zapier".to_owned(),
        secret_hash: vec![7; 32],
        ..api_key(&first.id)
    };
    let second_a = api_key(&second.id);
    for key in [&operator, &first_a, &first_b, &second_a] {
        store.create_api_key(key).await.expect("create a key");
        assert_eq!(store.get_api_key(&key.id).await.expect("read a key"), *key);
    }
    assert!(
        matches!(
            store.create_api_key(&first_a).await,
            Err(StoreError::Conflict(_))
        ),
        "a second key with the same id is a conflict"
    );

    // Lists are compared as sets: the contract does not fix their order.
    let mut listed = store
        .list_api_keys(Some(&first.id))
        .await
        .expect("list keys");
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    let mut want = vec![first_a.clone(), first_b.clone()];
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, want);

    let mut all = store.list_api_keys(None).await.expect("list all keys");
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let mut want = vec![
        operator.clone(),
        first_a.clone(),
        first_b.clone(),
        second_a.clone(),
    ];
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all, want);

    let revoked_at = now();
    store
        .revoke_api_key(&first_b.id, revoked_at)
        .await
        .expect("revoke a key");
    assert_eq!(
        store
            .get_api_key(&first_b.id)
            .await
            .expect("read a key")
            .revoked_at,
        Some(revoked_at)
    );
    // Revoking again keeps the first revocation time.
    store
        .revoke_api_key(&first_b.id, revoked_at + 5_000)
        .await
        .expect("revoke a key again");
    assert_eq!(
        store
            .get_api_key(&first_b.id)
            .await
            .expect("read a key")
            .revoked_at,
        Some(revoked_at)
    );
    assert_eq!(
        store
            .get_api_key(&first_a.id)
            .await
            .expect("read a key")
            .revoked_at,
        None
    );

    let unknown = new_id(IdKind::ApiKey);
    assert_not_found(store.get_api_key(&unknown).await, "get unknown key");
    assert_not_found(
        store.revoke_api_key(&unknown, revoked_at).await,
        "revoke unknown key",
    );
}

pub async fn custom_event_types_put_replace_and_list(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    assert!(
        store
            .list_custom_event_types()
            .await
            .expect("list event types")
            .is_empty()
    );

    let invoice = EventTypeDef {
        name: "acme.invoice_paid.v1".to_owned(),
        description: "An invoice was paid.".to_owned(),
        group: "billing".to_owned(),
        schema: Some(json!({
            "type": "object",
            "required": ["invoice_id", "amount"],
            "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "number"}}
        })),
        example: Some(json!({"invoice_id": "inv_1", "amount": 12.5})),
    };
    let call = EventTypeDef {
        name: "acme.call_logged.v1".to_owned(),
        description: "A call was logged.".to_owned(),
        group: "calls".to_owned(),
        schema: None,
        example: None,
    };
    let at = now();
    store
        .put_custom_event_type(&invoice, at)
        .await
        .expect("put an event type");
    store
        .put_custom_event_type(&call, at)
        .await
        .expect("put an event type");
    let mut listed = store
        .list_custom_event_types()
        .await
        .expect("list event types");
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, vec![call.clone(), invoice.clone()]);

    let replaced = EventTypeDef {
        description: "An invoice was paid in full.".to_owned(),
        group: "finance".to_owned(),
        schema: None,
        example: Some(json!({"invoice_id": "inv_2"})),
        ..invoice.clone()
    };
    store
        .put_custom_event_type(&replaced, at + 1_000)
        .await
        .expect("replace an event type");
    let mut listed = store
        .list_custom_event_types()
        .await
        .expect("list event types");
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, vec![call, replaced]);
}

pub async fn webhooks_round_trip_page_update_and_delete(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let other = workspace(store).await;
    let mut hooks = Vec::new();
    for state in [
        WebhookState::Active,
        WebhookState::Paused,
        WebhookState::Disabled,
        WebhookState::Active,
        WebhookState::Active,
    ] {
        let hook = webhook(store, &home.id, state).await;
        assert_eq!(webhook_now(store, &hook).await, hook);
        hooks.push(hook);
    }
    let foreign = webhook(store, &other.id, WebhookState::Active).await;
    hooks.sort_by(|a, b| a.id.cmp(&b.id));
    assert!(
        matches!(
            store.create_webhook(&hooks[0]).await,
            Err(StoreError::Conflict(_))
        ),
        "a second webhook with the same id is a conflict"
    );
    assert_not_found(
        store.get_webhook(&other.id, &hooks[0].id).await,
        "webhook read through another workspace",
    );
    assert_not_found(
        store.get_webhook(&home.id, &new_id(IdKind::Webhook)).await,
        "unknown webhook",
    );

    let mut seen = Vec::new();
    let mut after = None;
    let mut sizes = Vec::new();
    loop {
        let page = store
            .list_webhooks(
                &home.id,
                &Page {
                    limit: 2,
                    after: after.clone(),
                },
            )
            .await
            .expect("list webhooks");
        sizes.push(page.len());
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(page);
    }
    assert_eq!(sizes, vec![2, 2, 1, 0]);
    assert_eq!(seen, hooks);

    let mut all = store
        .workspace_webhooks(&home.id)
        .await
        .expect("workspace webhooks");
    all.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all, hooks);
    assert_eq!(
        store
            .workspace_webhooks(&other.id)
            .await
            .expect("workspace webhooks"),
        vec![foreign.clone()]
    );

    // An update saves settings, secrets and state, never health.
    let mut changed = hooks[0].clone();
    changed.spec.url = "https://other.example.com/in".to_owned();
    changed.spec.name = "renamed".to_owned();
    changed.spec.rate_limit_per_s = Some(20);
    changed.spec.retry_schedule = Some(vec![5, 60, 600]);
    changed.spec.event_types = vec!["lead.created.v1".to_owned(), "call.ended.v1".to_owned()];
    changed.previous_secret = Some((changed.secret.clone(), now() + 86_400_000));
    changed.secret = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0".to_owned();
    changed.state = WebhookState::Paused;
    changed.updated_at += 1_000;
    let mut with_health = changed.clone();
    with_health.health = WebhookHealth {
        failing_since: Some(1),
        failures_since_success: 99,
        last_success_at: Some(2),
        last_failure_at: Some(3),
        last_failure_reason: Some("made up".to_owned()),
    };
    store
        .update_webhook(&with_health)
        .await
        .expect("update a webhook");
    assert_eq!(webhook_now(store, &changed).await, changed);

    let mut stranger = changed.clone();
    stranger.workspace_id = other.id.clone();
    assert_not_found(
        store.update_webhook(&stranger).await,
        "update through another workspace",
    );
    assert_not_found(
        store
            .update_webhook(&new_webhook(&home.id, WebhookState::Active))
            .await,
        "update unknown webhook",
    );

    // Deleting a webhook takes its deliveries with it.
    let doomed = &hooks[3];
    let published = publish(
        store,
        new_event(&home.id, "lead.created.v1", now(), &[doomed, &hooks[4]]),
    )
    .await;
    assert_not_found(
        store.delete_webhook(&other.id, &doomed.id).await,
        "delete through another workspace",
    );
    assert_eq!(webhook_now(store, doomed).await, *doomed);
    store
        .delete_webhook(&home.id, &doomed.id)
        .await
        .expect("delete a webhook");
    assert_not_found(
        store.get_webhook(&home.id, &doomed.id).await,
        "deleted webhook",
    );
    assert_not_found(
        store.delete_webhook(&home.id, &doomed.id).await,
        "delete a deleted webhook",
    );
    assert_not_found(
        store
            .get_delivery(&home.id, &published.delivery_ids[0])
            .await,
        "delivery of a deleted webhook",
    );
    assert_eq!(
        status_of(store, &home.id, &published.delivery_ids[1]).await,
        DeliveryStatus::Pending
    );
    assert_eq!(
        store
            .workspace_webhooks(&home.id)
            .await
            .expect("workspace webhooks")
            .len(),
        4
    );
}

pub async fn enable_webhook_resets_health_and_state(backend: Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let home = workspace(store).await;
    let hook = webhook(store, &home.id, WebhookState::Active).await;
    publish_many(store, &hook, 2, now()).await;
    let claimed = claim_due(store, &claim("node-a", now(), 10)).await;
    assert_eq!(claimed.len(), 2);
    let first_failure = now() - 60_000;
    let outcomes = claimed
        .iter()
        .map(|c| {
            outcome(
                &c.delivery_id,
                &hook.id,
                attempt(first_failure, 40, Some(503)),
                NextState::RetryAt(now() + 3_600_000),
            )
        })
        .collect();
    record(store, "node-a", outcomes, &quiet_policy()).await;
    let failing = webhook_now(store, &hook).await;
    assert_eq!(failing.health.failures_since_success, 2);
    assert_eq!(failing.health.failing_since, Some(first_failure));

    let mut off = failing.clone();
    off.state = WebhookState::Disabled;
    off.disabled_reason = Some("turned off by hand".to_owned());
    store.update_webhook(&off).await.expect("disable a webhook");
    assert_eq!(
        webhook_now(store, &hook).await.state,
        WebhookState::Disabled
    );

    let enabled_at = now();
    store
        .enable_webhook(&home.id, &hook.id, enabled_at)
        .await
        .expect("enable a webhook");
    let enabled = webhook_now(store, &hook).await;
    assert_eq!(enabled.state, WebhookState::Active);
    assert_eq!(enabled.disabled_reason, None);
    assert_eq!(enabled.health.failing_since, None);
    assert_eq!(enabled.health.failures_since_success, 0);
    assert_eq!(enabled.updated_at, enabled_at);
    // Settings are untouched. (Whether the last failure's time and reason are kept as history is
    // not part of the contract, so they are not compared.)
    assert_eq!(enabled.spec, hook.spec);
    assert_eq!(enabled.secret, hook.secret);

    assert_not_found(
        store
            .enable_webhook(&home.id, &new_id(IdKind::Webhook), enabled_at)
            .await,
        "enable unknown webhook",
    );
    let other = workspace(store).await;
    assert_not_found(
        store.enable_webhook(&other.id, &hook.id, enabled_at).await,
        "enable through another workspace",
    );
}

/// Configuration writes that read before they write (an update, an enable, a workspace's
/// deletion) go through while the hot path commits without a pause; none is refused as busy.
pub async fn configuration_writes_go_through_while_publishes_stream(backend: Backend) {
    let store = backend.open().await;
    let home = workspace(store.as_ref()).await;
    let target = webhook(store.as_ref(), &home.id, WebhookState::Active).await;
    let mut edited = target.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (store, stop, target) = (store.clone(), stop.clone(), target.clone());
        let workspace = home.id.clone();
        publishers.spawn(async move {
            let mut published = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let batch = (0..20)
                    .map(|_| new_event(&workspace, "lead.created.v1", now(), &[&target]))
                    .collect();
                store.publish(batch).await.expect("publish a batch");
                published += 20;
            }
            published
        });
    }
    for round in 0..60 {
        edited.spec.description = format!("edit {round}");
        store
            .update_webhook(&edited)
            .await
            .expect("update a webhook while publishes stream");
        store
            .enable_webhook(&home.id, &target.id, now())
            .await
            .expect("enable a webhook while publishes stream");
        let other = workspace(store.as_ref()).await;
        store
            .delete_workspace(&other.id)
            .await
            .expect("delete a workspace while publishes stream");
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut published = 0;
    while let Some(done) = publishers.join_next().await {
        published += done.expect("a publisher");
    }
    assert!(published > 0, "the publishes ran alongside");
    let stored = store
        .get_webhook(&home.id, &target.id)
        .await
        .expect("read the webhook");
    assert_eq!(stored.spec.description, "edit 59");
}
