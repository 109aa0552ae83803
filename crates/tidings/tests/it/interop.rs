//! Interoperability: deliveries verified by independent code, a Python receiver
//! (`tests/interop/receiver.py`) using the official `standardwebhooks` package and Python's own
//! `hmac.compare_digest` recipe. Needs `TIDINGS_TEST_PYTHON` (set by `scripts/test.sh`).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, random_standard_secret, spawn_app};

const NON_ASCII: &str = "Zoë — 東京";

/// The Python interpreter with `standardwebhooks` installed. Missing is a failure, not a skip: these
/// tests are the proof that deliveries verify with the official library.
fn python() -> String {
    match std::env::var("TIDINGS_TEST_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => panic!(
            "TIDINGS_TEST_PYTHON is not set. The interop tests verify deliveries with the official Python \
             `standardwebhooks` package: run the test command from the README, `scripts/test.sh`, which \
             creates .venv with it and sets TIDINGS_TEST_PYTHON (or set it to a Python that has \
             `standardwebhooks` installed)."
        ),
    }
}

/// `tests/interop/receiver.py`, killed and reaped on every exit path.
struct PythonReceiver {
    child: Child,
    port: u16,
    config: PathBuf,
    lines: Arc<Mutex<Vec<Value>>>,
    dir: tempfile::TempDir,
}

impl PythonReceiver {
    fn start() -> Self {
        let python = python();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/receiver.py");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("routes.json");
        std::fs::write(&config, r#"{"routes": {}}"#).expect("write config");
        let stderr = dir.path().join("receiver.stderr");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(&config)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run TIDINGS_TEST_PYTHON={python}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        let read = stdout.read_line(&mut first);
        let port = serde_json::from_str::<Value>(&first)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the Python receiver did not start ({read:?}, first line {first:?}); is `standardwebhooks` installed for {python}?\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().expect("lock").push(value);
            }
        });
        Self {
            child,
            port,
            config,
            lines,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Tells the receiver how to verify each path (it re-reads the file on every request).
    fn set_routes(&self, routes: Value) {
        let staging = self.dir.path().join("routes.json.new");
        std::fs::write(&staging, json!({"routes": routes}).to_string()).expect("write config");
        std::fs::rename(&staging, &self.config).expect("replace config");
    }

    fn lines(&self) -> Vec<Value> {
        self.lines.lock().expect("lock").clone()
    }

    /// Waits until the receiver reported at least `count` requests.
    async fn wait_for_lines(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "the Python receiver reported {} requests, expected {count}: {lines:#?}",
                lines.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PythonReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `email.sent.v1` example data, the `index`-th variant; variant 0 carries non-ASCII text.
async fn sent_data(app: &TestApp, index: usize) -> Value {
    let mut data = app.example("email.sent.v1").await;
    data["step_number"] = json!(index + 1);
    data["message"]["message_id"] = json!(format!("<interop-{index}@mail.acme.example.org>"));
    if index == 0 {
        data["lead"]["first_name"] = json!(NON_ASCII);
        data["message"]["subject"] = json!(format!(
            "Hello {NON_ASCII} \u{1F680} \"quoted\" </script> \u{2028}"
        ));
    }
    data
}

/// Publishes `count` `email.sent.v1` events and waits until every delivery of them is delivered with
/// a 200 (the Python receiver answers 200 only for a valid signature). Returns the event ids.
async fn publish_and_expect_delivered(
    app: &TestApp,
    ws: &str,
    count: usize,
    hooks_each: usize,
) -> Vec<String> {
    let mut events = Vec::new();
    for index in 0..count {
        let (id, deliveries) = app
            .publish_data(ws, "email.sent.v1", sent_data(app, index).await)
            .await;
        assert_eq!(
            deliveries.len(),
            hooks_each,
            "each event goes to every matching webhook"
        );
        events.push((id, deliveries));
    }
    for (_, deliveries) in &events {
        for delivery in deliveries {
            let done = app
                .wait_for_delivery(ws, delivery, Duration::from_secs(20), |d| {
                    d["status"] != "pending"
                })
                .await;
            assert_eq!(
                done["status"], "delivered",
                "the Python receiver refused a delivery: {done:#}"
            );
            assert_eq!(done["attempts"][0]["status_code"], 200, "{done:#}");
        }
    }
    events.into_iter().map(|(id, _)| id).collect()
}

/// Publishes one `email.opened.v1` event (only the wrong-secret webhook takes it) and checks the
/// receiver refused it: a 400 is permanent, so the delivery ends `failed` after one attempt.
async fn expect_wrong_secret_refused(app: &TestApp, ws: &str) -> String {
    let (id, deliveries, _) = app.publish_example(ws, "email.opened.v1").await;
    assert_eq!(
        deliveries.len(),
        1,
        "only the wrong-secret webhook takes email.opened.v1"
    );
    let done = app
        .wait_for_delivery(ws, &deliveries[0], Duration::from_secs(20), |d| {
            d["status"] != "pending"
        })
        .await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert_eq!(done["last_status_code"], 400, "{done:#}");
    assert_eq!(done["attempt_count"], 1, "{done:#}");
    id
}

/// Checks the receiver's own report: every request to `good_paths` verified, and the one to
/// `wrong_path` did not.
fn check_report(
    lines: &[Value],
    good_paths: &[&str],
    wrong_path: &str,
    events: &[String],
    wrong_event: &str,
) {
    for path in good_paths {
        let seen: Vec<&Value> = lines.iter().filter(|l| l["path"] == *path).collect();
        let ids: HashSet<&str> = seen.iter().filter_map(|l| l["id"].as_str()).collect();
        assert_eq!(
            ids,
            events.iter().map(String::as_str).collect(),
            "{path} got every event: {lines:#?}"
        );
        for line in seen {
            assert_eq!(line["valid"], true, "Python refused a signature: {line}");
        }
    }
    let wrong: Vec<&Value> = lines.iter().filter(|l| l["path"] == wrong_path).collect();
    assert_eq!(wrong.len(), 1, "{lines:#?}");
    assert_eq!(
        wrong[0]["valid"], false,
        "a wrong secret must not verify: {}",
        wrong[0]
    );
    assert_eq!(wrong[0]["id"], wrong_event);
    assert!(
        lines.iter().all(|l| l["path"]
            .as_str()
            .is_some_and(|p| good_paths.contains(&p) || p == wrong_path)),
        "unexpected requests: {lines:#?}"
    );
}

const EVENTS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_deliveries_verify_with_the_official_python_library() {
    let receiver = PythonReceiver::start();
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let good = app
        .create_webhook(
            &ws,
            json!({"url": receiver.url("/standard"), "event_types": ["email.sent.v1"], "signing": {"scheme": "standard"}}),
        )
        .await;
    let secret = good["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    // The default scheme is `standard` too.
    let default = app
        .create_webhook(
            &ws,
            json!({"url": receiver.url("/default"), "event_types": ["email.sent.v1"]}),
        )
        .await;
    assert_eq!(default["signing"]["scheme"], "standard", "{default:#}");
    let wrong = app
        .create_webhook(
            &ws,
            json!({"url": receiver.url("/standard-wrong"), "event_types": ["email.opened.v1"], "signing": {"scheme": "standard"}}),
        )
        .await;
    assert_ne!(wrong["secret"], good["secret"]);
    receiver.set_routes(json!({
        "/standard": {"scheme": "standard", "secret": secret},
        "/default": {"scheme": "standard", "secret": default["secret"]},
        "/standard-wrong": {"scheme": "standard", "secret": random_standard_secret()},
    }));

    let events = publish_and_expect_delivered(&app, &ws, EVENTS, 2).await;
    let wrong_event = expect_wrong_secret_refused(&app, &ws).await;

    let lines = receiver
        .wait_for_lines(2 * EVENTS + 1, Duration::from_secs(10))
        .await;
    check_report(
        &lines,
        &["/standard", "/default"],
        "/standard-wrong",
        &events,
        &wrong_event,
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_deliveries_verify_with_pythons_compare_digest() {
    let receiver = PythonReceiver::start();
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let default_header = app
        .create_webhook(
            &ws,
            json!({"url": receiver.url("/hmac"), "event_types": ["email.sent.v1"], "signing": {"scheme": "hmac-sha256"}}),
        )
        .await;
    let custom_header = app
        .create_webhook(
            &ws,
            json!({
                "url": receiver.url("/hmac-custom"),
                "event_types": ["email.sent.v1"],
                "signing": {"scheme": "hmac-sha256", "header": "X-Acme-Signature"},
            }),
        )
        .await;
    let wrong = app
        .create_webhook(
            &ws,
            json!({"url": receiver.url("/hmac-wrong"), "event_types": ["email.opened.v1"], "signing": {"scheme": "hmac-sha256"}}),
        )
        .await;
    receiver.set_routes(json!({
        "/hmac": {"scheme": "hmac-sha256", "secret": default_header["secret"], "header": "x-tidings-signature"},
        "/hmac-custom": {"scheme": "hmac-sha256", "secret": custom_header["secret"], "header": "x-acme-signature"},
        // The right secret with one character added.
        "/hmac-wrong": {"scheme": "hmac-sha256", "secret": format!("{}x", wrong["secret"].as_str().expect("secret")), "header": "x-tidings-signature"},
    }));

    let events = publish_and_expect_delivered(&app, &ws, EVENTS, 2).await;
    let wrong_event = expect_wrong_secret_refused(&app, &ws).await;

    let lines = receiver
        .wait_for_lines(2 * EVENTS + 1, Duration::from_secs(10))
        .await;
    check_report(
        &lines,
        &["/hmac", "/hmac-custom"],
        "/hmac-wrong",
        &events,
        &wrong_event,
    );
    app.stop().await;
}
