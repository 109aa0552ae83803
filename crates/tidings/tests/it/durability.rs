//! Durability of the real `tidings` binary: every accepted event is delivered across a SIGKILL, and a
//! SIGTERM lets the attempt in flight finish and records it, so nothing is sent twice.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Receiver, Reply, database_url, serving_port};

const BIN: &str = env!("CARGO_BIN_EXE_tidings");

/// Creates an operator key with the CLI, the way an operator does before the first start.
fn create_operator_key(dir: &Path) -> String {
    let output = Command::new(BIN)
        .args([
            "key",
            "create",
            "--operator",
            "--database-url",
            &database_url(dir),
        ])
        .current_dir(dir)
        .env_remove("TIDINGS_CONFIG")
        .output()
        .expect("run `tidings key create`");
    assert!(
        output.status.success(),
        "`tidings key create --operator` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8(output.stdout)
        .expect("utf-8 key")
        .trim()
        .to_owned();
    assert!(
        key.starts_with("tdk_"),
        "`tidings key create` printed `{key}`, not a key"
    );
    key
}

/// How `serve` is told where to listen and what to store in.
#[derive(Clone, Copy)]
enum Configure {
    Flags,
    Environment,
}

/// A `tidings serve` child process, killed and reaped on every exit path.
struct Server {
    child: Child,
    address: String,
    log: PathBuf,
}

impl Server {
    /// Starts `tidings serve` on a loopback port the system picks; `wait_ready` learns it from
    /// the log.
    fn start(dir: &Path, configure: Configure) -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let listen = "127.0.0.1:0";
        let log = dir.join(format!(
            "serve-{}.log",
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let mut command = Command::new(BIN);
        command
            .current_dir(dir)
            .env_remove("TIDINGS_CONFIG")
            .env("TIDINGS_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"));
        match configure {
            Configure::Flags => {
                command.args([
                    "serve",
                    "--listen",
                    listen,
                    "--database-url",
                    &database_url(dir),
                ]);
            }
            Configure::Environment => {
                command
                    .arg("serve")
                    .env("TIDINGS_LISTEN", listen)
                    .env("TIDINGS_DATABASE_URL", database_url(dir));
            }
        }
        command.args(["--allow-private-targets", "--allow-http-targets"]);
        let child = command.spawn().expect("start `tidings serve`");
        Self {
            child,
            address: String::new(),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the server has logged its port and `/readyz` answers 200, failing fast if the
    /// process exits.
    async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                panic!(
                    "`tidings serve` exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if self.address.is_empty()
                && let Some(port) = serving_port(&self.log())
            {
                self.address = format!("http://127.0.0.1:{port}");
            }
            if !self.address.is_empty()
                && let Ok(response) = http.get(format!("{}/readyz", self.address)).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`tidings serve` was not ready within 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no chance to finish anything.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    /// Sends SIGTERM (through `kill(1)`: this workspace forbids unsafe code).
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit on its own.
    async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "`tidings serve` did not exit within {timeout:?} of SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already reaped children are not signalled again; errors here have nowhere to go.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The API of one running server, as an operator.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    address: String,
    key: String,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self
            .send(reqwest::Method::GET, path, None)
            .await
            .expect("GET sent");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value, expected: u16) -> Value {
        let (status, answer) = self
            .send(reqwest::Method::POST, path, Some(&body))
            .await
            .expect("POST sent");
        assert_eq!(status, expected, "POST {path}: {answer}");
        answer
    }

    /// A workspace with one webhook for `email.sent.v1` pointing at `url`, and that type's example data.
    async fn workspace_with_webhook(&self, url: &str) -> (String, String, Value) {
        let ws = self
            .post("/v1/workspaces", json!({"name": "Durable"}), 201)
            .await["id"]
            .as_str()
            .expect("ws id")
            .to_owned();
        let hook = self
            .post(
                &format!("/v1/workspaces/{ws}/webhooks"),
                json!({"url": url, "event_types": ["email.sent.v1"]}),
                201,
            )
            .await;
        let hook_id = hook["id"].as_str().expect("webhook id").to_owned();
        let example = self.get("/v1/event-types/email.sent.v1").await["example"].clone();
        assert!(example.is_object(), "email.sent.v1 has an example");
        (ws, hook_id, example)
    }

    async fn pending_count(&self, ws: &str) -> usize {
        let page = self
            .get(&format!(
                "/v1/workspaces/{ws}/deliveries?status=pending&limit=500"
            ))
            .await;
        page["data"].as_array().expect("data array").len()
    }
}

fn http_client() -> reqwest::Client {
    // Building the product's delivery client installs the process-wide TLS provider reqwest needs.
    let _ = tidings_delivery::DeliveryClient::new(false);
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// Event ids the receiver has seen, deduplicated on `webhook-id`.
fn seen_ids(receiver: &Receiver) -> HashSet<String> {
    receiver
        .requests()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect()
}

const MAX_EVENTS: usize = 2000;
const PUBLISHERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_accepted_event_is_delivered_after_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let http = http_client();
    let key = create_operator_key(dir.path());

    let mut server = Server::start(dir.path(), Configure::Flags);
    server.wait_ready(&http).await;
    let api = Api {
        http: http.clone(),
        address: server.address.clone(),
        key: key.clone(),
    };
    let (ws, _hook, example) = api.workspace_with_webhook(&receiver.url).await;

    // Publish from several tasks until the kill (or MAX_EVENTS), keeping every id that got a 202.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(json!({"type": "email.sent.v1", "data": example}));
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let (api, ws, body, stop, started) = (
            api.clone(),
            ws.clone(),
            body.clone(),
            stop.clone(),
            started.clone(),
        );
        publishers.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut refused = Vec::new();
            while !stop.load(Ordering::Acquire)
                && started.fetch_add(1, Ordering::AcqRel) < MAX_EVENTS
            {
                match api
                    .send(
                        reqwest::Method::POST,
                        &format!("/v1/workspaces/{ws}/events"),
                        Some(&body),
                    )
                    .await
                {
                    Ok((202, published)) => {
                        accepted.push(published["id"].as_str().expect("event id").to_owned())
                    }
                    Ok((status, answer)) => refused.push(format!("{status}: {answer}")),
                    // The process is gone: a request cut off by the kill is not an accepted event.
                    Err(_) => break,
                }
            }
            (accepted, refused)
        }));
    }

    let kill_after = Duration::from_millis(rand::random_range(300..1500));
    tokio::time::sleep(kill_after).await;
    server.kill();
    stop.store(true, Ordering::Release);
    let received_before_kill = receiver.requests().len();

    let mut accepted = HashSet::new();
    let mut refused = Vec::new();
    for publisher in publishers {
        let (ids, errors) = publisher.await.expect("publisher task");
        accepted.extend(ids);
        refused.extend(errors);
    }
    assert!(
        refused.is_empty(),
        "publishes refused before the kill: {refused:?}"
    );
    assert!(
        !accepted.is_empty(),
        "no event was accepted in the {kill_after:?} before the kill"
    );
    eprintln!(
        "killed after {kill_after:?}: {} events accepted, {received_before_kill} requests received before the kill",
        accepted.len()
    );

    // Restart on the same database, configured through the environment this time.
    let mut restarted = Server::start(dir.path(), Configure::Environment);
    restarted.wait_ready(&http).await;
    let api = Api {
        http,
        address: restarted.address.clone(),
        key,
    };

    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let seen = seen_ids(&receiver);
        let missing = accepted.iter().filter(|id| !seen.contains(*id)).count();
        let pending = api.pending_count(&ws).await;
        if missing == 0 && pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after restart: {missing} of {} accepted events never reached the receiver, {pending} deliveries still pending\n{}",
            accepted.len(),
            restarted.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = seen_ids(&receiver);
    assert!(
        accepted.iter().all(|id| seen.contains(id)),
        "every accepted event reached the receiver"
    );
    assert_eq!(
        api.pending_count(&ws).await,
        0,
        "no delivery is left pending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_attempt_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::answering(Reply::status(200).after(Duration::from_millis(1500))).await;
    let http = http_client();
    let key = create_operator_key(dir.path());

    let mut server = Server::start(dir.path(), Configure::Flags);
    server.wait_ready(&http).await;
    let api = Api {
        http: http.clone(),
        address: server.address.clone(),
        key: key.clone(),
    };
    let (ws, _hook, example) = api.workspace_with_webhook(&receiver.url).await;
    let published = api
        .post(
            &format!("/v1/workspaces/{ws}/events"),
            json!({"type": "email.sent.v1", "data": example}),
            202,
        )
        .await;
    let delivery_id = published["deliveries"][0]
        .as_str()
        .expect("one delivery")
        .to_owned();

    // The receiver records the request on arrival and answers 1.5 s later: stop the server meanwhile.
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let terminated_at = Instant::now();
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "`tidings serve` exited with {status} after SIGTERM:\n{}",
        server.log()
    );
    assert!(
        terminated_at.elapsed() >= Duration::from_millis(500),
        "the server exited {:?} after SIGTERM, before the receiver answered",
        terminated_at.elapsed()
    );
    drop(server);

    let mut restarted = Server::start(dir.path(), Configure::Flags);
    restarted.wait_ready(&http).await;
    let api = Api {
        http,
        address: restarted.address.clone(),
        key,
    };
    let delivery = api
        .get(&format!("/v1/workspaces/{ws}/deliveries/{delivery_id}"))
        .await;
    assert_eq!(delivery["status"], "delivered", "{delivery:#}");
    assert_eq!(delivery["attempt_count"], 1, "{delivery:#}");
    let attempts = delivery["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{delivery:#}");
    assert_eq!(attempts[0]["status_code"], 200, "{delivery:#}");

    // Give a wrongly re-queued delivery the chance to go out again before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.requests().len(),
        1,
        "the receiver got the event once"
    );
    assert_eq!(api.pending_count(&ws).await, 0);
}
