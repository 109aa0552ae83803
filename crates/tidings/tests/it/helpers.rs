//! Test harness: `spawn_app()` runs Tidings on 127.0.0.1:0 with a fresh database; `Receiver` is a
//! real HTTP endpoint that records what it gets and answers as told.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tidings::config::{FlagOverrides, Settings};
use tidings_store::KeyScope;
use tokio_util::sync::CancellationToken;

pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,tidings=debug")
            .with_test_writer()
            .try_init();
    }
}

pub struct TestApp {
    pub address: String,
    pub operator_key: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Settings for a test server: loopback, a fresh database, private http targets allowed.
pub fn test_settings(dir: &std::path::Path) -> Settings {
    let mut settings = Settings::load(
        None,
        FlagOverrides {
            listen: Some("127.0.0.1:0".parse().expect("addr")),
            database_url: Some(format!("sqlite://{}", dir.join("tidings.db").display())),
            allow_private_targets: Some(true),
            allow_http_targets: Some(true),
        },
    )
    .expect("settings");
    settings.sqlite_synchronous_full = false;
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(change: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(dir.path());
    change(&mut settings);
    let app = tidings::Application::build(&settings)
        .await
        .expect("app builds");
    let port = app.port();
    let (_, operator_key) = tidings_server::issue_key(
        app.store().as_ref(),
        KeyScope::Operator,
        None,
        "tests".into(),
    )
    .await
    .expect("operator key");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        operator_key,
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        dir,
        shutdown,
        task: Some(task),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// Stops the app the way SIGTERM does and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("joins").expect("stops cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(reqwest::Method::GET, path, Some(&self.operator_key), None)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(
            reqwest::Method::POST,
            path,
            Some(&self.operator_key),
            Some(body),
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(
            reqwest::Method::PATCH,
            path,
            Some(&self.operator_key),
            Some(body),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.request(
            reqwest::Method::DELETE,
            path,
            Some(&self.operator_key),
            None,
        )
        .await
    }

    pub async fn create_workspace(&self) -> String {
        let (status, body) = self.post("/v1/workspaces", json!({"name": "Acme"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Creates a webhook from `body` (url and event types at least) and returns the response.
    pub async fn create_webhook(&self, ws: &str, body: Value) -> Value {
        let (status, created) = self
            .post(&format!("/v1/workspaces/{ws}/webhooks"), body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    /// The catalog example for an event type.
    pub async fn example(&self, event_type: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/event-types/{event_type}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["example"].clone()
    }

    /// Publishes an event and asserts it was accepted.
    pub async fn publish(&self, ws: &str, body: Value) -> Value {
        let (status, published) = self
            .post(&format!("/v1/workspaces/{ws}/events"), body)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{published}");
        published
    }

    pub async fn delivery(&self, ws: &str, id: &str) -> Value {
        let (status, body) = self
            .get(&format!("/v1/workspaces/{ws}/deliveries/{id}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Polls a delivery until `done` holds for it or `timeout` passes.
    pub async fn wait_for_delivery(
        &self,
        ws: &str,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let delivery = self.delivery(ws, id).await;
            if done(&delivery) {
                return delivery;
            }
            assert!(
                Instant::now() < deadline,
                "delivery never reached the expected state: {delivery:#}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_for_status(
        &self,
        ws: &str,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> Value {
        self.wait_for_delivery(ws, id, timeout, |d| d["status"] == status)
            .await
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// How a receiver answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct ReceiverState {
    requests: Vec<Received>,
    /// Replies used in order; when empty, `fallback` answers.
    script: VecDeque<Reply>,
    fallback: Option<Reply>,
}

/// A real HTTP endpoint on 127.0.0.1 that records requests and answers from a script.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    shutdown: CancellationToken,
}

impl Receiver {
    /// A receiver answering 200 until told otherwise.
    pub async fn start() -> Self {
        Self::answering(Reply::status(200)).await
    }

    pub async fn answering(fallback: Reply) -> Self {
        let state = Arc::new(Mutex::new(ReceiverState {
            fallback: Some(fallback),
            ..ReceiverState::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let shared = state.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let shared = shared.clone();
                async move {
                    let reply = {
                        let mut state = shared.lock().expect("lock");
                        state.requests.push(Received {
                            path: uri.path().to_owned(),
                            headers: headers
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.as_str().to_owned(),
                                        v.to_str().unwrap_or_default().to_owned(),
                                    )
                                })
                                .collect(),
                            body,
                            at: Instant::now(),
                        });
                        state
                            .script
                            .pop_front()
                            .or_else(|| state.fallback.clone())
                            .unwrap_or_else(|| Reply::status(200))
                    };
                    tokio::time::sleep(reply.delay).await;
                    let mut response = axum::http::Response::builder().status(reply.status);
                    for (name, value) in &reply.headers {
                        response = response.header(name, value);
                    }
                    response
                        .body(axum::body::Body::from(reply.body))
                        .expect("response")
                }
            },
        );
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            addr,
            state,
            shutdown,
        }
    }

    /// Queues replies for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().expect("lock").script.extend(replies);
    }

    pub fn set_fallback(&self, reply: Reply) {
        self.state.lock().expect("lock").fallback = Some(reply);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().expect("lock").requests.clone()
    }

    /// Waits until at least `count` requests arrived.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} requests, got {}",
                requests.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if Arc::strong_count(&self.state) <= 2 {
            self.shutdown.cancel();
        }
    }
}
