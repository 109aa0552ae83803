//! Portal sessions (signed dashboard links for one workspace) and the embedded dashboard's assets.

use std::time::Duration;

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn portal_session(app: &TestApp, ws: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let (status, value) = app
        .request(
            Method::POST,
            &format!("/v1/workspaces/{ws}/portal-sessions"),
            Some(key),
            Some(body),
        )
        .await;
    (
        StatusCode::from_u16(status.as_u16()).expect("status"),
        value,
    )
}

async fn token_for(app: &TestApp, ws: &str) -> String {
    let (status, session) = portal_session(app, ws, &app.operator_key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    session["token"].as_str().expect("token").to_owned()
}

async fn as_portal(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> u16 {
    app.request(method, path, Some(token), body)
        .await
        .0
        .as_u16()
}

#[tokio::test]
async fn portal_link_opens_the_dashboard_for_its_workspace_only() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let other = app.create_workspace().await;
    let (status, session) = portal_session(&app, &ws, &app.operator_key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let token = session["token"].as_str().expect("token");
    let url = session["url"].as_str().expect("url");
    assert!(url.starts_with(&app.address), "{url}");
    assert!(url.ends_with(&format!("/#token={token}")), "{url}");
    let expires =
        tidings_core::parse_rfc3339(session["expires_at"].as_str().expect("expiry")).expect("time");
    let hour = expires - tidings_core::now_millis();
    assert!(
        (3_500_000..=3_600_000).contains(&hour),
        "default lifetime is an hour: {hour} ms"
    );

    let (status, listed) = app
        .request(Method::GET, "/v1/workspaces", Some(token), None)
        .await;
    assert_eq!(status.as_u16(), 200, "{listed}");
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["data"][0]["id"], ws.as_str());
    assert_eq!(
        as_portal(
            &app,
            token,
            Method::GET,
            &format!("/v1/workspaces/{ws}/webhooks"),
            None
        )
        .await,
        200
    );
    assert_eq!(
        as_portal(&app, token, Method::GET, "/v1/event-types", None).await,
        200
    );
    assert_eq!(
        as_portal(
            &app,
            token,
            Method::GET,
            &format!("/v1/workspaces/{other}/webhooks"),
            None
        )
        .await,
        404
    );
    assert_eq!(
        as_portal(
            &app,
            token,
            Method::GET,
            &format!("/v1/workspaces/{other}"),
            None
        )
        .await,
        404
    );
}

#[tokio::test]
async fn portal_sessions_cannot_publish_mint_sessions_or_act_as_operator() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let token = token_for(&app, &ws).await;
    let example = app.example("email.sent.v1").await;
    let publish = json!({"type": "email.sent.v1", "data": example});
    assert_eq!(
        as_portal(
            &app,
            &token,
            Method::POST,
            &format!("/v1/workspaces/{ws}/events"),
            Some(publish)
        )
        .await,
        403
    );
    let (status, body) = portal_session(&app, &ws, &token, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        as_portal(
            &app,
            &token,
            Method::POST,
            "/v1/workspaces",
            Some(json!({"name": "x"}))
        )
        .await,
        403
    );
    assert_eq!(
        as_portal(&app, &token, Method::GET, "/v1/keys", None).await,
        403
    );
}

#[tokio::test]
async fn portal_tokens_expire_and_cannot_be_altered() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let other = app.create_workspace().await;
    let (status, session) = portal_session(&app, &ws, &app.operator_key, json!({"ttl_s": 1})).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let token = session["token"].as_str().expect("token").to_owned();
    let path = format!("/v1/workspaces/{ws}/webhooks");
    assert_eq!(as_portal(&app, &token, Method::GET, &path, None).await, 200);

    // A token whose payload names another workspace, keeping the original signature.
    let other_token = token_for(&app, &other).await;
    let (_, signature) = token.split_once('.').expect("signed");
    let (other_payload, _) = other_token.split_once('.').expect("signed");
    let forged = format!("{other_payload}.{signature}");
    assert_eq!(
        as_portal(
            &app,
            &forged,
            Method::GET,
            &format!("/v1/workspaces/{other}/webhooks"),
            None
        )
        .await,
        401
    );
    assert_eq!(
        as_portal(&app, &format!("{token}x"), Method::GET, &path, None).await,
        401
    );
    assert_eq!(
        as_portal(&app, "tdp_garbage", Method::GET, &path, None).await,
        401
    );

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = app.request(Method::GET, &path, Some(&token), None).await;
    assert_eq!(
        status.as_u16(),
        401,
        "an expired portal session is refused: {body}"
    );
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn portal_session_lifetimes_are_bounded_and_workspace_keys_open_their_own() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let other = app.create_workspace().await;
    for ttl in [0, 86_401] {
        let (status, body) =
            portal_session(&app, &ws, &app.operator_key, json!({"ttl_s": ttl})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["field"], "ttl_s");
    }
    let (_, key) = app.workspace_key(&ws).await;
    let (status, body) = portal_session(&app, &ws, &key, json!({"ttl_s": 600})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = portal_session(&app, &other, &key, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = app
        .request(
            Method::POST,
            &format!("/v1/workspaces/{ws}/portal-sessions"),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(status.as_u16(), 401);
}

#[tokio::test]
async fn dashboard_is_served_from_the_binary_with_a_strict_content_policy() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/", "text/html"),
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let response = app.http.get(app.url(path)).send().await.expect("sent");
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let headers = response.headers().clone();
        let kind = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(kind.starts_with(content_type), "{path}: {kind}");
        let policy = headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            policy.contains("default-src 'self'") && policy.contains("connect-src 'self'"),
            "{path}: {policy}"
        );
        let body = response.text().await.expect("body");
        assert!(!body.is_empty(), "{path} is empty");
        // Nothing is loaded from another host (the browser tests also watch every request).
        for external in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "url(http",
            "url(//",
            "@import",
        ] {
            assert!(
                !body.contains(external),
                "{path} loads from another host via {external}"
            );
        }
    }
    let index = app
        .http
        .get(app.url("/"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    assert!(
        index.contains("/dashboard/app.js") && index.contains("/dashboard/app.css"),
        "{index}"
    );
}
