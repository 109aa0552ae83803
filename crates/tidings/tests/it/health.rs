//! Endpoint health: auto-disable after a run of failures, 410 Gone, enabling again, paused and
//! disabled webhooks holding or skipping their deliveries, operator notifications, and retention.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tidings::config::{FlagOverrides, Settings};

use crate::helpers::{
    Received, Receiver, Reply, TestApp, spawn_app_with, standard_signature_verifies, str_of,
};

const EVENT_TYPE: &str = "email.sent.v1";
const WAIT: Duration = Duration::from_secs(15);

/// Publishes one event that the receiver fails permanently and waits until it is failed.
async fn publish_and_fail(app: &TestApp, ws: &str) {
    let (_, delivery) = app.publish_one(ws, EVENT_TYPE).await;
    app.wait_for_status(ws, &delivery, "failed", WAIT).await;
}

fn attempt_count(delivery: &Value) -> usize {
    delivery["attempts"].as_array().expect("attempts").len()
}

fn operator_secret() -> String {
    format!("whsec_{}", BASE64.encode([7u8; 32]))
}

// ---------------------------------------------------------------------------------------------
// Auto-disable
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn webhook_failing_long_enough_with_enough_attempts_is_disabled_but_not_before_the_minimum() {
    let app = spawn_app_with(|s| {
        s.auto_disable_after_s = 1;
        s.auto_disable_min_failures = 10;
    })
    .await;
    let receiver = Receiver::answering(Reply::status(404)).await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, &[EVENT_TYPE], json!({}))
        .await;
    let hook_id = str_of(&hook["id"]);

    for _ in 0..9 {
        publish_and_fail(&app, &ws).await;
    }
    // Failing for longer than auto_disable_after, but with fewer than the minimum attempts.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let hook = app.webhook(&ws, &hook_id).await;
    assert_eq!(
        hook["state"], "active",
        "9 failures are not enough: {hook:#}"
    );
    assert_eq!(hook["disabled_reason"], Value::Null);
    assert_eq!(hook["health"]["failures_since_success"], 9, "{hook:#}");
    assert!(hook["health"]["failing_since"].is_string(), "{hook:#}");
    assert_eq!(hook["health"]["last_success_at"], Value::Null);
    assert!(hook["health"]["last_failure_at"].is_string(), "{hook:#}");
    assert_eq!(hook["health"]["last_failure_reason"], "HTTP 404");

    // The tenth failed attempt, more than a second after the first, disables it.
    publish_and_fail(&app, &ws).await;
    let hook = app
        .wait_for_webhook(&ws, &hook_id, WAIT, |h| h["state"] == "disabled")
        .await;
    let reason = hook["disabled_reason"].as_str().expect("a disabled reason");
    assert!(reason.contains("failing"), "reason: {reason}");
    assert_eq!(hook["health"]["failures_since_success"], 10, "{hook:#}");
}

#[tokio::test]
async fn enough_failures_within_auto_disable_after_do_not_disable() {
    let app = spawn_app_with(|s| {
        s.auto_disable_after_s = 3600;
        s.auto_disable_min_failures = 3;
    })
    .await;
    let receiver = Receiver::answering(Reply::status(404)).await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, &[EVENT_TYPE], json!({}))
        .await;
    let hook_id = str_of(&hook["id"]);
    for _ in 0..4 {
        publish_and_fail(&app, &ws).await;
    }
    let hook = app.webhook(&ws, &hook_id).await;
    assert_eq!(
        hook["state"], "active",
        "not failing for an hour yet: {hook:#}"
    );
    assert_eq!(hook["health"]["failures_since_success"], 4, "{hook:#}");
}

#[tokio::test]
async fn retried_server_errors_count_towards_auto_disable() {
    let app = spawn_app_with(|s| {
        s.auto_disable_after_s = 1;
        s.auto_disable_min_failures = 3;
    })
    .await;
    let receiver = Receiver::answering(Reply::status(500)).await;
    let (ws, hook) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "retry_schedule": [1, 1] }),
        )
        .await;
    let hook_id = str_of(&hook["id"]);
    let (_, delivery) = app.publish_one(&ws, EVENT_TYPE).await;
    // Three attempts a second apart: the third is at least a second after the first.
    let hook = app
        .wait_for_webhook(&ws, &hook_id, WAIT, |h| h["state"] == "disabled")
        .await;
    assert!(
        hook["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("failing")),
        "{hook:#}"
    );
    let delivery = app.delivery(&ws, &delivery).await;
    assert_eq!(attempt_count(&delivery), 3, "{delivery:#}");
}

#[tokio::test]
async fn success_resets_endpoint_health() {
    let app = spawn_app_with(|s| {
        s.auto_disable_after_s = 1;
        s.auto_disable_min_failures = 3;
    })
    .await;
    let receiver = Receiver::answering(Reply::status(404)).await;
    receiver.script([Reply::status(404), Reply::status(404), Reply::status(200)]);
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, &[EVENT_TYPE], json!({}))
        .await;
    let hook_id = str_of(&hook["id"]);

    publish_and_fail(&app, &ws).await;
    publish_and_fail(&app, &ws).await;
    let hook = app.webhook(&ws, &hook_id).await;
    assert_eq!(hook["health"]["failures_since_success"], 2, "{hook:#}");
    assert!(hook["health"]["failing_since"].is_string(), "{hook:#}");
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let (_, delivered) = app.publish_one(&ws, EVENT_TYPE).await;
    app.wait_for_status(&ws, &delivered, "delivered", WAIT)
        .await;
    let hook = app.webhook(&ws, &hook_id).await;
    assert_eq!(hook["health"]["failures_since_success"], 0, "{hook:#}");
    assert_eq!(hook["health"]["failing_since"], Value::Null, "{hook:#}");
    assert!(hook["health"]["last_success_at"].is_string(), "{hook:#}");
    assert_eq!(hook["health"]["last_failure_reason"], "HTTP 404");

    // Without the reset this would be the third failure of a run older than a second.
    publish_and_fail(&app, &ws).await;
    let hook = app.webhook(&ws, &hook_id).await;
    assert_eq!(hook["state"], "active", "{hook:#}");
    assert_eq!(hook["health"]["failures_since_success"], 1, "{hook:#}");
}

// ---------------------------------------------------------------------------------------------
// Disabled, enabled, paused
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn disabled_webhook_skips_new_events_and_enable_turns_it_back_on() {
    let app = spawn_app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(410)]);
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, &[EVENT_TYPE], json!({}))
        .await;
    let hook_id = str_of(&hook["id"]);
    publish_and_fail(&app, &ws).await;
    let hook = app
        .wait_for_webhook(&ws, &hook_id, WAIT, |h| h["state"] == "disabled")
        .await;
    assert_eq!(hook["disabled_reason"], "gone");
    assert_eq!(hook["health"]["failures_since_success"], 1);

    let (_, skipped) = app.publish_one(&ws, EVENT_TYPE).await;
    let delivery = app
        .wait_for_status(&ws, &skipped, "skipped", Duration::from_secs(5))
        .await;
    assert_eq!(attempt_count(&delivery), 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.requests().len(),
        1,
        "nothing is sent while disabled"
    );

    let (status, enabled) = app
        .post(
            &format!("/v1/workspaces/{ws}/webhooks/{hook_id}/enable"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{enabled}");
    assert_eq!(enabled["state"], "active", "{enabled:#}");
    assert_eq!(enabled["disabled_reason"], Value::Null);
    assert_eq!(enabled["health"]["failures_since_success"], 0);
    assert_eq!(enabled["health"]["failing_since"], Value::Null);
    let hook = app.webhook(&ws, &hook_id).await;
    assert_eq!(hook["state"], "active");

    let (event_id, delivery) = app.publish_one(&ws, EVENT_TYPE).await;
    app.wait_for_status(&ws, &delivery, "delivered", WAIT).await;
    let requests = receiver.requests();
    assert_eq!(requests.last().expect("a request").json()["id"], event_id);
    assert_eq!(
        app.delivery(&ws, &skipped).await["status"],
        "skipped",
        "enabling does not resend what was skipped"
    );
}

#[tokio::test]
async fn paused_webhook_holds_new_deliveries_and_resuming_sends_them() {
    let app = spawn_app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, &[EVENT_TYPE], json!({}))
        .await;
    let hook_id = str_of(&hook["id"]);
    let path = format!("/v1/workspaces/{ws}/webhooks/{hook_id}");
    let (status, paused) = app.patch(&path, json!({ "state": "paused" })).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["state"], "paused");

    let (first_event, first) = app.publish_one(&ws, EVENT_TYPE).await;
    let (second_event, second) = app.publish_one(&ws, EVENT_TYPE).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receiver.requests().is_empty(),
        "nothing is sent while paused"
    );
    for id in [&first, &second] {
        let delivery = app.delivery(&ws, id).await;
        assert_eq!(delivery["status"], "pending", "{delivery:#}");
        assert_eq!(attempt_count(&delivery), 0);
    }

    let (status, resumed) = app.patch(&path, json!({ "state": "active" })).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    for id in [&first, &second] {
        app.wait_for_status(&ws, id, "delivered", WAIT).await;
    }
    let mut sent: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.json()["id"].as_str().expect("id").to_owned())
        .collect();
    sent.sort();
    let mut expected = vec![first_event, second_event];
    expected.sort();
    assert_eq!(sent, expected, "each held delivery is sent once");
}

#[tokio::test]
async fn deliveries_queued_again_while_paused_wait_for_the_webhook_to_resume() {
    let app = spawn_app_with(|_| {}).await;
    let receiver = Receiver::answering(Reply::status(404)).await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, &[EVENT_TYPE], json!({}))
        .await;
    let hook_id = str_of(&hook["id"]);
    let path = format!("/v1/workspaces/{ws}/webhooks/{hook_id}");
    let (_, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;
    app.wait_for_status(&ws, &delivery_id, "failed", WAIT).await;
    receiver.set_fallback(Reply::status(200));

    let (status, _) = app.patch(&path, json!({ "state": "paused" })).await;
    assert_eq!(status, StatusCode::OK);
    let (status, retried) = app
        .post(
            &format!("/v1/workspaces/{ws}/deliveries/{delivery_id}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(retried["status"], "pending");
    assert_eq!(
        retried["next_attempt_at"],
        Value::Null,
        "held while paused: {retried:#}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.requests().len(), 1, "nothing is sent while paused");

    let (status, _) = app.patch(&path, json!({ "state": "active" })).await;
    assert_eq!(status, StatusCode::OK);
    let delivered = app
        .wait_for_status(&ws, &delivery_id, "delivered", WAIT)
        .await;
    assert_eq!(attempt_count(&delivered), 2, "{delivered:#}");
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn gone_skips_the_webhooks_other_waiting_deliveries() {
    let app = spawn_app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(500), Reply::status(410)]);
    let (ws, hook) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "retry_schedule": [60] }),
        )
        .await;
    let hook_id = str_of(&hook["id"]);

    // The first delivery fails with 500 and waits a minute for its retry.
    let (_, waiting) = app.publish_one(&ws, EVENT_TYPE).await;
    app.wait_for_delivery(&ws, &waiting, WAIT, |d| {
        d["status"] == "pending" && attempt_count(d) == 1
    })
    .await;
    // The second gets 410: the webhook is disabled and the waiting retry is skipped.
    publish_and_fail(&app, &ws).await;
    let hook = app
        .wait_for_webhook(&ws, &hook_id, WAIT, |h| h["state"] == "disabled")
        .await;
    assert_eq!(hook["disabled_reason"], "gone");
    let delivery = app
        .wait_for_status(&ws, &waiting, "skipped", Duration::from_secs(5))
        .await;
    assert_eq!(delivery["next_attempt_at"], Value::Null, "{delivery:#}");
    assert_eq!(receiver.requests().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Operator notifications
// ---------------------------------------------------------------------------------------------

/// Waits until the operator receiver got a notification of `kind`.
async fn wait_for_notification(operator: &Receiver, kind: &str) -> Received {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = operator
            .requests()
            .into_iter()
            .find(|r| r.json()["type"] == kind)
        {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} notification arrived: {:?}",
            operator.requests()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn operator_is_notified_of_failed_deliveries_and_disabled_webhooks_with_signed_events() {
    let operator = Receiver::start().await;
    let secret = operator_secret();
    let url = operator.url.clone();
    let app_secret = secret.clone();
    let app = spawn_app_with(move |s| {
        s.operator_webhook_url = url;
        s.operator_webhook_secret = app_secret;
    })
    .await;
    let receiver = Receiver::answering(Reply::status(410)).await;
    receiver.script([Reply::status(404)]);
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, &[EVENT_TYPE], json!({}))
        .await;
    let hook_id = str_of(&hook["id"]);

    let (event_id, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;
    app.wait_for_status(&ws, &delivery_id, "failed", WAIT).await;
    let failed = wait_for_notification(&operator, "tidings.delivery.failed").await;
    let body = failed.json();
    assert_eq!(body["data"]["delivery_id"], delivery_id, "{body:#}");
    assert_eq!(body["data"]["event_id"], event_id);
    assert_eq!(body["data"]["webhook_id"], hook_id);
    assert_eq!(body["data"]["workspace_id"], ws);
    assert!(
        standard_signature_verifies(&secret, &failed),
        "{:?}",
        failed.headers
    );
    assert_eq!(failed.header("webhook-id"), body["id"].as_str());
    assert_eq!(failed.header("content-type"), Some("application/json"));

    publish_and_fail(&app, &ws).await;
    let disabled = wait_for_notification(&operator, "tidings.webhook.disabled").await;
    let body = disabled.json();
    assert_eq!(body["data"]["webhook_id"], hook_id, "{body:#}");
    assert_eq!(body["data"]["workspace_id"], ws);
    assert_eq!(body["data"]["reason"], "gone");
    assert!(
        standard_signature_verifies(&secret, &disabled),
        "{:?}",
        disabled.headers
    );
    assert!(
        !standard_signature_verifies(&format!("whsec_{}", BASE64.encode([8u8; 32])), &disabled),
        "another secret does not verify"
    );
    assert_ne!(failed.header("webhook-id"), disabled.header("webhook-id"));
}

#[tokio::test]
async fn operator_webhook_url_needs_a_whsec_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tidings.toml");
    let load = |toml: String| {
        std::fs::write(&file, toml).expect("write config");
        Settings::load(Some(&file), FlagOverrides::default())
    };

    let error = load("operator_webhook_url = \"http://127.0.0.1:9/ops\"\n".to_owned())
        .expect_err("a URL without a secret is refused");
    assert!(
        error.to_string().contains("operator_webhook_secret"),
        "{error}"
    );
    let error = load(
        "operator_webhook_url = \"http://127.0.0.1:9/ops\"\noperator_webhook_secret = \"hunter2\"\n"
            .to_owned(),
    )
    .expect_err("a secret that is not whsec_ is refused");
    assert!(
        error.to_string().contains("operator_webhook_secret"),
        "{error}"
    );
    let settings = load(format!(
        "operator_webhook_url = \"http://127.0.0.1:9/ops\"\noperator_webhook_secret = \"{}\"\n",
        operator_secret()
    ))
    .expect("a URL with a whsec_ secret loads");
    assert_eq!(settings.operator_webhook_url, "http://127.0.0.1:9/ops");
    let defaults = load(String::new()).expect("defaults load");
    assert!(defaults.operator_webhook_url.is_empty(), "off by default");
}

// ---------------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn retention_deletes_finished_deliveries_and_their_events_but_keeps_pending_ones() {
    let app = spawn_app_with(|s| {
        s.retention_days = 1.0 / 86_400.0;
        s.retention_interval_s = 1;
    })
    .await;
    let receiver = Receiver::start().await;
    let (ws, _) = app
        .workspace_with_webhook(&receiver.url, &[EVENT_TYPE], json!({}))
        .await;
    let failing = Receiver::answering(Reply::status(404)).await;
    let (failing_ws, _) = app
        .workspace_with_webhook(&failing.url, &[EVENT_TYPE], json!({}))
        .await;
    let (held_ws, _) = app
        .workspace_with_webhook(&receiver.url, &[EVENT_TYPE], json!({ "state": "paused" }))
        .await;

    let (delivered_event, delivered) = app.publish_one(&ws, EVENT_TYPE).await;
    app.wait_for_status(&ws, &delivered, "delivered", WAIT)
        .await;
    let (failed_event, failed) = app.publish_one(&failing_ws, EVENT_TYPE).await;
    app.wait_for_status(&failing_ws, &failed, "failed", WAIT)
        .await;
    let (held_event, held) = app.publish_one(&held_ws, EVENT_TYPE).await;

    let deadline = Instant::now() + WAIT;
    let gone = |ws: String, path: String| {
        let app = &app;
        async move { app.get(&format!("/v1/workspaces/{ws}/{path}")).await.0 == StatusCode::NOT_FOUND }
    };
    loop {
        let all_gone = gone(ws.clone(), format!("deliveries/{delivered}")).await
            && gone(ws.clone(), format!("events/{delivered_event}")).await
            && gone(failing_ws.clone(), format!("deliveries/{failed}")).await
            && gone(failing_ws.clone(), format!("events/{failed_event}")).await;
        if all_gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "finished deliveries and their events were never purged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let delivery = app.delivery(&held_ws, &held).await;
    assert_eq!(delivery["status"], "pending", "{delivery:#}");
    let (status, event) = app
        .get(&format!("/v1/workspaces/{held_ws}/events/{held_event}"))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the held delivery's event is kept: {event}"
    );
}

#[tokio::test]
async fn default_retention_keeps_finished_deliveries() {
    let app = spawn_app_with(|s| s.retention_interval_s = 1).await;
    let receiver = Receiver::start().await;
    let (ws, _) = app
        .workspace_with_webhook(&receiver.url, &[EVENT_TYPE], json!({}))
        .await;
    let (event_id, delivery) = app.publish_one(&ws, EVENT_TYPE).await;
    app.wait_for_status(&ws, &delivery, "delivered", WAIT).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(app.delivery(&ws, &delivery).await["status"], "delivered");
    let (status, event) = app
        .get(&format!("/v1/workspaces/{ws}/events/{event_id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
}
