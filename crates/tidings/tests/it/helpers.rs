//! Test harness: `spawn_app()` runs Tidings on 127.0.0.1:0 with a fresh database; `Receiver` is a
//! real HTTP endpoint that records what it gets and answers as told. Also the small pieces the test
//! files share: JSON helpers, webhook bodies, publishing the catalog example, workspace keys and
//! checking signatures the way a receiver would.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tidings::config::{FlagOverrides, Settings};
use tidings_store::KeyScope;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

/// The string in `value`; panics naming the value when it is not a string.
pub fn str_of(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_owned()
}

/// `body` with the fields of `extra` merged in (replacing any of the same name) when both are
/// objects; otherwise `body` unchanged.
pub fn merged(mut body: Value, extra: Value) -> Value {
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

/// A webhook body for `url` subscribed to `event_types`, with `extra` fields merged in.
pub fn webhook_body(url: &str, event_types: &[&str], extra: Value) -> Value {
    merged(
        json!({ "name": "test hook", "url": url, "event_types": event_types }),
        extra,
    )
}

// ---------------------------------------------------------------------------------------------
// Signatures, checked the way a receiver would
// ---------------------------------------------------------------------------------------------

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// HMAC-SHA256 of `body` under `key`, as lowercase hex (the `hmac-sha256` scheme's digest).
pub fn hmac_sha256_hex(key: &[u8], body: &[u8]) -> String {
    hmac_sha256(key, body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh random Standard Webhooks secret (`whsec_` and 32 random bytes in base64).
pub fn random_standard_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", BASE64.encode(bytes))
}

/// Whether the Standard Webhooks signature `header` (space-separated `v1,<base64>` candidates)
/// holds a valid signature of (`id`, `timestamp`, `body`) under the `whsec_` `secret`.
pub fn standard_signature_matches(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    header: &str,
) -> bool {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ secret"))
        .expect("base64 secret");
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    let expected = format!("v1,{}", BASE64.encode(hmac_sha256(&key, &message)));
    header.split(' ').any(|candidate| candidate == expected)
}

/// Whether a received request carries a valid Standard Webhooks signature under `secret`; panics
/// when a `webhook-id`, `webhook-timestamp` or `webhook-signature` header is missing.
pub fn standard_signature_verifies(secret: &str, request: &Received) -> bool {
    let id = request.header("webhook-id").expect("webhook-id");
    let timestamp = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp");
    let header = request
        .header("webhook-signature")
        .expect("webhook-signature");
    standard_signature_matches(secret, id, timestamp, &request.body, header)
}

// ---------------------------------------------------------------------------------------------
// The app under test
// ---------------------------------------------------------------------------------------------

/// A port on 127.0.0.1 that was free a moment ago, so nothing listens on it.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

pub use tidings_testkit::serving::serving_port;

/// Sends logs to the test output when `TEST_LOG` is set.
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

/// Whether these tests run against PostgreSQL (`TIDINGS_TEST_BACKEND=postgres`) instead of SQLite.
pub fn on_postgres() -> bool {
    std::env::var("TIDINGS_TEST_BACKEND").is_ok_and(|backend| backend == "postgres")
}

/// The database of test servers started in `dir`: a SQLite file there, or a new database on the
/// test PostgreSQL cluster. Every call with the same `dir` names the same database.
pub fn database_url(dir: &std::path::Path) -> String {
    let memo = dir.join("database-url");
    if let Ok(url) = std::fs::read_to_string(&memo) {
        return url;
    }
    let url = if on_postgres() {
        // Callers may be sync code inside a single-threaded test runtime: create it elsewhere.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(tidings_testkit::postgres::fresh_database())
        })
        .join()
        .expect("a test database")
    } else {
        format!("sqlite://{}", dir.join("tidings.db").display())
    };
    std::fs::write(&memo, &url).expect("remember the test database");
    url
}

/// Settings for a test server: loopback, a fresh database, private http targets allowed.
pub fn test_settings(dir: &std::path::Path) -> Settings {
    let mut settings = Settings::load(
        None,
        FlagOverrides {
            listen: Some("127.0.0.1:0".parse().expect("addr")),
            database_url: Some(database_url(dir)),
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

    /// GETs `path` with the operator key, asserts a 200 and returns the body.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
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

    // -- Workspaces, keys and webhooks ----------------------------------------------------------

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

    /// Creates a webhook in `ws` for `url` subscribed to `event_types` (see [`webhook_body`]).
    pub async fn add_webhook(
        &self,
        ws: &str,
        url: &str,
        event_types: &[&str],
        extra: Value,
    ) -> Value {
        self.create_webhook(ws, webhook_body(url, event_types, extra))
            .await
    }

    /// A new workspace with one webhook for `url` subscribed to `event_types`, with `extra`
    /// fields merged in: (workspace id, webhook as created, secret included).
    pub async fn workspace_with_webhook(
        &self,
        url: &str,
        event_types: &[&str],
        extra: Value,
    ) -> (String, Value) {
        let ws = self.create_workspace().await;
        let hook = self.add_webhook(&ws, url, event_types, extra).await;
        (ws, hook)
    }

    /// An operator-made workspace key for `ws`: (key id, token).
    pub async fn workspace_key(&self, ws: &str) -> (String, String) {
        let (status, body) = self
            .post(
                "/v1/keys",
                json!({"scope": "workspace", "workspace_id": ws}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (str_of(&body["id"]), str_of(&body["key"]))
    }

    // -- Events and deliveries -----------------------------------------------------------------

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

    /// Publishes an `event_type` event carrying `data`: (event id, delivery ids).
    pub async fn publish_data(
        &self,
        ws: &str,
        event_type: &str,
        data: Value,
    ) -> (String, Vec<String>) {
        let published = self
            .publish(ws, json!({ "type": event_type, "data": data }))
            .await;
        let deliveries = published["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .map(|d| d.as_str().expect("delivery id").to_owned())
            .collect();
        (
            published["id"].as_str().expect("event id").to_owned(),
            deliveries,
        )
    }

    /// Publishes the catalog example of `event_type`: (event id, delivery ids, data sent).
    pub async fn publish_example(
        &self,
        ws: &str,
        event_type: &str,
    ) -> (String, Vec<String>, Value) {
        let data = self.example(event_type).await;
        let (event_id, deliveries) = self.publish_data(ws, event_type, data.clone()).await;
        (event_id, deliveries, data)
    }

    /// Publishes the catalog example of `event_type` to a workspace where exactly one webhook
    /// takes it: (event id, delivery id).
    pub async fn publish_one(&self, ws: &str, event_type: &str) -> (String, String) {
        let (event_id, deliveries, _) = self.publish_example(ws, event_type).await;
        assert_eq!(
            deliveries.len(),
            1,
            "one webhook, one delivery: {deliveries:?}"
        );
        (event_id, deliveries[0].clone())
    }

    /// A delivery as the API shows it.
    pub async fn delivery(&self, ws: &str, id: &str) -> Value {
        self.get_ok(&format!("/v1/workspaces/{ws}/deliveries/{id}"))
            .await
    }

    /// Polls a delivery until `done` holds for it or `timeout` passes.
    pub async fn wait_for_delivery(
        &self,
        ws: &str,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        poll_until("delivery", timeout, || self.delivery(ws, id), done).await
    }

    /// A webhook as the API shows it.
    pub async fn webhook(&self, ws: &str, id: &str) -> Value {
        self.get_ok(&format!("/v1/workspaces/{ws}/webhooks/{id}"))
            .await
    }

    /// Polls a webhook until `done` holds for it or `timeout` passes.
    pub async fn wait_for_webhook(
        &self,
        ws: &str,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        poll_until("webhook", timeout, || self.webhook(ws, id), done).await
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

/// Fetches with `fetch` every 25 ms until `done` holds for the result; panics naming `what` once
/// `timeout` has passed.
async fn poll_until<F: Future<Output = Value>>(
    what: &str,
    timeout: Duration,
    mut fetch: impl FnMut() -> F,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let value = fetch().await;
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never reached the expected state: {value:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Receivers
// ---------------------------------------------------------------------------------------------

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
