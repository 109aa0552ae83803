//! Delivery operations: test sends, manual retry, bulk retrigger, the webhook summary, secret
//! rotation (verified with the official Python `standardwebhooks` package) and the delivery log.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::helpers::{
    Received, Receiver, Reply, TestApp, hmac_sha256_hex, random_standard_secret, spawn_app,
    spawn_app_with, standard_signature_verifies, str_of,
};

const SENT: &str = "email.sent.v1";
const OPENED: &str = "email.opened.v1";
const WAIT: Duration = Duration::from_secs(15);
/// Long before any delivery a test makes.
const LONG_AGO: &str = "2000-01-01T00:00:00Z";
/// What every webhook made here subscribes to.
const HOOK_TYPES: &[&str] = &[SENT, OPENED];

/// Publishes `count` events and waits until each delivery reached `status`: (event id, delivery).
async fn publish_until(
    app: &TestApp,
    ws: &str,
    count: usize,
    status: &str,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for _ in 0..count {
        let (event, delivery) = app.publish_one(ws, SENT).await;
        let done = app.wait_for_status(ws, &delivery, status, WAIT).await;
        out.push((event, done));
    }
    out
}

fn hook_path(ws: &str, hook: &Value, rest: &str) -> String {
    format!("/v1/workspaces/{ws}/webhooks/{}{rest}", str_of(&hook["id"]))
}

/// How many requests carried each `webhook-id`.
fn ids_seen(receiver: &Receiver) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for request in receiver.requests() {
        *seen
            .entry(request.header("webhook-id").unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    seen
}

// ---------------------------------------------------------------------------------------------
// Test sends
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn test_send_signs_the_catalog_example_and_returns_the_attempt() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(Reply::status(200).with_body("thanks, got it")).await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    let secret = str_of(&hook["secret"]);

    let (status, result) = app
        .post(
            &hook_path(&ws, &hook, "/test"),
            json!({"event_type": OPENED}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["status"], "delivered", "{result:#}");
    assert_eq!(result["status_code"], 200, "{result:#}");
    assert!(result["duration_ms"].as_i64().is_some(), "{result:#}");
    assert_eq!(result["response_excerpt"], "thanks, got it", "{result:#}");

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "the test was sent once, synchronously");
    let request = &requests[0];
    let body = request.json();
    assert_eq!(body["type"], OPENED);
    assert_eq!(
        body["data"],
        app.example(OPENED).await,
        "the catalog example"
    );
    assert_eq!(request.header("webhook-id"), result["event_id"].as_str());
    assert!(
        standard_signature_verifies(&secret, request),
        "the test send is signed"
    );

    let delivery_id = str_of(&result["delivery_id"]);
    let (status, list) = app
        .get(&format!(
            "/v1/workspaces/{ws}/deliveries?webhook_id={}",
            str_of(&hook["id"])
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let listed = list["data"]
        .as_array()
        .expect("a page of deliveries")
        .iter()
        .find(|d| d["id"] == delivery_id.as_str())
        .unwrap_or_else(|| panic!("the test delivery is in the log: {list:#}"))
        .clone();
    assert_eq!(listed["is_test"], true, "{listed:#}");
    assert_eq!(listed["status"], "delivered", "{listed:#}");

    let detail = app.delivery(&ws, &delivery_id).await;
    assert_eq!(detail["is_test"], true, "{detail:#}");
    assert_eq!(detail["attempts"].as_array().expect("attempts").len(), 1);
    assert_eq!(detail["attempts"][0]["status_code"], 200, "{detail:#}");
}

#[tokio::test]
async fn failed_test_send_is_reported_and_never_retried() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(Reply::status(500)).await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({"retry_schedule": [1]}))
        .await;

    let (status, result) = app
        .post(&hook_path(&ws, &hook, "/test"), json!({"event_type": SENT}))
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["status"], "failed", "{result:#}");
    assert_eq!(result["status_code"], 500, "{result:#}");

    // A real delivery would be retried after 1 s; a test send never is.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        receiver.requests().len(),
        1,
        "the test send was not retried"
    );
    let detail = app.delivery(&ws, &str_of(&result["delivery_id"])).await;
    assert_eq!(detail["status"], "failed", "{detail:#}");
    assert_eq!(detail["attempt_count"], 1, "{detail:#}");
    assert!(detail["next_attempt_at"].is_null(), "{detail:#}");
}

#[tokio::test]
async fn test_send_of_an_unknown_event_type_is_422() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    let (status, body) = app
        .post(
            &hook_path(&ws, &hook, "/test"),
            json!({"event_type": "no.such.type.v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(receiver.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn failing_test_sends_never_disable_the_webhook_or_touch_its_health() {
    let app = spawn_app_with(|s| {
        s.auto_disable_after_s = 0;
        s.auto_disable_min_failures = 1;
    })
    .await;
    let receiver = Receiver::answering(Reply::status(500)).await;
    let gone = Receiver::answering(Reply::status(410)).await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({"retry_schedule": [1]}))
        .await;
    let gone_hook = app.add_webhook(&ws, &gone.url, HOOK_TYPES, json!({})).await;

    for _ in 0..3 {
        for target in [&hook, &gone_hook] {
            let (status, result) = app
                .post(
                    &hook_path(&ws, target, "/test"),
                    json!({"event_type": SENT}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{result}");
            assert_eq!(result["status"], "failed", "{result:#}");
        }
    }
    for target in [&hook, &gone_hook] {
        let (status, got) = app.get(&hook_path(&ws, target, "")).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["state"], "active", "{got:#}");
        assert_eq!(got["health"]["failures_since_success"], 0, "{got:#}");
        assert!(got["health"]["last_failure_at"].is_null(), "{got:#}");
    }

    // The same failure from a real delivery does disable it with these settings.
    let (_, delivery) = {
        let data = app.example(OPENED).await;
        let published = app
            .publish(&ws, json!({"type": OPENED, "data": data}))
            .await;
        (published["id"].clone(), published["deliveries"].clone())
    };
    assert_eq!(delivery.as_array().map(Vec::len), Some(2), "{delivery}");
    for target in [&hook, &gone_hook] {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (_, got) = app.get(&hook_path(&ws, target, "")).await;
            if got["state"] == "disabled" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a real failure disables: {got:#}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Manual retry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn manual_retry_resends_a_failed_delivery_with_the_same_webhook_id() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(404)]);
    let (ws, _) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    let (event_id, delivery_id) = app.publish_one(&ws, SENT).await;
    let failed = app.wait_for_status(&ws, &delivery_id, "failed", WAIT).await;
    assert_eq!(failed["attempt_count"], 1, "a 404 is permanent: {failed:#}");

    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{ws}/deliveries/{delivery_id}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let done = app
        .wait_for_status(&ws, &delivery_id, "delivered", WAIT)
        .await;
    assert_eq!(done["attempt_count"], 2, "{done:#}");
    assert_eq!(done["attempts"].as_array().expect("attempts").len(), 2);
    let requests = receiver.wait_for(2, WAIT).await;
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.header("webhook-id"), Some(event_id.as_str()));
    }
}

#[tokio::test]
async fn manual_retry_of_an_unknown_or_foreign_delivery_is_404() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(Reply::status(404)).await;
    let (ws, _) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    let (_, delivery_id) = app.publish_one(&ws, SENT).await;
    app.wait_for_status(&ws, &delivery_id, "failed", WAIT).await;

    let mut unknown = delivery_id.clone();
    let last = unknown.pop().expect("non-empty");
    unknown.push(if last == 'a' { 'b' } else { 'a' });
    for id in [unknown.as_str(), "nonsense"] {
        let (status, body) = app
            .post(
                &format!("/v1/workspaces/{ws}/deliveries/{id}/retry"),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {body}");
    }

    let other = app.create_workspace().await;
    let (_, other_key) = app.workspace_key(&other).await;
    for path in [
        format!("/v1/workspaces/{other}/deliveries/{delivery_id}/retry"),
        format!("/v1/workspaces/{ws}/deliveries/{delivery_id}/retry"),
    ] {
        let (status, body) = app
            .request(
                reqwest::Method::POST,
                &path,
                Some(&other_key),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 1, "nothing was re-sent");
    let still = app.delivery(&ws, &delivery_id).await;
    assert_eq!(still["status"], "failed", "{still:#}");
}

// ---------------------------------------------------------------------------------------------
// Retrigger
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn retrigger_resends_failed_deliveries_in_the_range_only() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(Reply::status(404)).await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    let before = publish_until(&app, &ws, 2, "failed").await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let inside = publish_until(&app, &ws, 3, "failed").await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let after = publish_until(&app, &ws, 1, "failed").await;
    receiver.set_fallback(Reply::status(200));

    let since = str_of(&inside[0].1["created_at"]);
    let until = str_of(&after[0].1["created_at"]);
    let (status, body) = app
        .post(
            &hook_path(&ws, &hook, "/retrigger"),
            json!({"since": since, "until": until, "status": "failed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["retriggered"], 3, "{body}");

    for (_, delivery) in &inside {
        let done = app
            .wait_for_status(&ws, &str_of(&delivery["id"]), "delivered", WAIT)
            .await;
        assert_eq!(done["attempt_count"], 2, "{done:#}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = ids_seen(&receiver);
    for (event, _) in &inside {
        assert_eq!(
            seen.get(event),
            Some(&2),
            "re-sent with the same webhook-id"
        );
    }
    for (event, delivery) in before.iter().chain(&after) {
        assert_eq!(seen.get(event), Some(&1), "outside the range: {seen:?}");
        let untouched = app.delivery(&ws, &str_of(&delivery["id"])).await;
        assert_eq!(untouched["status"], "failed", "{untouched:#}");
        assert_eq!(untouched["attempt_count"], 1, "{untouched:#}");
    }
}

#[tokio::test]
async fn retrigger_twice_does_not_send_anything_twice() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(Reply::status(404)).await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    let failed = publish_until(&app, &ws, 3, "failed").await;
    receiver.set_fallback(Reply::status(200));

    // Paused: retriggered deliveries stay pending until it is resumed.
    let (status, body) = app
        .patch(&hook_path(&ws, &hook, ""), json!({"state": "paused"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let retrigger = json!({"since": LONG_AGO, "status": "failed"});
    let (status, first) = app
        .post(&hook_path(&ws, &hook, "/retrigger"), retrigger.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["retriggered"], 3, "{first}");
    let (status, second) = app
        .post(&hook_path(&ws, &hook, "/retrigger"), retrigger)
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["retriggered"], 0, "already pending: {second}");

    let (status, body) = app
        .patch(&hook_path(&ws, &hook, ""), json!({"state": "active"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (_, delivery) in &failed {
        let done = app
            .wait_for_status(&ws, &str_of(&delivery["id"]), "delivered", WAIT)
            .await;
        assert_eq!(done["attempt_count"], 2, "{done:#}");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(receiver.requests().len(), 6, "each event re-sent once");
    let seen = ids_seen(&receiver);
    for (event, _) in &failed {
        assert_eq!(seen.get(event), Some(&2), "{seen:?}");
    }
}

#[tokio::test]
async fn retrigger_rejects_pending_status_and_an_empty_range() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    for body in [
        json!({"since": LONG_AGO, "status": "pending"}),
        json!({"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}),
        json!({"since": "2030-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z"}),
        json!({"since": "yesterday"}),
    ] {
        let (status, got) = app
            .post(&hook_path(&ws, &hook, "/retrigger"), body.clone())
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {got}");
    }
}

#[tokio::test]
async fn skipped_deliveries_are_sent_by_retrigger_after_enable() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(410)]);
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    publish_until(&app, &ws, 1, "failed").await;
    let (_, got) = app.get(&hook_path(&ws, &hook, "")).await;
    assert_eq!(got["state"], "disabled", "a 410 disables: {got:#}");

    let skipped = publish_until(&app, &ws, 2, "skipped").await;
    assert_eq!(receiver.requests().len(), 1, "nothing sent while disabled");
    let (status, body) = app.post(&hook_path(&ws, &hook, "/enable"), json!({})).await;
    assert!(status.is_success(), "{status}: {body}");
    let (status, body) = app
        .post(
            &hook_path(&ws, &hook, "/retrigger"),
            json!({"since": LONG_AGO, "status": "skipped"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["retriggered"], 2, "{body}");
    for (_, delivery) in &skipped {
        app.wait_for_status(&ws, &str_of(&delivery["id"]), "delivered", WAIT)
            .await;
    }
    let seen = ids_seen(&receiver);
    for (event, _) in &skipped {
        assert_eq!(seen.get(event), Some(&1), "{seen:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn summary_counts_by_status_and_type_with_latency_and_last_outcomes() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    publish_until(&app, &ws, 2, "delivered").await;
    receiver.set_fallback(Reply::status(404));
    publish_until(&app, &ws, 1, "failed").await;
    let (_, opened) = app.publish_one(&ws, OPENED).await;
    app.wait_for_status(&ws, &opened, "failed", WAIT).await;

    let check = |summary: &Value| {
        assert_eq!(summary["counts"]["delivered"], 2, "{summary:#}");
        assert_eq!(summary["counts"]["failed"], 2, "{summary:#}");
        assert_eq!(summary["counts"]["pending"], 0, "{summary:#}");
        assert_eq!(summary["counts"]["skipped"], 0, "{summary:#}");
        assert_eq!(
            summary["by_event_type"][SENT]["delivered"], 2,
            "{summary:#}"
        );
        assert_eq!(summary["by_event_type"][SENT]["failed"], 1, "{summary:#}");
        assert_eq!(
            summary["by_event_type"][OPENED]["delivered"], 0,
            "{summary:#}"
        );
        assert_eq!(summary["by_event_type"][OPENED]["failed"], 1, "{summary:#}");
        assert_eq!(summary["success_rate"].as_f64(), Some(0.5), "{summary:#}");
    };
    let (status, summary) = app.get(&hook_path(&ws, &hook, "/summary")).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    check(&summary);
    assert!(
        summary["latency"]["attempts"].as_u64().unwrap_or(0) > 0,
        "{summary:#}"
    );
    assert!(summary["latency"]["p50_ms"].is_number(), "{summary:#}");
    assert!(summary["latency"]["p95_ms"].is_number(), "{summary:#}");
    assert!(summary["last_success_at"].is_string(), "{summary:#}");
    let reason = str_of(&summary["last_failure"]["reason"]);
    assert!(reason.contains("404"), "{reason}");
    assert!(summary["last_failure"]["at"].is_string(), "{summary:#}");

    // Test sends are not counted.
    let (status, sent) = app
        .post(&hook_path(&ws, &hook, "/test"), json!({"event_type": SENT}))
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let (_, summary) = app.get(&hook_path(&ws, &hook, "/summary")).await;
    check(&summary);

    // A window without them.
    let (status, empty) = app
        .get(&hook_path(
            &ws,
            &hook,
            "/summary?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z",
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{empty}");
    for key in ["pending", "delivered", "failed", "skipped"] {
        assert_eq!(empty["counts"][key], 0, "{empty:#}");
    }
    assert!(empty["success_rate"].is_null(), "{empty:#}");
    assert_eq!(empty["latency"]["attempts"], 0, "{empty:#}");
    assert!(
        empty["by_event_type"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "{empty:#}"
    );

    // An explicit window around them counts them.
    let (status, around) = app
        .get(&hook_path(
            &ws,
            &hook,
            "/summary?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z",
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{around}");
    check(&around);

    for query in [
        "?since=2030-01-01T00:00:00Z&until=2030-01-01T00:00:00Z",
        "?since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z",
    ] {
        let (status, body) = app
            .get(&hook_path(&ws, &hook, &format!("/summary{query}")))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// Verifies `request` with the official Python `standardwebhooks` package against each secret;
/// returns whether each one verified.
fn python_verifies(request: &Received, secrets: &[&str]) -> Vec<bool> {
    let python = std::env::var("TIDINGS_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .expect(
            "TIDINGS_TEST_PYTHON must name a Python with `standardwebhooks` (scripts/test.sh sets it)",
        );
    const SCRIPT: &str = r#"
import base64, json, sys
try:
    from standardwebhooks.webhooks import Webhook
except ImportError:
    from standardwebhooks import Webhook
job = json.load(sys.stdin)
body = base64.b64decode(job["body"])
results = []
for secret in job["secrets"]:
    try:
        Webhook(secret).verify(body, job["headers"])
        results.append(True)
    except Exception:
        results.append(False)
print(json.dumps(results))
"#;
    let job = json!({
        "body": BASE64.encode(&request.body),
        "headers": request.headers,
        "secrets": secrets,
    });
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(job.to_string().as_bytes())
        .expect("write job");
    let output = child.wait_with_output().expect("python runs");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("python prints a JSON list")
}

#[tokio::test]
async fn secret_is_readable_and_rotation_signs_with_both_during_the_grace_period() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    let old = str_of(&hook["secret"]);

    let (status, shown) = app.get(&hook_path(&ws, &hook, "/secret")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["secret"], old.as_str());
    let old_key_id = str_of(&shown["key_id"]);
    assert!(!old_key_id.is_empty());
    assert!(shown.get("previous").is_none_or(Value::is_null), "{shown}");

    let (status, rotated) = app
        .post(
            &hook_path(&ws, &hook, "/secret/rotate"),
            json!({"grace_period_s": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = str_of(&rotated["secret"]);
    assert!(new.starts_with("whsec_") && new != old, "{rotated}");
    assert_ne!(rotated["key_id"], old_key_id.as_str(), "{rotated}");
    assert_eq!(
        rotated["previous"]["key_id"],
        old_key_id.as_str(),
        "{rotated}"
    );
    assert!(rotated["previous"]["expires_at"].is_string(), "{rotated}");
    let (_, shown) = app.get(&hook_path(&ws, &hook, "/secret")).await;
    assert_eq!(shown["secret"], new.as_str(), "{shown}");

    publish_until(&app, &ws, 1, "delivered").await;
    let request = &receiver.requests()[0];
    let signature = request.header("webhook-signature").expect("signature");
    assert_eq!(
        signature
            .split(' ')
            .filter(|s| s.starts_with("v1,"))
            .count(),
        2,
        "two signatures during the grace period: {signature}"
    );
    assert_eq!(
        request.header("webhook-key-id"),
        rotated["key_id"].as_str(),
        "the key id names the new secret"
    );
    let wrong = random_standard_secret();
    assert_eq!(
        python_verifies(request, &[&old, &new, &wrong]),
        vec![true, true, false],
        "both secrets verify with the official library, a random one does not"
    );
}

#[tokio::test]
async fn rotation_without_grace_signs_with_the_new_secret_only() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    let old = str_of(&hook["secret"]);
    let (status, rotated) = app
        .post(
            &hook_path(&ws, &hook, "/secret/rotate"),
            json!({"grace_period_s": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert!(
        rotated.get("previous").is_none_or(Value::is_null),
        "{rotated}"
    );
    let new = str_of(&rotated["secret"]);
    assert_ne!(new, old);

    publish_until(&app, &ws, 1, "delivered").await;
    let request = &receiver.requests()[0];
    let signature = request.header("webhook-signature").expect("signature");
    assert_eq!(signature.split(' ').count(), 1, "{signature}");
    assert_eq!(
        python_verifies(request, &[&old, &new]),
        vec![false, true],
        "only the new secret verifies"
    );
}

#[tokio::test]
async fn rotated_hmac_webhooks_sign_with_the_new_secret() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, hook) = app
        .workspace_with_webhook(
            &receiver.url,
            HOOK_TYPES,
            json!({"signing": {"scheme": "hmac-sha256"}}),
        )
        .await;
    let old = str_of(&hook["secret"]);
    let (status, rotated) = app
        .post(
            &hook_path(&ws, &hook, "/secret/rotate"),
            json!({"grace_period_s": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = str_of(&rotated["secret"]);
    assert_ne!(new, old);

    publish_until(&app, &ws, 1, "delivered").await;
    let request = &receiver.requests()[0];
    let header = request
        .header("x-tidings-signature")
        .expect("x-tidings-signature");
    assert_eq!(
        header,
        format!("sha256={}", hmac_sha256_hex(new.as_bytes(), &request.body))
    );
    assert_ne!(
        header,
        format!("sha256={}", hmac_sha256_hex(old.as_bytes(), &request.body))
    );
}

#[tokio::test]
async fn grace_period_longer_than_a_week_is_422() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    let (status, body) = app
        .post(
            &hook_path(&ws, &hook, "/secret/rotate"),
            json!({"grace_period_s": 604_801}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, shown) = app.get(&hook_path(&ws, &hook, "/secret")).await;
    assert_eq!(shown["secret"], hook["secret"], "the secret is unchanged");
}

// ---------------------------------------------------------------------------------------------
// The delivery log
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn event_lists_its_deliveries_and_delivery_detail_shows_event_and_sent_headers() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, HOOK_TYPES, json!({}))
        .await;
    let secret = str_of(&hook["secret"]);
    let (event_id, delivery_id) = app.publish_one(&ws, SENT).await;
    let detail = app
        .wait_for_status(&ws, &delivery_id, "delivered", WAIT)
        .await;

    let (status, event) = app
        .get(&format!("/v1/workspaces/{ws}/events/{event_id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    let deliveries = event["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 1, "{event:#}");
    assert_eq!(deliveries[0]["id"], delivery_id.as_str());
    assert_eq!(deliveries[0]["webhook_id"], hook["id"]);
    assert_eq!(deliveries[0]["status"], "delivered");

    assert_eq!(detail["is_test"], false, "{detail:#}");
    assert_eq!(detail["event"]["id"], event_id.as_str(), "{detail:#}");
    assert_eq!(detail["event"]["type"], SENT, "{detail:#}");
    assert_eq!(
        detail["event"]["data"],
        app.example(SENT).await,
        "{detail:#}"
    );
    let attempts = detail["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{detail:#}");
    let sent = &receiver.requests()[0];
    let logged = &attempts[0]["request_headers"];
    assert_eq!(
        logged["webhook-signature"].as_str(),
        sent.header("webhook-signature"),
        "{detail:#}"
    );
    assert_eq!(logged["webhook-id"].as_str(), Some(event_id.as_str()));
    assert!(
        !detail.to_string().contains(&secret[6..]),
        "the secret is never shown in the log"
    );
}
