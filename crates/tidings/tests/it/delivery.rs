//! Delivery: what receivers see (envelope, signatures, headers), the outcome table, the delivery
//! log, the SSRF guard at delivery time, isolation between webhooks and rate limits.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    Receiver, Reply, free_port, hmac_sha256_hex, spawn_app, spawn_app_with,
    standard_signature_matches, webhook_body,
};

const EVENT_TYPE: &str = "email.sent.v1";
const WAIT: Duration = Duration::from_secs(15);

fn attempts(delivery: &Value) -> &Vec<Value> {
    delivery["attempts"].as_array().expect("attempts")
}

fn unix_now() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(now.as_secs()).expect("fits")
}

// ---------------------------------------------------------------------------------------------
// What the receiver sees
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn envelope_carries_event_id_type_occurrence_time_and_data() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, _) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "headers": { "X-Api-Key": "s3cret", "X-Tenant": "acme" } }),
        )
        .await;
    let data = app.example(EVENT_TYPE).await;
    let published = app
        .publish(
            &ws,
            json!({ "type": EVENT_TYPE, "occurred_at": "2025-11-22T08:26:40.123Z", "data": data }),
        )
        .await;
    let event_id = published["id"].as_str().expect("id");

    let request = &receiver.wait_for(1, WAIT).await[0];
    let body = request.json();
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected_keys = vec!["data", "id", "timestamp", "type"];
    let mut got_keys = keys.clone();
    got_keys.sort_unstable();
    expected_keys.sort_unstable();
    assert_eq!(
        got_keys, expected_keys,
        "the envelope has exactly these fields: {body}"
    );
    assert_eq!(body["id"], event_id);
    assert_eq!(body["type"], EVENT_TYPE);
    let timestamp = body["timestamp"].as_str().expect("timestamp");
    assert!(
        timestamp == "2025-11-22T08:26:40.123Z" || timestamp == "2025-11-22T08:26:40.123+00:00",
        "timestamp is the RFC 3339 time the event occurred: {timestamp}"
    );
    assert_eq!(body["data"], data, "data is what was published");

    assert_eq!(request.header("content-type"), Some("application/json"));
    let agent = request.header("user-agent").expect("user-agent");
    assert!(agent.starts_with("Tidings/"), "{agent}");
    assert_eq!(request.header("x-api-key"), Some("s3cret"));
    assert_eq!(request.header("x-tenant"), Some("acme"));
    assert_eq!(request.path, "/hook");
}

#[tokio::test]
async fn data_payload_format_sends_the_bare_data_object() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, _) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "payload_format": "data" }),
        )
        .await;
    let (_, _, data) = app.publish_example(&ws, EVENT_TYPE).await;

    let request = &receiver.wait_for(1, WAIT).await[0];
    assert_eq!(request.json(), data, "the body is the data object itself");
    assert_eq!(request.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn data_is_delivered_as_it_was_written() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, _) = app
        .workspace_with_webhook(&receiver.url, &[EVENT_TYPE], json!({}))
        .await;
    // The example's members in reverse order, with a number written with a trailing zero and
    // spaces around the separators: a publisher's own text, which a parsed-and-written-out copy
    // would reorder and reformat.
    let example = app.example(EVENT_TYPE).await;
    let members: Vec<String> = example
        .as_object()
        .expect("object")
        .iter()
        .rev()
        .map(|(name, value)| format!("{} : {value}", Value::from(name.as_str())))
        .collect();
    let data = format!("{{ {}, \"score\" : 1.50 }}", members.join(" , "));
    let body = format!(r#"{{"type": "{EVENT_TYPE}", "data": {data}}}"#);
    let response = app
        .http
        .post(app.url(&format!("/v1/workspaces/{ws}/events")))
        .bearer_auth(&app.operator_key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("publish sent");
    assert_eq!(response.status().as_u16(), 202);

    let request = &receiver.wait_for(1, WAIT).await[0];
    let delivered = std::str::from_utf8(&request.body).expect("utf-8");
    assert!(
        delivered.ends_with(&format!(",\"data\":{data}}}")),
        "data is delivered byte for byte as published: {delivered}"
    );
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn standard_signature_verifies_and_webhook_id_is_stable_across_retries() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(500)]);
    let (ws, hook) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "retry_schedule": [1] }),
        )
        .await;
    let secret = hook["secret"].as_str().expect("secret shown at creation");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let (event_id, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;

    let requests = receiver.wait_for(2, WAIT).await;
    for request in &requests[..2] {
        assert_eq!(
            request.header("webhook-id"),
            Some(event_id.as_str()),
            "webhook-id is the event id"
        );
        let timestamp = request
            .header("webhook-timestamp")
            .expect("webhook-timestamp");
        let seconds: i64 = timestamp.parse().expect("unix seconds");
        assert!(
            (seconds - unix_now()).abs() <= 60,
            "timestamp {seconds} is recent"
        );
        let signature = request
            .header("webhook-signature")
            .expect("webhook-signature");
        assert!(
            standard_signature_matches(secret, &event_id, timestamp, &request.body, signature),
            "signature {signature} verifies"
        );
        assert!(
            !standard_signature_matches(
                secret,
                &event_id,
                timestamp,
                b"{\"tampered\":true}",
                signature
            ),
            "a different body does not verify"
        );
        let key_id = request.header("webhook-key-id").expect("webhook-key-id");
        assert!(!key_id.is_empty());
        assert!(
            !key_id.contains(&secret[6..]),
            "the key id does not reveal the secret"
        );
    }
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    assert_eq!(
        requests[0].header("webhook-key-id"),
        requests[1].header("webhook-key-id")
    );

    let delivery = app
        .wait_for_status(&ws, &delivery_id, "delivered", WAIT)
        .await;
    assert_eq!(attempts(&delivery).len(), 2);
}

#[tokio::test]
async fn hmac_sha256_signs_the_raw_body_with_the_secret_string_in_default_and_custom_headers() {
    let app = spawn_app().await;
    let default_receiver = Receiver::start().await;
    let custom_receiver = Receiver::start().await;
    let ws = app.create_workspace().await;
    let default_hook = app
        .add_webhook(
            &ws,
            &default_receiver.url,
            &[EVENT_TYPE],
            json!({ "signing": { "scheme": "hmac-sha256" } }),
        )
        .await;
    let custom_hook = app
        .add_webhook(
            &ws,
            &custom_receiver.url,
            &[EVENT_TYPE],
            json!({ "signing": { "scheme": "hmac-sha256", "header": "X-Signature" } }),
        )
        .await;
    let (event_id, deliveries, _) = app.publish_example(&ws, EVENT_TYPE).await;
    assert_eq!(deliveries.len(), 2);

    for (receiver, hook, header) in [
        (&default_receiver, &default_hook, "x-tidings-signature"),
        (&custom_receiver, &custom_hook, "x-signature"),
    ] {
        let request = &receiver.wait_for(1, WAIT).await[0];
        let secret = hook["secret"].as_str().expect("secret");
        let expected = format!(
            "sha256={}",
            hmac_sha256_hex(secret.as_bytes(), &request.body)
        );
        assert_eq!(
            request.header(header),
            Some(expected.as_str()),
            "{header} on {:?}",
            request.headers
        );
        assert_eq!(request.header("x-request-id"), Some(event_id.as_str()));
        assert_eq!(
            request.header("webhook-signature"),
            None,
            "only the chosen scheme is sent"
        );
    }
    assert_eq!(
        custom_receiver.requests()[0].header("x-tidings-signature"),
        None
    );
}

// ---------------------------------------------------------------------------------------------
// The outcome table
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn success_response_is_delivered_after_one_attempt() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(Reply::status(204)).await;
    let (ws, _) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "retry_schedule": [1] }),
        )
        .await;
    let (_, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;

    let delivery = app
        .wait_for_status(&ws, &delivery_id, "delivered", WAIT)
        .await;
    assert_eq!(attempts(&delivery).len(), 1);
    assert_eq!(delivery["attempt_count"], 1);
    assert_eq!(attempts(&delivery)[0]["status_code"], 204);
    assert_eq!(attempts(&delivery)[0]["error_kind"], Value::Null);
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn server_error_is_retried_then_delivered() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(500)]);
    let (ws, _) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "retry_schedule": [1, 1] }),
        )
        .await;
    let (_, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;

    let delivery = app
        .wait_for_status(&ws, &delivery_id, "delivered", WAIT)
        .await;
    let attempts = attempts(&delivery);
    assert_eq!(attempts.len(), 2, "{delivery:#}");
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[0]["error_kind"], "http_status");
    assert_eq!(attempts[1]["status_code"], 200);
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn other_client_error_fails_without_retry() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(Reply::status(404)).await;
    let (ws, _) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "retry_schedule": [1, 1] }),
        )
        .await;
    let (_, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;

    let delivery = app.wait_for_status(&ws, &delivery_id, "failed", WAIT).await;
    assert_eq!(attempts(&delivery).len(), 1);
    assert_eq!(attempts(&delivery)[0]["status_code"], 404);
    // Wait past the retry delay: a retry would have arrived by now.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(receiver.requests().len(), 1, "a 404 is not retried");
    let delivery = app.delivery(&ws, &delivery_id).await;
    assert_eq!(delivery["status"], "failed");
    assert_eq!(attempts(&delivery).len(), 1);
}

#[tokio::test]
async fn gone_fails_the_delivery_disables_the_webhook_and_skips_later_events() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(Reply::status(410)).await;
    let (ws, hook) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "retry_schedule": [1, 1] }),
        )
        .await;
    let hook_id = hook["id"].as_str().expect("id");
    let (_, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;

    let delivery = app.wait_for_status(&ws, &delivery_id, "failed", WAIT).await;
    assert_eq!(attempts(&delivery).len(), 1);
    assert_eq!(attempts(&delivery)[0]["status_code"], 410);
    let (status, webhook) = app
        .get(&format!("/v1/workspaces/{ws}/webhooks/{hook_id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(webhook["state"], "disabled", "{webhook:#}");
    assert_eq!(webhook["disabled_reason"], "gone");

    // Published right after the webhook was disabled: kept, recorded as skipped, never sent.
    let (_, later) = app.publish_one(&ws, EVENT_TYPE).await;
    let later = app
        .wait_for_status(&ws, &later, "skipped", Duration::from_secs(5))
        .await;
    assert_eq!(attempts(&later).len(), 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.requests().len(),
        1,
        "nothing more is sent to a disabled webhook"
    );
    assert_eq!(app.delivery(&ws, &delivery_id).await["status"], "failed");
}

#[tokio::test]
async fn redirect_is_not_followed_and_is_retried() {
    let app = spawn_app().await;
    let elsewhere = Receiver::start().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(302).with_header("location", &elsewhere.url)]);
    let (ws, _) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "retry_schedule": [1] }),
        )
        .await;
    let (_, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;

    let delivery = app
        .wait_for_status(&ws, &delivery_id, "delivered", WAIT)
        .await;
    let attempts = attempts(&delivery);
    assert_eq!(attempts.len(), 2, "{delivery:#}");
    assert_eq!(attempts[0]["status_code"], 302);
    assert_eq!(attempts[0]["error_kind"], "redirect");
    assert_eq!(receiver.requests().len(), 2);
    assert!(
        elsewhere.requests().is_empty(),
        "the Location target got nothing"
    );
}

#[tokio::test]
async fn retry_after_postpones_the_retry() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(429).with_header("retry-after", "2")]);
    // The schedule alone would retry after about 1 s.
    let (ws, _) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "retry_schedule": [1] }),
        )
        .await;
    let (_, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;

    let requests = receiver.wait_for(2, WAIT).await;
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(1800),
        "the retry came {gap:?} after the 429 with Retry-After: 2"
    );
    let delivery = app
        .wait_for_status(&ws, &delivery_id, "delivered", WAIT)
        .await;
    assert_eq!(attempts(&delivery)[0]["status_code"], 429);
    assert_eq!(attempts(&delivery).len(), 2);
}

#[tokio::test]
async fn slow_receiver_times_out_and_is_retried() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(200).after(Duration::from_secs(5))]);
    let (ws, _) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "timeout_ms": 1000, "retry_schedule": [1] }),
        )
        .await;
    let (_, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;

    let delivery = app
        .wait_for_status(&ws, &delivery_id, "delivered", WAIT)
        .await;
    let attempts = attempts(&delivery);
    assert_eq!(attempts.len(), 2, "{delivery:#}");
    assert_eq!(attempts[0]["error_kind"], "timeout");
    assert_eq!(attempts[0]["status_code"], Value::Null);
    assert_eq!(attempts[1]["status_code"], 200);
}

#[tokio::test]
async fn connection_refused_is_a_connect_error_and_is_retried() {
    let app = spawn_app().await;
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let (ws, _) = app
        .workspace_with_webhook(&url, &[EVENT_TYPE], json!({ "retry_schedule": [1] }))
        .await;
    let (_, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;

    let delivery = app.wait_for_status(&ws, &delivery_id, "failed", WAIT).await;
    let attempts = attempts(&delivery);
    assert_eq!(
        attempts.len(),
        2,
        "retried once per the schedule: {delivery:#}"
    );
    for attempt in attempts {
        assert_eq!(attempt["error_kind"], "connect", "{attempt:#}");
        assert_eq!(attempt["status_code"], Value::Null);
    }
    assert_eq!(delivery["last_error_kind"], "connect");
}

#[tokio::test]
async fn exhausted_retry_schedule_fails_the_delivery() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(Reply::status(503)).await;
    let (ws, _) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "retry_schedule": [1, 1] }),
        )
        .await;
    let (_, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;

    let delivery = app.wait_for_status(&ws, &delivery_id, "failed", WAIT).await;
    assert_eq!(
        attempts(&delivery).len(),
        3,
        "one attempt plus one per scheduled retry: {delivery:#}"
    );
    assert_eq!(delivery["attempt_count"], 3);
    assert_eq!(delivery["next_attempt_at"], Value::Null);
    assert!(attempts(&delivery).iter().all(|a| a["status_code"] == 503));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.requests().len(),
        3,
        "nothing after the schedule ran out"
    );
}

#[tokio::test]
async fn server_wide_retry_schedule_applies_to_webhooks_without_their_own() {
    let app = spawn_app_with(|settings| settings.retry_schedule = vec![1]).await;
    let receiver = Receiver::answering(Reply::status(500)).await;
    let (ws, _) = app
        .workspace_with_webhook(&receiver.url, &[EVENT_TYPE], json!({}))
        .await;
    let (_, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;

    let delivery = app.wait_for_status(&ws, &delivery_id, "failed", WAIT).await;
    assert_eq!(
        delivery["attempt_count"], 2,
        "the first attempt and the one retry of the server's schedule: {delivery:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// The delivery log
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn attempt_log_keeps_a_capped_excerpt_response_headers_and_redacted_request_headers() {
    let app = spawn_app().await;
    let big = "x".repeat(10 * 1024);
    let receiver = Receiver::answering(
        Reply::status(200)
            .with_header("x-receiver", "yes")
            .with_body(big.clone()),
    )
    .await;
    let (ws, _) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "headers": { "X-Api-Key": "s3cret" } }),
        )
        .await;
    let (_, delivery_id) = app.publish_one(&ws, EVENT_TYPE).await;

    let delivery = app
        .wait_for_status(&ws, &delivery_id, "delivered", WAIT)
        .await;
    let attempt = &attempts(&delivery)[0];
    let excerpt = attempt["response_excerpt"]
        .as_str()
        .expect("excerpt recorded");
    assert!(!excerpt.is_empty());
    assert!(excerpt.len() <= 4096, "excerpt is {} bytes", excerpt.len());
    assert!(
        big.starts_with(excerpt),
        "the excerpt is the start of the body"
    );
    assert_eq!(
        attempt["response_headers"]["x-receiver"], "yes",
        "{attempt:#}"
    );

    let sent = &receiver.requests()[0];
    let logged = &attempt["request_headers"];
    assert_eq!(
        logged["x-api-key"], "[redacted]",
        "custom header values are not logged: {logged:#}"
    );
    assert_eq!(sent.header("x-api-key"), Some("s3cret"));
    assert_eq!(
        logged["webhook-signature"].as_str(),
        sent.header("webhook-signature")
    );
    assert_eq!(logged["webhook-id"].as_str(), sent.header("webhook-id"));
    assert!(!logged.to_string().contains("s3cret"));
}

// ---------------------------------------------------------------------------------------------
// The SSRF guard at delivery time
// ---------------------------------------------------------------------------------------------

/// A host name that the system resolver maps only to addresses webhooks may not reach, preferring
/// one that maps to loopback (so a receiver on 127.0.0.1 would get the request if the guard let it
/// through). Candidates: this machine's name (/etc/hostname), then every name in /etc/hosts.
/// Names webhook creation already refuses (`localhost`, `*.localhost`) are left out, since the point
/// is to reach the resolver-level check. No network is needed: these resolve from /etc/hosts.
/// Returns the name and whether it resolves to loopback only.
async fn name_resolving_to_blocked_address() -> Option<(String, bool)> {
    let mut candidates = Vec::new();
    if let Ok(name) = std::fs::read_to_string("/etc/hostname") {
        candidates.push(name.trim().to_owned());
    }
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        for line in hosts.lines() {
            let line = line.split('#').next().unwrap_or_default();
            candidates.extend(line.split_whitespace().skip(1).map(str::to_owned));
        }
    }
    candidates.retain(|name| {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        !lower.is_empty()
            && lower != "localhost"
            && !lower.ends_with(".localhost")
            && lower.parse::<IpAddr>().is_err()
            && lower
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    });
    let mut fallback = None;
    for name in candidates {
        let Ok(found) = tokio::net::lookup_host((name.as_str(), 0)).await else {
            continue;
        };
        let addresses: Vec<IpAddr> = found.map(|a| a.ip()).collect();
        if addresses.is_empty()
            || addresses
                .iter()
                .any(|ip| tidings_core::net::blocked_class(*ip).is_none())
        {
            continue;
        }
        if addresses
            .iter()
            .all(|ip| ip.is_loopback() || ip.to_canonical().is_loopback())
        {
            return Some((name, true));
        }
        fallback.get_or_insert((name, false));
    }
    fallback
}

#[tokio::test]
async fn host_name_resolving_to_a_blocked_address_is_refused_at_delivery() {
    // On this project's machines /etc/hosts maps the machine's own name (e.g. `vm`) to 127.0.0.1.
    let Some((name, loopback)) = name_resolving_to_blocked_address().await else {
        // No such name on this machine: the resolver path cannot be reached without network. The
        // delivery-time guard is still covered by the stored-literal test below; here, check the
        // creation-time guard, which must hold whatever the machine.
        let app = spawn_app_with(|s| s.allow_private_targets = false).await;
        let ws = app.create_workspace().await;
        for url in [
            "http://127.0.0.1:9/hook",
            "http://localhost:9/hook",
            "http://10.0.0.1/hook",
        ] {
            let (status, body) = app
                .post(
                    &format!("/v1/workspaces/{ws}/webhooks"),
                    webhook_body(url, &[EVENT_TYPE], json!({})),
                )
                .await;
            assert_eq!(status, 422, "{url}: {body}");
        }
        return;
    };
    let receiver = Receiver::start().await;
    let url = format!("http://{name}:{}/hook", receiver.addr.port());

    // Control: where private targets are allowed, a loopback name does reach the receiver, so it is
    // the guard (not the name) that stops the delivery below.
    let open = spawn_app().await;
    let (open_ws, _) = open
        .workspace_with_webhook(&url, &[EVENT_TYPE], json!({}))
        .await;
    let (_, control) = open.publish_one(&open_ws, EVENT_TYPE).await;
    let control = open
        .wait_for_delivery(&open_ws, &control, WAIT, |d| d["status"] != "pending")
        .await;
    if loopback {
        assert_eq!(
            control["status"], "delivered",
            "{name} reaches 127.0.0.1: {control:#}"
        );
        assert_eq!(receiver.requests().len(), 1);
    }
    let seen_before = receiver.requests().len();

    let guarded = spawn_app_with(|s| s.allow_private_targets = false).await;
    let (ws, _) = guarded
        .workspace_with_webhook(&url, &[EVENT_TYPE], json!({ "retry_schedule": [1, 1] }))
        .await;
    let (_, delivery_id) = guarded.publish_one(&ws, EVENT_TYPE).await;
    let delivery = guarded
        .wait_for_status(&ws, &delivery_id, "failed", WAIT)
        .await;
    assert_eq!(
        attempts(&delivery).len(),
        1,
        "a blocked target is not retried: {delivery:#}"
    );
    assert_eq!(
        attempts(&delivery)[0]["error_kind"],
        "ssrf_blocked",
        "{delivery:#}"
    );
    assert_eq!(attempts(&delivery)[0]["status_code"], Value::Null);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.requests().len(),
        seen_before,
        "the guarded server sent nothing to {name}"
    );
}

#[tokio::test]
async fn private_literal_target_stored_before_a_policy_change_is_refused_at_delivery() {
    // The URL passed creation under a permissive policy; the server is then restarted on the same
    // database with private targets refused. Delivery must check again, not trust creation.
    let db_dir = tempfile::tempdir().expect("tempdir");
    let database_url = crate::helpers::database_url(db_dir.path());
    let receiver = Receiver::start().await;

    let first_url = database_url.clone();
    let permissive = spawn_app_with(move |s| s.database_url = first_url).await;
    let (ws, _) = permissive
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "retry_schedule": [1, 1] }),
        )
        .await;
    permissive.stop().await;

    let guarded = spawn_app_with(move |s| {
        s.database_url = database_url;
        s.allow_private_targets = false;
    })
    .await;
    let (_, delivery_id) = guarded.publish_one(&ws, EVENT_TYPE).await;
    let delivery = guarded
        .wait_for_status(&ws, &delivery_id, "failed", WAIT)
        .await;
    assert_eq!(attempts(&delivery).len(), 1, "{delivery:#}");
    assert_eq!(attempts(&delivery)[0]["error_kind"], "ssrf_blocked");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(receiver.requests().is_empty(), "nothing reached 127.0.0.1");
}

// ---------------------------------------------------------------------------------------------
// Isolation and rate limits
// ---------------------------------------------------------------------------------------------

/// Two webhooks on a dispatcher with 16 slots in all: `slow` (campaign "slow") points at a receiver
/// that never answers in time (timeout 1 s), `fast` (campaign "fast") at a healthy one.
struct SlowAndFast {
    app: crate::helpers::TestApp,
    ws: String,
    slow: Receiver,
    fast: Receiver,
    slow_id: String,
    fast_id: String,
}

async fn slow_and_fast(per_webhook_concurrency: usize) -> SlowAndFast {
    let app = spawn_app_with(|s| {
        s.per_webhook_concurrency = per_webhook_concurrency;
        s.max_in_flight = 16;
    })
    .await;
    let slow = Receiver::answering(Reply::status(200).after(Duration::from_secs(30))).await;
    let fast = Receiver::start().await;
    let ws = app.create_workspace().await;
    let mut ids = Vec::new();
    for (url, campaign) in [(&slow.url, "slow"), (&fast.url, "fast")] {
        let hook = app
            .add_webhook(
                &ws,
                url,
                &[EVENT_TYPE],
                json!({ "timeout_ms": 1000, "filters": { "campaign_ids": [campaign] } }),
            )
            .await;
        ids.push(hook["id"].as_str().expect("id").to_owned());
    }
    let fast_id = ids.pop().expect("fast id");
    let slow_id = ids.pop().expect("slow id");
    SlowAndFast {
        app,
        ws,
        slow,
        fast,
        slow_id,
        fast_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_webhook_does_not_hold_back_a_healthy_one() {
    const EVENTS: usize = 60;
    // Few slots in all, so a dispatcher that let one webhook's backlog take every slot would hold
    // the healthy webhook's deliveries behind the slow one's timeouts.
    let SlowAndFast {
        app,
        ws,
        slow,
        fast,
        slow_id,
        fast_id,
    } = slow_and_fast(4).await;
    let (slow_id, fast_id) = (slow_id.as_str(), fast_id.as_str());

    let data = app.example(EVENT_TYPE).await;
    let events: Vec<Value> = (0..EVENTS * 2)
        .map(|i| {
            let campaign = if i % 2 == 0 { "slow" } else { "fast" };
            json!({ "type": EVENT_TYPE, "data": data, "campaign_id": campaign })
        })
        .collect();
    let (status, published) = app
        .post(
            &format!("/v1/workspaces/{ws}/events/batch"),
            json!({ "events": events }),
        )
        .await;
    assert_eq!(status, 202, "{published}");

    let list = |hook: &str| format!("/v1/workspaces/{ws}/deliveries?webhook_id={hook}&limit=500");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, page) = app.get(&list(fast_id)).await;
        assert_eq!(status, 200, "{page}");
        let fast_deliveries = page["data"].as_array().expect("data");
        assert_eq!(fast_deliveries.len(), EVENTS);
        if fast_deliveries.iter().all(|d| d["status"] == "delivered") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the healthy webhook's deliveries never all arrived"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_, page) = app.get(&list(slow_id)).await;
    let slow_deliveries = page["data"].as_array().expect("data");
    assert_eq!(slow_deliveries.len(), EVENTS);
    let untried = slow_deliveries
        .iter()
        .filter(|d| d["attempt_count"] == 0)
        .count();
    assert!(
        untried > 0,
        "every slow delivery had its first attempt before the healthy webhook was done: it waited behind them"
    );
    assert_eq!(fast.requests().len(), EVENTS);
    assert!(slow.requests().len() < EVENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spaces_out_deliveries() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, _) = app
        .workspace_with_webhook(
            &receiver.url,
            &[EVENT_TYPE],
            json!({ "rate_limit_per_s": 2 }),
        )
        .await;
    let data = app.example(EVENT_TYPE).await;
    let events: Vec<Value> = (0..6)
        .map(|_| json!({ "type": EVENT_TYPE, "data": data }))
        .collect();
    let (status, published) = app
        .post(
            &format!("/v1/workspaces/{ws}/events/batch"),
            json!({ "events": events }),
        )
        .await;
    assert_eq!(status, 202, "{published}");

    let requests = receiver.wait_for(6, WAIT).await;
    let first = requests.iter().map(|r| r.at).min().expect("some");
    let last = requests.iter().map(|r| r.at).max().expect("some");
    let span = last - first;
    assert!(
        span >= Duration::from_millis(1500),
        "6 requests at 2/s took only {span:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_webhooks_older_backlog_leaves_slots_for_a_healthy_one() {
    const EVENTS: usize = 40;
    // The slow webhook's backlog is older, so every claim finds it first; its lane may hold many
    // claimed deliveries, but only while half the slots are free.
    let SlowAndFast {
        app,
        ws,
        slow: _slow,
        fast,
        slow_id,
        fast_id,
    } = slow_and_fast(2).await;
    let data = app.example(EVENT_TYPE).await;
    let publish = |campaign: &'static str| {
        let events: Vec<Value> = (0..EVENTS)
            .map(|_| json!({ "type": EVENT_TYPE, "data": data, "campaign_id": campaign }))
            .collect();
        let (app, ws) = (&app, &ws);
        async move {
            let (status, published) = app
                .post(
                    &format!("/v1/workspaces/{ws}/events/batch"),
                    json!({ "events": events }),
                )
                .await;
            assert_eq!(status, 202, "{published}");
        }
    };
    publish("slow").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    publish("fast").await;

    // Two slow attempts finish per second (concurrency 2, 1 s timeout): had the slow lane taken
    // every slot, the healthy deliveries would trickle out at that pace.
    let deadline = Instant::now() + Duration::from_secs(8);
    while fast.requests().len() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "only {} of {EVENTS} healthy deliveries arrived while the slow webhook held the slots",
            fast.requests().len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_, page) = app
        .get(&format!(
            "/v1/workspaces/{ws}/deliveries?webhook_id={slow_id}&limit=100"
        ))
        .await;
    assert_eq!(page["data"].as_array().expect("data").len(), EVENTS);
    let (_, page) = app
        .get(&format!(
            "/v1/workspaces/{ws}/deliveries?webhook_id={fast_id}&limit=100"
        ))
        .await;
    assert_eq!(page["data"].as_array().expect("data").len(), EVENTS);
}
