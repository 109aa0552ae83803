//! The `tidings` command line: keys and workspaces for scripts, migrations, settings errors, and the
//! `listen` receiver.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{free_port, spawn_app};

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
