//! API behaviour over HTTP: auth and tenancy, workspaces, the event catalog, webhook configuration and
//! validation, publishing (single, batch, idempotency, limits), fan-out, the delivery log and the
//! operational endpoints.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Receiver, TestApp, merged, spawn_app, spawn_app_with, str_of};

/// A public https target; webhooks pointing here are created paused so nothing is ever sent.
const REMOTE: &str = "https://hooks.example.com/tidings";
const WAIT: Duration = Duration::from_secs(10);

const BUILTIN_TYPES: [&str; 22] = [
    "email.sent.v1",
    "email.first_sent.v1",
    "email.opened.v1",
    "email.link_clicked.v1",
    "email.replied.v1",
    "email.reply_untracked.v1",
    "email.bounced.v1",
    "reply.positive.v1",
    "reply.negative.v1",
    "lead.unsubscribed.v1",
    "lead.category_updated.v1",
    "lead.interest_updated.v1",
    "lead.appointment_booked.v1",
    "campaign.status_changed.v1",
    "sequence.manual_step_reached.v1",
    "linkedin.invitation_sent.v1",
    "linkedin.connection_accepted.v1",
    "linkedin.message_received.v1",
    "thread.tags_updated.v1",
    "meeting.status_changed.v1",
    "meeting.note_changed.v1",
    "signal.commercial_detected.v1",
];

/// Asserts `status` and the `{"error": {"code", "message"}}` shape; returns the error object.
fn assert_error(status: StatusCode, body: &Value, expected: StatusCode) -> Value {
    assert_eq!(status, expected, "{body}");
    let error = &body["error"];
    assert!(
        error["code"].as_str().is_some_and(|c| !c.is_empty()),
        "no error code: {body}"
    );
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no error message: {body}"
    );
    error.clone()
}

/// Asserts a 422 naming `field`; returns the message.
fn assert_invalid(status: StatusCode, body: &Value, field: &str) -> String {
    let error = assert_error(status, body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["field"], field, "{body}");
    error["message"].as_str().unwrap_or_default().to_owned()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| str_of(&v["id"]))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A paused webhook to `REMOTE` for `types` with `extra` fields merged in.
fn paused_hook(types: &[&str], extra: Value) -> Value {
    merged(
        json!({"url": REMOTE, "event_types": types, "state": "paused"}),
        extra,
    )
}

async fn create_hook(app: &TestApp, ws: &str, types: &[&str], extra: Value) -> String {
    str_of(&app.create_webhook(ws, paused_hook(types, extra)).await["id"])
}

/// A publish body for `event_type` using its catalog example, with `extra` top-level attributes.
async fn example_event(app: &TestApp, event_type: &str, extra: Value) -> Value {
    merged(
        json!({"type": event_type, "data": app.example(event_type).await}),
        extra,
    )
}

/// Publishes and returns the ids of the webhooks that got a delivery, cross-checking the publish
/// response against the event as read back.
async fn receivers_of(app: &TestApp, ws: &str, body: Value) -> BTreeSet<String> {
    let published = app.publish(ws, body).await;
    let (status, event) = app
        .get(&format!(
            "/v1/workspaces/{ws}/events/{}",
            str_of(&published["id"])
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    let listed: BTreeSet<String> = ids(&event["deliveries"]).into_iter().collect();
    let answered: BTreeSet<String> = published["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(str_of)
        .collect();
    assert_eq!(
        listed, answered,
        "publish response and event disagree: {published} vs {event}"
    );
    event["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| str_of(&d["webhook_id"]))
        .collect()
}

/// Follows `next_cursor` from `path` (which has no query yet) with `limit=2`; returns every id seen.
async fn all_pages(app: &TestApp, path: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=2&cursor={c}"),
            None => format!("{path}?limit=2"),
        };
        let (status, page) = app.get(&url).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let found = ids(&page["data"]);
        assert!(found.len() <= 2, "page larger than the limit: {page}");
        seen.extend(found);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return seen,
        }
    }
    panic!("pagination never ended");
}

fn assert_each_once(seen: &[String], expected: &BTreeSet<String>) {
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "an id was returned twice: {seen:?}"
    );
    assert!(
        expected.is_subset(&unique),
        "missing ids: expected {expected:?} in {seen:?}"
    );
}

async fn delivery_ids(app: &TestApp, ws: &str, query: &str) -> BTreeSet<String> {
    let (status, body) = app
        .get(&format!("/v1/workspaces/{ws}/deliveries?{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    ids(&body["data"]).into_iter().collect()
}

async fn event_count(app: &TestApp, ws: &str) -> usize {
    let (status, body) = app
        .get(&format!("/v1/workspaces/{ws}/events?limit=500"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ids(&body["data"]).len()
}

/// A raw request body (not necessarily JSON) with the operator key.
async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: &'static str,
) -> (StatusCode, Value) {
    let mut request = app
        .http
        .post(app.url(path))
        .bearer_auth(&app.operator_key)
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.expect("sent");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

// ---------------------------------------------------------------------------------------------
// Auth and tenancy

#[tokio::test]
async fn missing_malformed_and_wrong_keys_are_401_with_the_error_shape() {
    let app = spawn_app().await;
    let wrong_secret = format!("{}_{}", &app.operator_key[..36], "A".repeat(43));
    let malformed = ["nonsense", "tdk_123", "Basic dXNlcjpwYXNz"];
    let (status, body) = app.request(Method::GET, "/v1/workspaces", None, None).await;
    assert_eq!(
        assert_error(status, &body, StatusCode::UNAUTHORIZED)["code"],
        "unauthorized"
    );
    for key in malformed.iter().copied().chain([wrong_secret.as_str()]) {
        let (status, body) = app
            .request(Method::GET, "/v1/workspaces", Some(key), None)
            .await;
        assert_eq!(
            assert_error(status, &body, StatusCode::UNAUTHORIZED)["code"],
            "unauthorized",
            "key {key}"
        );
    }
    // A non-bearer scheme carrying the real key is refused too.
    let response = app
        .http
        .get(app.url("/v1/workspaces"))
        .header("authorization", format!("Token {}", app.operator_key))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 401);
    let (status, _) = app.get("/v1/workspaces").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn revoked_key_is_401() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let (id, key) = app.workspace_key(&ws).await;
    let (status, body) = app
        .request(
            Method::GET,
            &format!("/v1/workspaces/{ws}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = app.delete(&format!("/v1/keys/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app
        .request(
            Method::GET,
            &format!("/v1/workspaces/{ws}"),
            Some(&key),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED);

    let (status, body) = app
        .post("/v1/keys", json!({"scope": "operator", "name": "second"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let operator = str_of(&body["key"]);
    let (status, _) = app
        .request(Method::GET, "/v1/workspaces", Some(&operator), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    app.delete(&format!("/v1/keys/{}", str_of(&body["id"])))
        .await;
    let (status, body) = app
        .request(Method::GET, "/v1/workspaces", Some(&operator), None)
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_deleted_workspaces_keys_are_401_at_once() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let (_, key) = app.workspace_key(&ws).await;
    let path = format!("/v1/workspaces/{ws}");
    let (status, body) = app.request(Method::GET, &path, Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = app.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app.request(Method::GET, &path, Some(&key), None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn workspace_key_acts_on_its_own_workspace() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let _other = app.create_workspace().await;
    let (_, key) = app.workspace_key(&ws).await;
    let as_ws = |method: Method, path: String, body: Option<Value>| {
        let key = key.clone();
        let app = &app;
        async move { app.request(method, &path, Some(&key), body).await }
    };

    let (status, body) = as_ws(Method::GET, format!("/v1/workspaces/{ws}"), None).await;
    assert_eq!((status, str_of(&body["id"])), (StatusCode::OK, ws.clone()));
    let (status, body) = as_ws(Method::GET, "/v1/workspaces".into(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&body["data"]),
        vec![ws.clone()],
        "a workspace key lists only its workspace"
    );

    let (status, hook) = as_ws(
        Method::POST,
        format!("/v1/workspaces/{ws}/webhooks"),
        Some(paused_hook(&["email.sent.v1"], json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let hook_id = str_of(&hook["id"]);
    let event = example_event(&app, "email.sent.v1", json!({})).await;
    let (status, published) = as_ws(
        Method::POST,
        format!("/v1/workspaces/{ws}/events"),
        Some(event),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{published}");
    let delivery = str_of(&published["deliveries"][0]);
    for path in [
        format!("/v1/workspaces/{ws}/webhooks"),
        format!("/v1/workspaces/{ws}/webhooks/{hook_id}"),
        format!("/v1/workspaces/{ws}/events"),
        format!("/v1/workspaces/{ws}/events/{}", str_of(&published["id"])),
        format!("/v1/workspaces/{ws}/deliveries"),
        format!("/v1/workspaces/{ws}/deliveries/{delivery}"),
        "/v1/event-types".into(),
    ] {
        let (status, body) = as_ws(Method::GET, path.clone(), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, body) = as_ws(
        Method::PATCH,
        format!("/v1/workspaces/{ws}/webhooks/{hook_id}"),
        Some(json!({"name": "mine"})),
    )
    .await;
    assert_eq!(
        (status, &body["name"]),
        (StatusCode::OK, &json!("mine")),
        "{body}"
    );
}

#[tokio::test]
async fn workspace_key_cannot_see_another_workspace() {
    let app = spawn_app().await;
    let mine = app.create_workspace().await;
    let theirs = app.create_workspace().await;
    let (_, key) = app.workspace_key(&mine).await;
    let hook = create_hook(&app, &theirs, &["email.sent.v1"], json!({})).await;
    let published = app
        .publish(
            &theirs,
            example_event(&app, "email.sent.v1", json!({})).await,
        )
        .await;
    let event = str_of(&published["id"]);
    let delivery = str_of(&published["deliveries"][0]);

    let reads = [
        format!("/v1/workspaces/{theirs}"),
        format!("/v1/workspaces/{theirs}/webhooks"),
        format!("/v1/workspaces/{theirs}/webhooks/{hook}"),
        format!("/v1/workspaces/{theirs}/events"),
        format!("/v1/workspaces/{theirs}/events/{event}"),
        format!("/v1/workspaces/{theirs}/deliveries"),
        format!("/v1/workspaces/{theirs}/deliveries/{delivery}"),
        // Their objects under my workspace's path are not mine either.
        format!("/v1/workspaces/{mine}/webhooks/{hook}"),
        format!("/v1/workspaces/{mine}/events/{event}"),
        format!("/v1/workspaces/{mine}/deliveries/{delivery}"),
    ];
    for path in &reads {
        let (status, body) = app.request(Method::GET, path, Some(&key), None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
    }
    let writes = [
        (
            Method::POST,
            format!("/v1/workspaces/{theirs}/webhooks"),
            Some(paused_hook(&["email.sent.v1"], json!({}))),
        ),
        (
            Method::PATCH,
            format!("/v1/workspaces/{theirs}/webhooks/{hook}"),
            Some(json!({"name": "x"})),
        ),
        (
            Method::DELETE,
            format!("/v1/workspaces/{theirs}/webhooks/{hook}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/workspaces/{mine}/webhooks/{hook}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/workspaces/{theirs}/events"),
            Some(example_event(&app, "email.sent.v1", json!({})).await),
        ),
    ];
    for (method, path, body) in writes {
        let (status, answer) = app.request(method.clone(), &path, Some(&key), body).await;
        assert_error(status, &answer, StatusCode::NOT_FOUND);
    }
    // Nothing of theirs changed.
    let (status, still) = app
        .get(&format!("/v1/workspaces/{theirs}/webhooks/{hook}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(still["name"], "x");
    assert_eq!(event_count(&app, &theirs).await, 1);
}

#[tokio::test]
async fn workspace_key_is_forbidden_operator_actions() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let (_, key) = app.workspace_key(&ws).await;
    let custom = json!({"name": "deal.won.v1", "description": "A deal is won.", "group": "deal"});
    let actions = [
        (
            Method::POST,
            "/v1/workspaces".to_owned(),
            Some(json!({"name": "Mine now"})),
        ),
        (Method::POST, "/v1/event-types".to_owned(), Some(custom)),
        (
            Method::POST,
            "/v1/keys".to_owned(),
            Some(json!({"scope": "workspace", "workspace_id": ws})),
        ),
        (Method::GET, "/v1/keys".to_owned(), None),
        (
            Method::PATCH,
            format!("/v1/workspaces/{ws}"),
            Some(json!({"level_precedence": "broadest"})),
        ),
        (Method::DELETE, format!("/v1/workspaces/{ws}"), None),
    ];
    for (method, path, body) in actions {
        let (status, answer) = app.request(method.clone(), &path, Some(&key), body).await;
        assert_eq!(
            assert_error(status, &answer, StatusCode::FORBIDDEN)["code"],
            "forbidden",
            "{method} {path}"
        );
    }
    let (status, _) = app.get("/v1/event-types/deal.won.v1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.get(&format!("/v1/workspaces/{ws}")).await;
    assert_eq!(
        (status, &body["level_precedence"]),
        (StatusCode::OK, &json!("all"))
    );
}

// ---------------------------------------------------------------------------------------------
// Workspaces

#[tokio::test]
async fn workspace_can_be_created_read_updated_and_deleted() {
    let app = spawn_app().await;
    let (status, created) = app
        .post("/v1/workspaces", json!({"name": "Northwind"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let ws = str_of(&created["id"]);
    assert!(ws.starts_with("ws_"), "{ws}");
    assert_eq!(created["level_precedence"], "all");

    let (status, read) = app.get(&format!("/v1/workspaces/{ws}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&read["name"], &read["level_precedence"]),
        (&json!("Northwind"), &json!("all"))
    );

    let (status, updated) = app
        .patch(
            &format!("/v1/workspaces/{ws}"),
            json!({"level_precedence": "broadest"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["level_precedence"], "broadest");
    let (_, read) = app.get(&format!("/v1/workspaces/{ws}")).await;
    assert_eq!(
        (&read["name"], &read["level_precedence"]),
        (&json!("Northwind"), &json!("broadest"))
    );

    let (status, body) = app
        .patch(
            &format!("/v1/workspaces/{ws}"),
            json!({"level_precedence": "narrowest"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = app.post("/v1/workspaces", json!({"name": ""})).await;
    assert_invalid(status, &body, "name");

    let (status, _) = app.delete(&format!("/v1/workspaces/{ws}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get(&format!("/v1/workspaces/{ws}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app.delete(&format!("/v1/workspaces/{ws}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app.get(&format!("/v1/workspaces/{ws}/webhooks")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let listed = all_pages(&app, "/v1/workspaces").await;
    assert!(!listed.contains(&ws), "deleted workspace still listed");
}

#[tokio::test]
async fn workspaces_list_pages_with_a_cursor() {
    let app = spawn_app().await;
    let mut created = BTreeSet::new();
    for _ in 0..5 {
        created.insert(app.create_workspace().await);
    }
    let seen = all_pages(&app, "/v1/workspaces").await;
    assert_each_once(&seen, &created);
    assert_eq!(seen.len(), 5);

    let (status, body) = app.get("/v1/workspaces?limit=0").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) = app.get("/v1/workspaces?cursor=not%20a%20cursor").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn events_and_deliveries_list_pages_with_a_cursor() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    create_hook(&app, &ws, &["email.sent.v1"], json!({})).await;
    let (mut events, mut deliveries) = (BTreeSet::new(), BTreeSet::new());
    for _ in 0..5 {
        let published = app
            .publish(&ws, example_event(&app, "email.sent.v1", json!({})).await)
            .await;
        events.insert(str_of(&published["id"]));
        deliveries.insert(str_of(&published["deliveries"][0]));
    }
    let seen = all_pages(&app, &format!("/v1/workspaces/{ws}/events")).await;
    assert_each_once(&seen, &events);
    assert_eq!(seen.len(), 5);
    let seen = all_pages(&app, &format!("/v1/workspaces/{ws}/deliveries")).await;
    assert_each_once(&seen, &deliveries);
    assert_eq!(seen.len(), 5);
}

#[tokio::test]
async fn unknown_routes_answer_with_the_error_shape() {
    let app = spawn_app().await;
    let (status, body) = app.get("/v1/nothing-here").await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app
        .request(Method::PUT, "/v1/workspaces", Some(&app.operator_key), None)
        .await;
    assert_error(status, &body, StatusCode::METHOD_NOT_ALLOWED);
}

// ---------------------------------------------------------------------------------------------
// Event types

#[tokio::test]
async fn event_type_catalog_lists_every_builtin_with_schema_and_example() {
    let app = spawn_app().await;
    let (status, body) = app.get("/v1/event-types").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = body.as_array().expect("a list");
    for name in BUILTIN_TYPES {
        let entry = list
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert!(
            entry["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}"
        );
        assert!(
            entry["group"].as_str().is_some_and(|g| name.starts_with(g)),
            "{name}: {}",
            entry["group"]
        );
        assert!(entry["schema"].is_object(), "{name} has no schema");
        assert!(entry["example"].is_object(), "{name} has no example");
        assert_eq!(entry["builtin"], true, "{name}");
    }
    assert_eq!(
        list.iter().filter(|t| t["builtin"] == true).count(),
        BUILTIN_TYPES.len()
    );
}

#[tokio::test]
async fn event_type_can_be_fetched_by_name_and_unknown_is_404() {
    let app = spawn_app().await;
    let (status, body) = app.get("/v1/event-types/lead.category_updated.v1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "lead.category_updated.v1");
    assert_eq!(body["group"], "lead");
    assert!(
        body["schema"]["properties"]["category_id"].is_object(),
        "{body}"
    );
    assert!(body["example"]["category_id"].is_string(), "{body}");

    let (status, body) = app.get("/v1/event-types/deal.won.v1").await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
}

fn deal_won(schema_amount_type: &str) -> Value {
    json!({
        "name": "deal.won.v1",
        "description": "A deal is won in the CRM.",
        "group": "deal",
        "schema": {
            "type": "object",
            "required": ["deal"],
            "properties": {"deal": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": schema_amount_type}}}}
        },
        "example": {"deal": {"amount": if schema_amount_type == "string" { json!("12") } else { json!(12) }}}
    })
}

#[tokio::test]
async fn custom_event_type_is_listed_subscribable_and_enforced_at_publish() {
    let app = spawn_app().await;
    let (status, created) = app.post("/v1/event-types", deal_won("number")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (&created["name"], &created["builtin"]),
        (&json!("deal.won.v1"), &json!(false))
    );

    let (_, list) = app.get("/v1/event-types").await;
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"deal.won.v1"), "{names:?}");
    assert_eq!(
        app.example("deal.won.v1").await,
        json!({"deal": {"amount": 12}})
    );

    let ws = app.create_workspace().await;
    let hook = create_hook(&app, &ws, &["deal.won.v1"], json!({})).await;
    let good = json!({"type": "deal.won.v1", "data": {"deal": {"amount": 5000}}});
    assert_eq!(receivers_of(&app, &ws, good).await, set(&[&hook]));

    let bad = json!({"type": "deal.won.v1", "data": {"deal": {"amount": "lots"}}});
    let (status, body) = app.post(&format!("/v1/workspaces/{ws}/events"), bad).await;
    let message = assert_invalid(status, &body, "data/deal/amount");
    assert!(message.contains("/deal/amount"), "{message}");
    assert_eq!(event_count(&app, &ws).await, 1);
}

#[tokio::test]
async fn invalid_custom_event_types_are_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        ("builtin name", json!({"name": "email.sent.v1"}), "name"),
        ("bad name", json!({"name": "Deal Won"}), "name"),
        ("unversioned name", json!({"name": "deal.won"}), "name"),
        ("bad schema", json!({"schema": {"type": 12}}), "schema"),
        (
            "example failing its schema",
            json!({"example": {"deal": {"amount": "twelve"}}}),
            "example",
        ),
        ("bad group", json!({"group": "Has Spaces"}), "group"),
    ];
    for (case, change, field) in cases {
        let mut body = deal_won("number");
        body.as_object_mut()
            .expect("object")
            .extend(change.as_object().expect("object").clone());
        let (status, answer) = app.post("/v1/event-types", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{case}: {answer}");
        assert_invalid(status, &answer, field);
    }
    let (status, body) = app.get("/v1/event-types/deal.won.v1").await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app
        .post(
            "/v1/event-types",
            json!({"name": "deal.won.v1", "colour": "red"}),
        )
        .await;
    assert!(matches!(status.as_u16(), 400 | 422), "{status}");
    assert_error(status, &body, status);
}

#[tokio::test]
async fn duplicate_custom_event_type_is_409_and_put_updates_it() {
    let app = spawn_app().await;
    let (status, _) = app.post("/v1/event-types", deal_won("number")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app.post("/v1/event-types", deal_won("number")).await;
    assert_eq!(
        assert_error(status, &body, StatusCode::CONFLICT)["code"],
        "conflict"
    );

    let mut update = deal_won("string");
    update.as_object_mut().expect("object").remove("name");
    update["description"] = json!("A deal is won, amount as text.");
    let (status, body) = app
        .request(
            Method::PUT,
            "/v1/event-types/deal.won.v1",
            Some(&app.operator_key),
            Some(update.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, read) = app.get("/v1/event-types/deal.won.v1").await;
    assert_eq!(read["description"], "A deal is won, amount as text.");
    assert_eq!(
        read["schema"]["properties"]["deal"]["properties"]["amount"]["type"],
        "string"
    );

    // The new schema is the one enforced.
    let ws = app.create_workspace().await;
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{ws}/events"),
            json!({"type": "deal.won.v1", "data": {"deal": {"amount": 5}}}),
        )
        .await;
    assert_invalid(status, &body, "data/deal/amount");
    app.publish(
        &ws,
        json!({"type": "deal.won.v1", "data": {"deal": {"amount": "5"}}}),
    )
    .await;

    let (status, body) = app
        .request(
            Method::PUT,
            "/v1/event-types/email.sent.v1",
            Some(&app.operator_key),
            Some(update.clone()),
        )
        .await;
    assert_invalid(status, &body, "name");
    let (status, body) = app
        .request(
            Method::PUT,
            "/v1/event-types/deal.lost.v1",
            Some(&app.operator_key),
            Some(update),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// Webhooks

#[tokio::test]
async fn webhook_secret_is_returned_on_create_only() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let created = app
        .create_webhook(&ws, paused_hook(&["email.sent.v1"], json!({"name": "CRM"})))
        .await;
    let secret = str_of(&created["secret"]);
    assert!(
        secret.starts_with("whsec_") && secret.len() > 20,
        "{secret}"
    );
    let id = str_of(&created["id"]);
    assert!(id.starts_with("wh_"), "{id}");
    assert_eq!(created["timeout_ms"], 10_000);
    assert_eq!(created["payload_format"], "envelope");

    let (status, read) = app.get(&format!("/v1/workspaces/{ws}/webhooks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(read.get("secret").is_none(), "GET leaks the secret: {read}");
    assert!(
        !read.to_string().contains(&secret),
        "GET leaks the secret: {read}"
    );
    let (_, list) = app.get(&format!("/v1/workspaces/{ws}/webhooks")).await;
    assert!(
        !list.to_string().contains(&secret),
        "list leaks the secret: {list}"
    );
    let (_, patched) = app
        .patch(
            &format!("/v1/workspaces/{ws}/webhooks/{id}"),
            json!({"name": "CRM 2"}),
        )
        .await;
    assert!(
        !patched.to_string().contains(&secret),
        "PATCH leaks the secret: {patched}"
    );
}

#[tokio::test]
async fn webhooks_list_pages_with_a_cursor() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let other = app.create_workspace().await;
    create_hook(&app, &other, &["email.sent.v1"], json!({})).await;
    let mut created = BTreeSet::new();
    for _ in 0..5 {
        created.insert(create_hook(&app, &ws, &["email.sent.v1"], json!({})).await);
    }
    let seen = all_pages(&app, &format!("/v1/workspaces/{ws}/webhooks")).await;
    assert_each_once(&seen, &created);
    assert_eq!(
        seen.len(),
        5,
        "another workspace's webhook leaked into the list"
    );
}

#[tokio::test]
async fn webhook_patch_updates_fields_and_null_clears_retry_schedule() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let id = create_hook(
        &app,
        &ws,
        &["email.sent.v1"],
        json!({"name": "CRM", "retry_schedule": [5, 60]}),
    )
    .await;
    let path = format!("/v1/workspaces/{ws}/webhooks/{id}");

    let change = json!({
        "name": "CRM sync",
        "event_types": ["email.opened.v1", "email.replied.v1"],
        "timeout_ms": 5000,
        "headers": {"X-Api-Key": "abc123"},
        "filters": {"campaign_ids": ["c1"]},
        "payload_format": "data",
    });
    let (status, patched) = app.patch(&path, change).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let (_, read) = app.get(&path).await;
    assert_eq!(read["name"], "CRM sync");
    assert_eq!(
        read["event_types"],
        json!(["email.opened.v1", "email.replied.v1"])
    );
    assert_eq!(read["timeout_ms"], 5000);
    assert_eq!(read["headers"]["X-Api-Key"], "abc123");
    assert_eq!(read["filters"]["campaign_ids"], json!(["c1"]));
    assert_eq!(read["payload_format"], "data");
    assert_eq!(
        read["retry_schedule"],
        json!([5, 60]),
        "an absent field must stay as it was"
    );

    let (status, patched) = app.patch(&path, json!({"retry_schedule": null})).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let (_, read) = app.get(&path).await;
    assert_eq!(read["retry_schedule"], Value::Null);
    assert_eq!(read["name"], "CRM sync");
    assert_eq!(read["timeout_ms"], 5000);

    // A rejected change leaves the webhook untouched.
    let (status, body) = app
        .patch(&path, json!({"name": "broken", "timeout_ms": 999}))
        .await;
    assert_invalid(status, &body, "timeout_ms");
    let (_, read) = app.get(&path).await;
    assert_eq!(
        (&read["name"], &read["timeout_ms"]),
        (&json!("CRM sync"), &json!(5000))
    );
}

#[tokio::test]
async fn deleted_webhook_is_404_and_gets_no_deliveries() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let id = create_hook(&app, &ws, &["email.sent.v1"], json!({})).await;
    let path = format!("/v1/workspaces/{ws}/webhooks/{id}");
    let (status, _) = app.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (status, body) in [
        app.get(&path).await,
        app.delete(&path).await,
        app.patch(&path, json!({"name": "x"})).await,
    ] {
        assert_error(status, &body, StatusCode::NOT_FOUND);
    }
    let (status, body) = app
        .get(&format!("/v1/workspaces/{ws}/webhooks/wh_nonsense"))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let event = example_event(&app, "email.sent.v1", json!({})).await;
    assert!(receivers_of(&app, &ws, event).await.is_empty());
}

#[tokio::test]
async fn strict_target_policy_refuses_http_and_private_addresses() {
    let app = spawn_app_with(|s| {
        s.allow_http_targets = false;
        s.allow_private_targets = false;
    })
    .await;
    let ws = app.create_workspace().await;
    let refused = [
        "http://hooks.example.com/tidings",
        "https://127.0.0.1/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/hook",
        "https://localhost:8443/hook",
        "https://10.0.0.7/hook",
        "https://[::1]/hook",
        "ftp://hooks.example.com/tidings",
        "not a url",
    ];
    for url in refused {
        let (status, body) = app
            .post(
                &format!("/v1/workspaces/{ws}/webhooks"),
                json!({"url": url, "event_types": ["email.sent.v1"]}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url} was accepted: {body}"
        );
        assert_invalid(status, &body, "url");
    }
    let id = str_of(
        &app.create_webhook(&ws, paused_hook(&["email.sent.v1"], json!({})))
            .await["id"],
    );
    let (status, body) = app
        .patch(
            &format!("/v1/workspaces/{ws}/webhooks/{id}"),
            json!({"url": "https://127.0.0.1/hook"}),
        )
        .await;
    assert_invalid(status, &body, "url");
    let (_, list) = app.get(&format!("/v1/workspaces/{ws}/webhooks")).await;
    assert_eq!(ids(&list["data"]), vec![id]);
}

#[tokio::test]
async fn webhook_validation_names_the_field() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let cases = [
        (
            "unknown event type",
            json!({"event_types": ["email.sent.v1", "email.nope.v1"]}),
            "event_types",
        ),
        ("no event types", json!({"event_types": []}), "event_types"),
        (
            "bad header name",
            json!({"headers": {"Bad Name": "x"}}),
            "headers",
        ),
        (
            "CR/LF in a header value",
            json!({"headers": {"X-Ok": "line\r\nInjected: 1"}}),
            "headers",
        ),
        (
            "LF in a header value",
            json!({"headers": {"X-Ok": "line\nInjected: 1"}}),
            "headers",
        ),
        (
            "reserved content-type",
            json!({"headers": {"Content-Type": "text/plain"}}),
            "headers",
        ),
        (
            "reserved webhook-signature",
            json!({"headers": {"webhook-signature": "v1,abc"}}),
            "headers",
        ),
        (
            "reserved host",
            json!({"headers": {"Host": "evil.example"}}),
            "headers",
        ),
        (
            "timeout too short",
            json!({"timeout_ms": 999}),
            "timeout_ms",
        ),
        (
            "timeout too long",
            json!({"timeout_ms": 30001}),
            "timeout_ms",
        ),
        (
            "zero retry delay",
            json!({"retry_schedule": [0]}),
            "retry_schedule",
        ),
        (
            "retry delay over a week",
            json!({"retry_schedule": [60, 604801]}),
            "retry_schedule",
        ),
        (
            "too many retries",
            json!({"retry_schedule": vec![60; 21]}),
            "retry_schedule",
        ),
        (
            "empty campaign id",
            json!({"filters": {"campaign_ids": [""]}}),
            "filters.campaign_ids",
        ),
    ];
    for (case, change, field) in cases {
        let (status, body) = app
            .post(
                &format!("/v1/workspaces/{ws}/webhooks"),
                paused_hook(&["email.sent.v1"], change),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{case}: {body}");
        assert_invalid(status, &body, field);
    }
    for timeout in [1000, 30000] {
        app.create_webhook(
            &ws,
            paused_hook(&["email.sent.v1"], json!({"timeout_ms": timeout})),
        )
        .await;
    }
    let (_, list) = app.get(&format!("/v1/workspaces/{ws}/webhooks")).await;
    assert_eq!(
        ids(&list["data"]).len(),
        2,
        "only the two valid webhooks exist"
    );
}

#[tokio::test]
async fn webhook_bodies_with_unknown_fields_are_rejected() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let path = format!("/v1/workspaces/{ws}/webhooks");
    for extra in [
        json!({"colour": "red"}),
        json!({"filters": {"campaigns": ["c1"]}}),
        json!({"signing": {"algo": "md5"}}),
    ] {
        let (status, body) = app
            .post(&path, paused_hook(&["email.sent.v1"], extra.clone()))
            .await;
        assert!(
            matches!(status.as_u16(), 400 | 422),
            "{extra} was accepted: {status} {body}"
        );
        assert_error(status, &body, status);
    }
    let id = create_hook(&app, &ws, &["email.sent.v1"], json!({})).await;
    let (status, body) = app
        .patch(
            &format!("{path}/{id}"),
            json!({"urll": "https://typo.example.com"}),
        )
        .await;
    assert!(matches!(status.as_u16(), 400 | 422), "{status} {body}");
    assert_error(status, &body, status);
    let (status, body) = app
        .patch(&format!("{path}/{id}"), json!({"state": "disabled"}))
        .await;
    assert!(
        matches!(status.as_u16(), 400 | 422),
        "a workspace cannot disable a webhook: {status} {body}"
    );
    let (_, list) = app.get(&path).await;
    assert_eq!(ids(&list["data"]), vec![id]);
}

// ---------------------------------------------------------------------------------------------
// Publishing

#[tokio::test]
async fn publish_returns_202_with_id_deliveries_and_duplicate_flag() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let hook = create_hook(&app, &ws, &["email.sent.v1"], json!({})).await;
    let published = app
        .publish(&ws, example_event(&app, "email.sent.v1", json!({})).await)
        .await;
    assert!(str_of(&published["id"]).starts_with("evt_"), "{published}");
    assert_eq!(published["duplicate"], false);
    let deliveries = published["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 1, "{published}");
    let delivery = app.delivery(&ws, &str_of(&deliveries[0])).await;
    assert_eq!(delivery["webhook_id"], hook.as_str());
    assert_eq!(delivery["event_id"], published["id"]);
    assert_eq!(delivery["event_type"], "email.sent.v1");

    let (status, event) = app
        .get(&format!(
            "/v1/workspaces/{ws}/events/{}",
            str_of(&published["id"])
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["type"], "email.sent.v1");
    assert_eq!(event["data"], app.example("email.sent.v1").await);
}

#[tokio::test]
async fn publish_data_failing_the_schema_is_422_naming_the_path() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let path = format!("/v1/workspaces/{ws}/events");

    let mut event = example_event(&app, "email.sent.v1", json!({})).await;
    event["data"]["lead"]["email"] = json!(7);
    let (status, body) = app.post(&path, event).await;
    let message = assert_invalid(status, &body, "data/lead/email");
    assert!(message.contains("/lead/email"), "{message}");

    let mut event = example_event(&app, "email.sent.v1", json!({})).await;
    event["data"]
        .as_object_mut()
        .expect("object")
        .remove("sent_at");
    let (status, body) = app.post(&path, event).await;
    let message = assert_invalid(status, &body, "data");
    assert!(message.contains("sent_at"), "{message}");

    let (status, body) = app
        .post(&path, json!({"type": "email.sent.v1", "data": "text"}))
        .await;
    assert_invalid(status, &body, "data");
    assert_eq!(event_count(&app, &ws).await, 0);
}

#[tokio::test]
async fn publish_of_an_unknown_type_is_422() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{ws}/events"),
            json!({"type": "email.nope.v1", "data": {}}),
        )
        .await;
    assert_invalid(status, &body, "type");
    assert_eq!(event_count(&app, &ws).await, 0);
}

#[tokio::test]
async fn malformed_publish_bodies_are_400_with_the_error_shape() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let path = format!("/v1/workspaces/{ws}/events");
    let (status, body) = post_raw(
        &app,
        &path,
        Some("application/json"),
        "{\"type\": \"email.sent.v1\", \"data\": {",
    )
    .await;
    assert_eq!(
        assert_error(status, &body, StatusCode::BAD_REQUEST)["code"],
        "invalid_json"
    );
    let (status, body) = post_raw(&app, &path, None, "{}").await;
    assert!(matches!(status.as_u16(), 400 | 415), "{status}");
    assert_error(status, &body, status);
    let (status, body) = app.post(&path, json!({"type": "email.sent.v1"})).await;
    assert!(
        matches!(status.as_u16(), 400 | 422),
        "missing data accepted: {status}"
    );
    assert_error(status, &body, status);
    let (status, body) = app
        .post(
            &path,
            json!({"type": "email.sent.v1", "data": {}, "priority": 1}),
        )
        .await;
    assert!(
        matches!(status.as_u16(), 400 | 422),
        "unknown field accepted: {status}"
    );
    assert_error(status, &body, status);
    assert_eq!(event_count(&app, &ws).await, 0);
}

#[tokio::test]
async fn a_badly_typed_value_deep_in_a_batch_is_named_by_its_path() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{ws}/events/batch"),
            json!({"events": [
                {"type": "email.sent.v1", "data": {}},
                {"type": 5, "data": {}},
            ]}),
        )
        .await;
    let error = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("events[1].type"), "{message}");
    assert_eq!(event_count(&app, &ws).await, 0);
}

#[tokio::test]
async fn oversized_events_are_413_with_the_error_shape() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    create_hook(&app, &ws, &["email.sent.v1"], json!({})).await;
    let mut event = example_event(&app, "email.sent.v1", json!({})).await;

    // Over the body limit of the single endpoint.
    event["data"]["padding"] = json!("x".repeat(1_100_000));
    let (status, body) = app
        .post(&format!("/v1/workspaces/{ws}/events"), event.clone())
        .await;
    assert_eq!(
        assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE)["code"],
        "payload_too_large"
    );

    // Within the body limit, but the delivery would exceed 1 MiB.
    event["data"]["padding"] = json!("x".repeat(1024 * 1024 - 100));
    let (status, body) = app
        .post(&format!("/v1/workspaces/{ws}/events"), event.clone())
        .await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE);

    // One oversized event inside a batch.
    event["data"]["padding"] = json!("x".repeat(1_100_000));
    let small = example_event(&app, "email.sent.v1", json!({})).await;
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{ws}/events/batch"),
            json!({"events": [small, event, small]}),
        )
        .await;
    let error = assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("events[1]: the event is ")),
        "{body}"
    );
    assert_eq!(event_count(&app, &ws).await, 0);
    assert!(delivery_ids(&app, &ws, "").await.is_empty());
}

#[tokio::test]
async fn batch_publish_returns_one_result_per_event() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let sent = create_hook(&app, &ws, &["email.sent.v1"], json!({})).await;
    let opened = create_hook(&app, &ws, &["email.opened.v1"], json!({})).await;
    let events = json!({"events": [
        example_event(&app, "email.sent.v1", json!({})).await,
        example_event(&app, "email.opened.v1", json!({})).await,
        example_event(&app, "meeting.status_changed.v1", json!({})).await,
    ]});
    let (status, body) = app
        .post(&format!("/v1/workspaces/{ws}/events/batch"), events)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let results = body["events"].as_array().expect("events");
    assert_eq!(results.len(), 3, "{body}");
    let event_ids: BTreeSet<String> = results.iter().map(|r| str_of(&r["id"])).collect();
    assert_eq!(event_ids.len(), 3);
    let hook_of = |index: usize| {
        let app = &app;
        let ws = &ws;
        let deliveries = results[index]["deliveries"].clone();
        async move {
            let mut hooks = Vec::new();
            for id in deliveries.as_array().expect("deliveries") {
                hooks.push(str_of(&app.delivery(ws, &str_of(id)).await["webhook_id"]));
            }
            hooks
        }
    };
    assert_eq!(hook_of(0).await, vec![sent]);
    assert_eq!(hook_of(1).await, vec![opened]);
    assert!(hook_of(2).await.is_empty());
    assert!(results.iter().all(|r| r["duplicate"] == false));
    assert_eq!(event_count(&app, &ws).await, 3);
}

#[tokio::test]
async fn an_invalid_event_rejects_the_whole_batch() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    create_hook(&app, &ws, &["email.sent.v1"], json!({})).await;
    app.publish(&ws, example_event(&app, "email.sent.v1", json!({})).await)
        .await;
    let before_events = event_count(&app, &ws).await;
    let before_deliveries = delivery_ids(&app, &ws, "").await;

    let mut bad = example_event(&app, "email.sent.v1", json!({})).await;
    bad["data"]["step_number"] = json!("two");
    let good = example_event(&app, "email.sent.v1", json!({})).await;
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{ws}/events/batch"),
            json!({"events": [good.clone(), bad, good.clone()]}),
        )
        .await;
    let error = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        error["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("events[1]") && f.contains("step_number")),
        "{body}"
    );

    let unknown = json!({"type": "email.nope.v1", "data": {}});
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{ws}/events/batch"),
            json!({"events": [good, unknown]}),
        )
        .await;
    let error = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["field"], "events[1].type", "{body}");

    let mut unscoped = good.clone();
    unscoped["campaign_id"] = json!("");
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{ws}/events/batch"),
            json!({"events": [good.clone(), good.clone(), unscoped.clone()]}),
        )
        .await;
    let error = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["field"], "events[2].campaign_id", "{body}");
    let (status, body) = app
        .post(&format!("/v1/workspaces/{ws}/events"), unscoped)
        .await;
    let error = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["field"], "campaign_id", "{body}");

    assert_eq!(
        event_count(&app, &ws).await,
        before_events,
        "a rejected batch stored events"
    );
    assert_eq!(
        delivery_ids(&app, &ws, "").await,
        before_deliveries,
        "a rejected batch made deliveries"
    );
}

#[tokio::test]
async fn batch_of_zero_or_more_than_1000_events_is_422() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let path = format!("/v1/workspaces/{ws}/events/batch");
    let (status, body) = app.post(&path, json!({"events": []})).await;
    assert_invalid(status, &body, "events");
    let event = json!({"type": "meeting.status_changed.v1", "data": app.example("meeting.status_changed.v1").await});
    let (status, body) = app
        .post(&path, json!({"events": vec![event.clone(); 1001]}))
        .await;
    assert_invalid(status, &body, "events");
    assert_eq!(event_count(&app, &ws).await, 0);

    let (status, body) = app.post(&path, json!({"events": vec![event; 1000]})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["events"].as_array().expect("events").len(), 1000);
}

#[tokio::test]
async fn idempotency_key_returns_the_first_result_without_new_deliveries() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let hook = create_hook(&app, &ws, &["email.sent.v1"], json!({})).await;
    let event = example_event(&app, "email.sent.v1", json!({"idempotency_key": "send-42"})).await;

    let first = app.publish(&ws, event.clone()).await;
    assert_eq!(first["duplicate"], false);
    let second = app.publish(&ws, event.clone()).await;
    assert_eq!(second["duplicate"], true, "{second}");
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["deliveries"], first["deliveries"]);

    // A second webhook created in between must not get a delivery for the replay either.
    create_hook(&app, &ws, &["email.sent.v1"], json!({})).await;
    let third = app.publish(&ws, event).await;
    assert_eq!(
        (&third["id"], &third["duplicate"]),
        (&first["id"], &json!(true))
    );
    assert_eq!(event_count(&app, &ws).await, 1);
    assert_eq!(delivery_ids(&app, &ws, "").await.len(), 1);
    assert_eq!(
        delivery_ids(&app, &ws, &format!("webhook_id={hook}"))
            .await
            .len(),
        1
    );

    // The same key twice in one batch: one event, the second result marked duplicate.
    let batch = example_event(&app, "email.sent.v1", json!({"idempotency_key": "send-44"})).await;
    let (status, body) = app
        .post(
            &format!("/v1/workspaces/{ws}/events/batch"),
            json!({"events": [batch.clone(), batch]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["events"][0]["id"], body["events"][1]["id"], "{body}");
    assert_eq!(
        (
            &body["events"][0]["duplicate"],
            &body["events"][1]["duplicate"]
        ),
        (&json!(false), &json!(true))
    );
    assert_eq!(event_count(&app, &ws).await, 2);

    // Another key is another event; the same key in another workspace is independent.
    let other = app
        .publish(
            &ws,
            example_event(&app, "email.sent.v1", json!({"idempotency_key": "send-43"})).await,
        )
        .await;
    assert_ne!(other["id"], first["id"]);
    let ws2 = app.create_workspace().await;
    let elsewhere = app
        .publish(
            &ws2,
            example_event(&app, "email.sent.v1", json!({"idempotency_key": "send-42"})).await,
        )
        .await;
    assert_eq!(elsewhere["duplicate"], false);
    assert_ne!(elsewhere["id"], first["id"]);
}

// ---------------------------------------------------------------------------------------------
// Fan-out

#[tokio::test]
async fn event_types_select_webhooks() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let sent = create_hook(&app, &ws, &["email.sent.v1"], json!({})).await;
    let both = create_hook(&app, &ws, &["email.sent.v1", "email.opened.v1"], json!({})).await;
    create_hook(&app, &ws, &["lead.unsubscribed.v1"], json!({})).await;
    let other_ws = app.create_workspace().await;
    create_hook(&app, &other_ws, &["email.sent.v1"], json!({})).await;

    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.sent.v1", json!({})).await,
    )
    .await;
    assert_eq!(to, set(&[&sent, &both]));
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.opened.v1", json!({})).await,
    )
    .await;
    assert_eq!(to, set(&[&both]));
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.replied.v1", json!({})).await,
    )
    .await;
    assert!(to.is_empty(), "{to:?}");
}

#[tokio::test]
async fn campaign_and_client_filters_match_publish_attributes_and_data_fields() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let types = ["email.sent.v1", "meeting.status_changed.v1"];
    let top = create_hook(
        &app,
        &ws,
        &types,
        json!({"filters": {"campaign_ids": ["camp_top"]}}),
    )
    .await;
    let in_data = create_hook(
        &app,
        &ws,
        &types,
        json!({"filters": {"campaign_ids": ["camp_3j7hd02kqa9v"]}}),
    )
    .await;
    let client = create_hook(
        &app,
        &ws,
        &types,
        json!({"filters": {"client_ids": ["cli_top"]}}),
    )
    .await;
    let everything = create_hook(&app, &ws, &types, json!({})).await;

    // The example's data carries campaign camp_3j7hd02kqa9v and client cli_7w2mx4rb1n.
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.sent.v1", json!({})).await,
    )
    .await;
    assert_eq!(to, set(&[&in_data, &everything]));
    // A top-level attribute wins over the data field.
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.sent.v1", json!({"campaign_id": "camp_top"})).await,
    )
    .await;
    assert_eq!(to, set(&[&top, &everything]));
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.sent.v1", json!({"client_id": "cli_top"})).await,
    )
    .await;
    assert_eq!(to, set(&[&in_data, &client, &everything]));
    // A data field alone scopes the event.
    let mut event = example_event(&app, "email.sent.v1", json!({})).await;
    event["data"]["client_id"] = json!("cli_top");
    event["data"]["campaign_id"] = json!("camp_top");
    assert_eq!(
        receivers_of(&app, &ws, event).await,
        set(&[&top, &client, &everything])
    );
    // An event without a campaign or client does not match filters on them.
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "meeting.status_changed.v1", json!({})).await,
    )
    .await;
    assert_eq!(to, set(&[&everything]));
}

#[tokio::test]
async fn category_filter_applies_only_to_category_updates() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let hot = create_hook(
        &app,
        &ws,
        &["lead.category_updated.v1", "email.sent.v1"],
        json!({"filters": {"category_ids": ["cat_hot"]}}),
    )
    .await;
    let all = create_hook(
        &app,
        &ws,
        &["lead.category_updated.v1", "email.sent.v1"],
        json!({}),
    )
    .await;

    // The example's category is cat_5k2p9m.
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "lead.category_updated.v1", json!({})).await,
    )
    .await;
    assert_eq!(to, set(&[&all]));
    let to = receivers_of(
        &app,
        &ws,
        example_event(
            &app,
            "lead.category_updated.v1",
            json!({"category_id": "cat_hot"}),
        )
        .await,
    )
    .await;
    assert_eq!(to, set(&[&hot, &all]));
    let mut event = example_event(&app, "lead.category_updated.v1", json!({})).await;
    event["data"]["category_id"] = json!("cat_hot");
    assert_eq!(receivers_of(&app, &ws, event).await, set(&[&hot, &all]));
    // Other event types ignore the category filter, whatever category they carry.
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.sent.v1", json!({})).await,
    )
    .await;
    assert_eq!(to, set(&[&hot, &all]));
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.sent.v1", json!({"category_id": "cat_cold"})).await,
    )
    .await;
    assert_eq!(to, set(&[&hot, &all]));
}

#[tokio::test]
async fn agent_filter_matches_events_carrying_that_agent() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let types = ["linkedin.invitation_sent.v1", "email.sent.v1"];
    // The LinkedIn example's agent is agt_4q8vz1m6ks.
    let agent = create_hook(
        &app,
        &ws,
        &types,
        json!({"filters": {"agent_ids": ["agt_4q8vz1m6ks"]}}),
    )
    .await;
    let other_agent = create_hook(
        &app,
        &ws,
        &types,
        json!({"filters": {"agent_ids": ["agt_other"]}}),
    )
    .await;

    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "linkedin.invitation_sent.v1", json!({})).await,
    )
    .await;
    assert_eq!(to, set(&[&agent]));
    let to = receivers_of(
        &app,
        &ws,
        example_event(
            &app,
            "linkedin.invitation_sent.v1",
            json!({"agent_id": "agt_other"}),
        )
        .await,
    )
    .await;
    assert_eq!(to, set(&[&other_agent]));
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.sent.v1", json!({"agent_id": "agt_4q8vz1m6ks"})).await,
    )
    .await;
    assert_eq!(to, set(&[&agent]));
    // An event without an agent is not constrained by agent filters.
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.sent.v1", json!({})).await,
    )
    .await;
    assert_eq!(to, set(&[&agent, &other_agent]));
}

#[tokio::test]
async fn broadest_precedence_skips_narrower_webhooks_and_all_delivers_to_every_match() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let (status, body) = app
        .patch(
            &format!("/v1/workspaces/{ws}"),
            json!({"level_precedence": "broadest"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let campaign_filter = json!({"filters": {"campaign_ids": ["camp_3j7hd02kqa9v"]}});
    let client_filter = json!({"filters": {"client_ids": ["cli_7w2mx4rb1n"]}});
    let workspace_level = create_hook(&app, &ws, &["email.sent.v1"], json!({})).await;
    let campaign_level = create_hook(
        &app,
        &ws,
        &["email.sent.v1", "email.opened.v1", "email.bounced.v1"],
        campaign_filter,
    )
    .await;
    let client_level = create_hook(&app, &ws, &["email.opened.v1"], client_filter).await;

    let sent = || example_event(&app, "email.sent.v1", json!({}));
    assert_eq!(
        receivers_of(&app, &ws, sent().await).await,
        set(&[&workspace_level])
    );
    // Per event type: no workspace-level webhook takes email.opened.v1, so the client level is broadest.
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.opened.v1", json!({})).await,
    )
    .await;
    assert_eq!(to, set(&[&client_level]));
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.bounced.v1", json!({})).await,
    )
    .await;
    assert_eq!(to, set(&[&campaign_level]));
    // A broader webhook that does not match (another campaign's event) does not suppress anything.
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.opened.v1", json!({"client_id": "cli_other"})).await,
    )
    .await;
    assert_eq!(to, set(&[&campaign_level]));

    let (status, body) = app
        .patch(
            &format!("/v1/workspaces/{ws}"),
            json!({"level_precedence": "all"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        receivers_of(&app, &ws, sent().await).await,
        set(&[&workspace_level, &campaign_level])
    );
    let to = receivers_of(
        &app,
        &ws,
        example_event(&app, "email.opened.v1", json!({})).await,
    )
    .await;
    assert_eq!(to, set(&[&campaign_level, &client_level]));
}

// ---------------------------------------------------------------------------------------------
// Deliveries

#[tokio::test]
async fn deliveries_list_filters_by_webhook_status_event_type_and_time() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let ws = app.create_workspace().await;
    let live = str_of(
        &app.create_webhook(
            &ws,
            json!({"url": receiver.url, "event_types": ["email.sent.v1", "email.opened.v1"]}),
        )
        .await["id"],
    );
    let paused = create_hook(&app, &ws, &["email.sent.v1"], json!({})).await;

    let first = app
        .publish(&ws, example_event(&app, "email.sent.v1", json!({})).await)
        .await;
    let mut live_sent = String::new();
    let mut paused_sent = String::new();
    for id in first["deliveries"].as_array().expect("deliveries") {
        let delivery = app.delivery(&ws, &str_of(id)).await;
        if delivery["webhook_id"] == live.as_str() {
            live_sent = str_of(id);
        } else {
            paused_sent = str_of(id);
        }
    }
    assert!(!live_sent.is_empty() && !paused_sent.is_empty(), "{first}");
    let live_sent_detail = app
        .wait_for_status(&ws, &live_sent, "delivered", WAIT)
        .await;

    let second = app
        .publish(&ws, example_event(&app, "email.opened.v1", json!({})).await)
        .await;
    let live_opened = str_of(&second["deliveries"][0]);
    let live_opened_detail = app
        .wait_for_status(&ws, &live_opened, "delivered", WAIT)
        .await;
    receiver.wait_for(2, WAIT).await;

    assert_eq!(
        delivery_ids(&app, &ws, "").await,
        set(&[&live_sent, &paused_sent, &live_opened])
    );
    assert_eq!(
        delivery_ids(&app, &ws, &format!("webhook_id={live}")).await,
        set(&[&live_sent, &live_opened])
    );
    assert_eq!(
        delivery_ids(&app, &ws, &format!("webhook_id={paused}")).await,
        set(&[&paused_sent])
    );
    assert_eq!(
        delivery_ids(&app, &ws, "status=delivered").await,
        set(&[&live_sent, &live_opened])
    );
    assert_eq!(
        delivery_ids(&app, &ws, "status=pending").await,
        set(&[&paused_sent])
    );
    assert!(delivery_ids(&app, &ws, "status=failed").await.is_empty());
    assert_eq!(
        delivery_ids(&app, &ws, "event_type=email.opened.v1").await,
        set(&[&live_opened])
    );
    assert_eq!(
        delivery_ids(
            &app,
            &ws,
            &format!("event_type=email.sent.v1&webhook_id={live}")
        )
        .await,
        set(&[&live_sent])
    );

    let sent_at = str_of(&live_sent_detail["created_at"]);
    let opened_at = str_of(&live_opened_detail["created_at"]);
    assert!(
        sent_at < opened_at,
        "the second publish came after the first was delivered"
    );
    assert_eq!(
        delivery_ids(&app, &ws, &format!("since={opened_at}")).await,
        set(&[&live_opened])
    );
    assert_eq!(
        delivery_ids(&app, &ws, &format!("until={opened_at}")).await,
        set(&[&live_sent, &paused_sent])
    );
    assert_eq!(
        delivery_ids(&app, &ws, &format!("since={sent_at}&until={opened_at}")).await,
        set(&[&live_sent, &paused_sent])
    );
    assert!(
        delivery_ids(&app, &ws, "since=2999-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    assert!(
        delivery_ids(&app, &ws, "until=2000-01-01T00:00:00Z")
            .await
            .is_empty()
    );

    let (status, body) = app
        .get(&format!("/v1/workspaces/{ws}/deliveries?status=bogus"))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) = app
        .get(&format!("/v1/workspaces/{ws}/deliveries?since=yesterday"))
        .await;
    assert!(matches!(status.as_u16(), 400 | 422), "{status}");
    assert_error(status, &body, status);
}

#[tokio::test]
async fn delivery_detail_shows_its_attempts() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let ws = app.create_workspace().await;
    let hook = str_of(
        &app.create_webhook(
            &ws,
            json!({"url": receiver.url, "event_types": ["email.sent.v1"]}),
        )
        .await["id"],
    );
    let published = app
        .publish(&ws, example_event(&app, "email.sent.v1", json!({})).await)
        .await;
    let id = str_of(&published["deliveries"][0]);

    let requests = receiver.wait_for(1, WAIT).await;
    assert_eq!(
        requests[0].json()["data"],
        app.example("email.sent.v1").await
    );
    let delivery = app.wait_for_status(&ws, &id, "delivered", WAIT).await;
    assert_eq!(delivery["id"], id.as_str());
    assert_eq!(delivery["webhook_id"], hook.as_str());
    assert_eq!(delivery["event_id"], published["id"]);
    assert_eq!(delivery["event_type"], "email.sent.v1");
    assert_eq!(delivery["attempt_count"], 1);
    assert_eq!(delivery["last_status_code"], 200);
    let attempts = delivery["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{delivery:#}");
    assert_eq!(attempts[0]["status_code"], 200);
    assert_eq!(attempts[0]["number"], 1);
    assert!(
        attempts[0]["request_headers"]["webhook-id"].is_string(),
        "{delivery:#}"
    );

    let (status, body) = app
        .get(&format!("/v1/workspaces/{ws}/deliveries/dlv_nonsense"))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// Operations

#[tokio::test]
async fn health_and_readiness_are_200() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let (status, body) = app.request(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
}

/// The value of a counter on `/metrics`, if it is there.
async fn metric(app: &TestApp, name: &str) -> Option<f64> {
    let response = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.expect("text");
    text.lines().find(|l| l.starts_with(name)).map(|line| {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("not a number: {line}"))
    })
}

#[tokio::test]
async fn metrics_count_published_events() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    app.publish(&ws, example_event(&app, "email.sent.v1", json!({})).await)
        .await;
    let count = metric(&app, "tidings_events_published_total")
        .await
        .expect("a published counter");
    assert!(count >= 1.0, "{count}");
}

#[tokio::test]
async fn metrics_count_delivered_deliveries() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let ws = app.create_workspace().await;
    app.create_webhook(
        &ws,
        json!({"url": receiver.url, "event_types": ["email.sent.v1"]}),
    )
    .await;
    let published = app
        .publish(&ws, example_event(&app, "email.sent.v1", json!({})).await)
        .await;
    app.wait_for_status(&ws, &str_of(&published["deliveries"][0]), "delivered", WAIT)
        .await;
    // Counted once its outcome is committed, which the status shows a moment before.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let count = metric(&app, "tidings_deliveries_delivered_total").await;
        if count.is_some_and(|c| c >= 1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivered counter: {count:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn docs_serves_a_browsable_page_of_the_openapi_document_from_the_binary() {
    let app = spawn_app().await;
    let get = |path: &'static str| {
        let request = app.http.get(app.url(path));
        async move {
            let response = request.send().await.expect("request sent");
            let status = response.status();
            let kind = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (status, kind, response.text().await.expect("body"))
        }
    };
    // No key needed: the page and its files, like the document, are public.
    let (status, kind, page) = get("/docs").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(kind.starts_with("text/html"), "{kind}");
    assert!(page.contains("swagger-ui"), "{page}");
    let (status, _, initializer) = get("/docs/swagger-initializer.js").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    // Served from the binary, not a CDN: the page works where the browser has no Internet.
    let (status, kind, bundle) = get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(kind.contains("javascript"), "{kind}");
    assert!(bundle.len() > 100_000, "{} bytes", bundle.len());
    assert!(
        !page.contains("://cdn") && !page.contains("unpkg.com"),
        "{page}"
    );

    let (_, doc) = app.request(Method::GET, "/openapi.json", None, None).await;
    assert!(doc["paths"]["/docs"]["get"].is_object(), "{}", doc["paths"]);
}

#[tokio::test]
async fn openapi_lists_every_v1_path_the_router_serves() {
    let app = spawn_app().await;
    let (status, doc) = app.request(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let served = [
        ("/v1/workspaces", &["get", "post"][..]),
        ("/v1/workspaces/{ws}", &["get", "patch", "delete"]),
        ("/v1/keys", &["get", "post"]),
        ("/v1/keys/{id}", &["delete"]),
        ("/v1/event-types", &["get", "post"]),
        ("/v1/event-types/{name}", &["get", "put"]),
        ("/v1/workspaces/{ws}/webhooks", &["get", "post"]),
        (
            "/v1/workspaces/{ws}/webhooks/{id}",
            &["get", "patch", "delete"],
        ),
        ("/v1/workspaces/{ws}/events", &["get", "post"]),
        ("/v1/workspaces/{ws}/events/batch", &["post"]),
        ("/v1/workspaces/{ws}/events/{id}", &["get"]),
        ("/v1/workspaces/{ws}/deliveries", &["get"]),
        ("/v1/workspaces/{ws}/deliveries/{id}", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in served {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"));
        for method in methods {
            assert!(
                item.get(*method).is_some(),
                "{method} {path} missing from the OpenAPI document"
            );
        }
    }
    // And the other way round: every documented /v1 operation is routed (a fake id gets an error
    // from a handler, not the router's 404/405).
    for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/v1/")) {
        let concrete = path
            .replace("{ws}", "ws_00000000000000000000000000")
            .replace("{id}", "nothing_here")
            .replace("{name}", "nothing.here.v1");
        let operations = item.as_object().expect("operations");
        for method in ["get", "post", "put", "patch", "delete"]
            .into_iter()
            .filter(|m| operations.contains_key(*m))
        {
            let method =
                Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            let (status, body) = app
                .request(method.clone(), &concrete, Some(&app.operator_key), None)
                .await;
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed"
            );
            assert!(
                body["error"]["code"].is_string() || status.is_success(),
                "{method} {path}: {status} {body}"
            );
            assert_ne!(
                body["error"]["code"], "route_not_found",
                "{method} {path} is documented but not routed"
            );
        }
    }
}

#[tokio::test]
async fn a_nul_character_is_stored_or_refused_with_a_clear_error_never_a_500() {
    // JSON may carry U+0000; SQLite text holds it, PostgreSQL text cannot: that backend must say so
    // in the API's error shape, not fail with a 500.
    let app = spawn_app().await;
    let (status, body) = app
        .post("/v1/workspaces", json!({ "name": "Acme\u{0}Outbound" }))
        .await;
    if crate::helpers::on_postgres() {
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "validation_failed", "{body}");
        assert!(
            str_of(&body["error"]["message"]).contains("cannot be stored"),
            "{body}"
        );
    } else {
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["name"], "Acme\u{0}Outbound");
    }
}
