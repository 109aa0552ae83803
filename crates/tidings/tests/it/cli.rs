//! The `tidings` command line: keys and workspaces for scripts, migrations, settings errors, the
//! `listen` receiver, `publish` and `verify`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Receiver, TestApp, free_port, spawn_app};

fn tidings(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .env_remove("TIDINGS_CONFIG")
        .output()
        .expect("tidings runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn workspace_and_key_commands_print_only_what_scripts_need() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = crate::helpers::database_url(dir.path());

    let created = tidings(&["workspace", "create", "Acme", "--database-url", &database]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let ws = text(&created.stdout).trim().to_owned();
    assert!(ws.starts_with("ws_") && !ws.contains('\n'), "{ws:?}");

    let key = tidings(&[
        "key",
        "create",
        "--workspace",
        &ws,
        "--database-url",
        &database,
    ]);
    assert!(key.status.success(), "{}", text(&key.stderr));
    let key = text(&key.stdout);
    assert!(
        key.starts_with("tdk_") && key.ends_with('\n') && key.trim().lines().count() == 1,
        "{key:?}"
    );

    let operator = tidings(&["key", "create", "--operator", "--database-url", &database]);
    assert!(operator.status.success());
    assert!(text(&operator.stdout).starts_with("tdk_"));

    let listed = tidings(&["workspace", "list", "--database-url", &database]);
    assert!(
        text(&listed.stdout).contains(&ws),
        "{}",
        text(&listed.stdout)
    );

    let migrated = tidings(&["migrate", "--database-url", &database]);
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
}

#[test]
fn bad_input_is_a_message_and_a_failing_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = crate::helpers::database_url(dir.path());
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "key",
                "create",
                "--workspace",
                "nope",
                "--database-url",
                &database,
            ],
            "not a workspace id",
        ),
        (
            &[
                "key",
                "create",
                "--workspace",
                "ws_0123456789abcdef0123456789abcdef",
                "--database-url",
                &database,
            ],
            "no workspace",
        ),
        (
            &["key", "create", "--database-url", &database],
            "--operator",
        ),
        (
            &[
                "workspace",
                "create",
                "x",
                "--level-precedence",
                "widest",
                "--database-url",
                &database,
            ],
            "level-precedence",
        ),
        (
            &["serve", "--database-url", "mysql://nowhere/db"],
            "database_url",
        ),
    ];
    for (args, expected) in cases {
        let output = tidings(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            output.stdout.is_empty(),
            "{args:?} printed {}",
            text(&output.stdout)
        );
    }
    let config = dir.path().join("tidings.toml");
    std::fs::write(&config, "per_webhook_concurrency = 0\n").expect("write");
    let output = tidings(&["serve", "--config", config.to_str().expect("path")]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("per_webhook_concurrency"),
        "{}",
        text(&output.stderr)
    );
}

/// Kills the child on every way out of the test.
struct Running(Option<std::process::Child>);

impl Running {
    /// Stops the child and returns what it printed.
    fn stop(mut self) -> Output {
        let mut child = self.0.take().expect("still running");
        let _ = child.kill();
        child.wait_with_output().expect("output")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn listen_verifies_the_signatures_of_real_deliveries() {
    let app = spawn_app().await;
    let port = free_port();
    let ws = app.create_workspace().await;
    let url = format!("http://127.0.0.1:{port}/hook");
    let hook = app
        .create_webhook(&ws, json!({"url": url, "event_types": ["email.sent.v1"]}))
        .await;
    let secret = hook["secret"].as_str().expect("secret").to_owned();
    let listener = Running(Some(
        Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args([
                "listen",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--secret",
                &secret,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("listen starts"),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "listen never accepted connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (event_id, delivery_id) = app.publish_one(&ws, "email.sent.v1").await;
    let delivery = app
        .wait_for_status(&ws, &delivery_id, "delivered", Duration::from_secs(15))
        .await;
    assert_eq!(
        delivery["last_status_code"], 204,
        "listen accepts what verifies: {delivery}"
    );

    // A webhook signed with another secret is refused by the same listener.
    let stranger = app
        .create_webhook(&ws, json!({"url": url, "event_types": ["email.opened.v1"]}))
        .await;
    assert_ne!(stranger["secret"], hook["secret"]);
    let (_, refused) = app.publish_one(&ws, "email.opened.v1").await;
    let refused = app
        .wait_for_status(&ws, &refused, "failed", Duration::from_secs(15))
        .await;
    assert_eq!(refused["last_status_code"], 400, "{refused}");

    let output = listener.stop();
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON line per delivery"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["webhook_id"], event_id.as_str());
    assert_eq!(lines[0]["verified"], true);
    assert_eq!(lines[0]["body"]["type"], "email.sent.v1");
    assert_eq!(lines[1]["verified"], false);
    assert!(
        lines[1]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("does not match")),
        "{lines:?}"
    );
}

/// Runs `tidings` with `stdin` while the in-process app goes on serving: (success, stdout, stderr).
async fn tidings_async(args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .env_remove("TIDINGS_CONFIG")
        .env_remove("TIDINGS_API_KEY")
        .env_remove("TIDINGS_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tidings runs");
    let mut input = child.stdin.take().expect("stdin");
    // A command refusing its arguments may exit before it reads its input, closing the pipe.
    if let Err(e) = input.write_all(stdin).await {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    drop(input);
    let output = child.wait_with_output().await.expect("output");
    (
        output.status.success(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// `tidings publish` with the app's address and `key`, then `extra`.
async fn publish(app: &TestApp, key: &str, ws: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "publish",
        "--url",
        &app.address,
        "--key",
        key,
        "--workspace",
        ws,
    ];
    args.extend_from_slice(extra);
    tidings_async(&args, b"").await
}

/// `tidings publish` of an `email.replied.v1` event that must be accepted: its answer.
async fn published(app: &TestApp, key: &str, ws: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--type", "email.replied.v1"];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = publish(app, key, ws, &args).await;
    assert!(ok, "{stderr}");
    serde_json::from_str(&stdout).expect("a JSON answer")
}

/// `tidings verify` of a delivery as `request` arrived, with `body` in place of its body.
async fn verify(
    secret: &str,
    request: &crate::helpers::Received,
    body: &[u8],
    extra: &[&str],
) -> (bool, String, String) {
    let headers: Vec<String> = request
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    let mut args = vec!["verify", "--secret", secret];
    for header in &headers {
        args.extend(["-H", header.as_str()]);
    }
    args.extend_from_slice(extra);
    tidings_async(&args, body).await
}

#[tokio::test]
async fn publish_sends_the_data_as_given_and_verify_checks_what_arrived() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, hook) = app
        .workspace_with_webhook(&receiver.url, &["email.replied.v1"], json!({}))
        .await;
    let secret = hook["secret"].as_str().expect("secret").to_owned();
    let (_, key) = app.workspace_key(&ws).await;

    // Members in an order of the publisher's own and a number spelled its way: the receiver gets
    // exactly this text.
    let example = app.example("email.replied.v1").await;
    let mut data = String::from("{");
    for (i, (name, value)) in example
        .as_object()
        .expect("object")
        .iter()
        .rev()
        .enumerate()
    {
        if i > 0 {
            data.push_str(", ");
        }
        data.push_str(&format!("{}: {value}", json!(name)));
    }
    data.push_str(", \"score\": 1.50}");
    let first = published(
        &app,
        &key,
        &ws,
        &[
            "--data",
            &data,
            "--campaign-id",
            "cmp_cli",
            "--idempotency-key",
            "reply-1",
        ],
    )
    .await;
    let event_id = first["id"].as_str().expect("event id");
    assert!(event_id.starts_with("evt_"), "{first}");
    assert_eq!(first["deliveries"].as_array().map(Vec::len), Some(1));
    assert_eq!(first["duplicate"], false);

    let request = receiver.wait_for(1, Duration::from_secs(15)).await[0].clone();
    let body = text(&request.body);
    assert!(body.contains(&data), "{body} does not carry {data}");
    let event = app
        .get_ok(&format!("/v1/workspaces/{ws}/events/{event_id}"))
        .await;
    assert_eq!(event["campaign_id"], "cmp_cli", "{event}");

    // The same idempotency key gives back the first event; data from a file.
    let file = app.dir.path().join("data.json");
    std::fs::write(&file, &data).expect("write data");
    let at_file = format!("@{}", file.display());
    let again = published(
        &app,
        &key,
        &ws,
        &["--data", &at_file, "--idempotency-key", "reply-1"],
    )
    .await;
    assert_eq!(again["id"], event_id);
    assert_eq!(again["duplicate"], true);

    // Without data, the type's catalog example.
    let from_example = published(&app, &key, &ws, &[]).await;
    let id = from_example["id"].as_str().expect("id");
    let stored = app
        .get_ok(&format!("/v1/workspaces/{ws}/events/{id}"))
        .await;
    assert_eq!(stored["data"], example);

    // What arrived verifies, from a file or from stdin; one byte changed does not.
    let (ok, stdout, stderr) = verify(&secret, &request, &request.body, &[]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "verified (standard)");
    let body_file = app.dir.path().join("body");
    std::fs::write(&body_file, &request.body).expect("write body");
    let body_path = body_file.to_str().expect("path");
    let (ok, _, stderr) = verify(&secret, &request, b"", &[body_path]).await;
    assert!(ok, "{stderr}");
    let mut tampered = request.body.to_vec();
    tampered[body.find("1.50").expect("score")] = b'9';
    let (ok, stdout, stderr) = verify(&secret, &request, &tampered, &[]).await;
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("webhook-signature does not match"),
        "{stderr}"
    );
    let (ok, _, stderr) = verify(
        &crate::helpers::random_standard_secret(),
        &request,
        &request.body,
        &[],
    )
    .await;
    assert!(!ok && stderr.contains("does not match"), "{stderr}");

    // An old timestamp fails on its age; with no tolerance, on the signature it is part of.
    let mut old = request.clone();
    let sent: i64 = request
        .header("webhook-timestamp")
        .expect("timestamp")
        .parse()
        .expect("number");
    old.headers
        .insert("webhook-timestamp".into(), (sent - 3600).to_string());
    let (ok, _, stderr) = verify(&secret, &old, &request.body, &[]).await;
    assert!(!ok && stderr.contains("away from now"), "{stderr}");
    let (ok, _, stderr) = verify(&secret, &old, &request.body, &["--tolerance", "0"]).await;
    assert!(!ok && stderr.contains("does not match"), "{stderr}");
}

#[tokio::test]
async fn verify_checks_hmac_sha256_deliveries_in_their_header() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ws, hook) = app
        .workspace_with_webhook(
            &receiver.url,
            &["email.opened.v1"],
            json!({ "signing": { "scheme": "hmac-sha256", "header": "X-Signature" } }),
        )
        .await;
    let secret = hook["secret"].as_str().expect("secret").to_owned();
    app.publish_one(&ws, "email.opened.v1").await;
    let request = receiver.wait_for(1, Duration::from_secs(15)).await[0].clone();

    let (ok, stdout, stderr) = verify(
        &secret,
        &request,
        &request.body,
        &["--hmac-header", "X-Signature"],
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "verified (hmac-sha256)");
    let (ok, _, stderr) = verify(&secret, &request, b"{}", &["--hmac-header", "X-Signature"]).await;
    assert!(
        !ok && stderr.contains("x-signature does not match"),
        "{stderr}"
    );
    // Looked for in the default header, the signature is not found.
    let (ok, _, stderr) = verify(&secret, &request, &request.body, &[]).await;
    assert!(!ok && stderr.contains("carries no signature"), "{stderr}");
}

#[tokio::test]
async fn publish_and_verify_explain_what_is_wrong() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let (_, key) = app.workspace_key(&ws).await;
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let secret = crate::helpers::random_standard_secret();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--type", "email.replied.v1", "--data", "{\"a\":"],
            "the data is not JSON",
        ),
        (
            vec!["--type", "email.replied.v1", "--data", "{}"],
            "refused (422",
        ),
        (vec!["--type", "no.such.type.v1"], "refused (404"),
        (
            vec!["--type", "email.replied.v1", "--data", "@/no/such/file"],
            "cannot read the data",
        ),
    ];
    for (extra, expected) in cases {
        let (ok, stdout, stderr) = publish(&app, &key, &ws, &extra).await;
        assert!(!ok, "{extra:?} succeeded: {stdout}");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(
            stdout.is_empty() && !stderr.contains("panicked"),
            "{extra:?}: {stdout} {stderr}"
        );
    }
    let plain: [(&[&str], &str); 9] = [
        (
            &[
                "publish",
                "--url",
                &app.address,
                "--key",
                "tdk_nope",
                "--workspace",
                &ws,
                "--type",
                "email.replied.v1",
            ],
            "refused (401",
        ),
        (
            &[
                "publish",
                "--url",
                &nowhere,
                "--key",
                &key,
                "--workspace",
                &ws,
                "--type",
                "email.replied.v1",
            ],
            "cannot reach Tidings",
        ),
        (
            &[
                "publish",
                "--url",
                "ftp://127.0.0.1",
                "--key",
                &key,
                "--workspace",
                &ws,
                "--type",
                "x",
            ],
            "must be http",
        ),
        (&["publish", "--key", &key, "--type", "x"], "--workspace"),
        (
            &["verify", "--secret", "not-a-secret", "-H", "webhook-id: x"],
            "whsec_",
        ),
        (
            &["verify", "--secret", &secret, "-H", "webhook-id x"],
            "Name: value",
        ),
        (
            &["verify", "--secret", &secret, "-H", "x: y", "/no/such/body"],
            "cannot read /no/such/body",
        ),
        (
            &["verify", "--secret", &secret, "-H", "x: y"],
            "carries no signature",
        ),
        (
            &["verify", "--secret", &secret, "--tolerance=-5"],
            "--tolerance",
        ),
    ];
    for (args, expected) in plain {
        let (ok, stdout, stderr) = tidings_async(args, b"{}").await;
        assert!(!ok, "{args:?} succeeded: {stdout}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            stdout.is_empty() && !stderr.contains("panicked"),
            "{args:?}: {stdout} {stderr}"
        );
    }
}

#[tokio::test]
async fn a_key_revoked_by_the_command_line_stops_working_on_the_running_server() {
    let app = spawn_app().await;
    let ws = app.create_workspace().await;
    let (id, key) = app.workspace_key(&ws).await;
    let read = |key: String| {
        let request = app
            .http
            .get(format!("{}/v1/workspaces/{ws}", app.address))
            .bearer_auth(key);
        async move { request.send().await.expect("answer").status().as_u16() }
    };
    // The server now holds the key.
    assert_eq!(read(key.clone()).await, 200);

    let database = crate::helpers::database_url(app.dir.path());
    let (ok, _, stderr) =
        tidings_async(&["key", "revoke", &id, "--database-url", &database], b"").await;
    assert!(ok, "{stderr}");
    let deadline = Instant::now() + tidings_server::KEY_REFRESH + Duration::from_secs(4);
    loop {
        let status = read(key.clone()).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            Instant::now() < deadline,
            "the revoked key still works on the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
