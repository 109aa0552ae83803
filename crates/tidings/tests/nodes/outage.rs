//! PostgreSQL stopped under a running node: the API answers 503 (never 202: nothing it cannot
//! store is accepted), `/readyz` says not ready, the log says why, and once PostgreSQL is back the
//! node accepts events again and delivers every one it accepted.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidings_testkit::postgres::Cluster;

use crate::api::{Accepted, accepted};
use crate::endpoint::Endpoint;
use crate::process::Nodes;
use crate::{Deadline, ms};

/// Runs a blocking cluster operation off the async workers.
async fn blocking<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(job)
        .await
        .expect("blocking job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_costs_503s_and_no_accepted_event() {
    const BEFORE: usize = 3;
    const AFTER: usize = 3;
    // Declared first, so it is stopped last: after the node.
    let cluster = std::sync::Arc::new(
        blocking(|| Cluster::start_new(None))
            .await
            .unwrap_or_else(|e| panic!("a private PostgreSQL cluster: {e}")),
    );
    let database_url = cluster
        .create_database()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let endpoint = Endpoint::start(ms(0)..ms(0)).await;
    let mut nodes = Nodes::start(
        database_url,
        1,
        &[
            ("TIDINGS_CLAIM_LEASE_S", "3"),
            ("TIDINGS_RETRY_SCHEDULE", "[1,1]"),
            // Large enough for the hot paths to keep their connections through the restart.
            ("TIDINGS_DATABASE_POOL_SIZE", "8"),
        ],
    )
    .await;
    let api = nodes.api(0);
    let (ws, _hook) = api.workspace_with_webhook(&endpoint.url, json!({})).await;
    let body = api.example_event().await;
    let ready = || async {
        api.http
            .get(format!("{}/readyz", api.address))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    };

    let mut accepted_events: Vec<Accepted> = Vec::new();
    for _ in 0..BEFORE {
        accepted_events.push(api.publish_accepted(&ws, &body).await);
    }
    let deadline = Deadline::after(Duration::from_secs(15), "the first events delivered");
    while endpoint.seen().len() < BEFORE {
        nodes.assert_running();
        deadline
            .tick(format!("{} received", endpoint.seen().len()))
            .await;
    }

    // Down: every publish is refused with 503 and a JSON error, and the node says it is not ready.
    let log_before = nodes.nodes[0].log().len();
    let stopping = cluster.clone();
    blocking(move || stopping.stop())
        .await
        .unwrap_or_else(|e| panic!("stopping PostgreSQL: {e}"));
    let down_at = Instant::now();
    let mut publish_answers: Vec<String> = Vec::new();
    let mut accepted_while_down: Vec<Value> = Vec::new();
    let mut refused_properly = 0;
    let mut readiness: Vec<String> = Vec::new();
    let deadline = Deadline::after(
        Duration::from_secs(20),
        "/readyz answering 503 while PostgreSQL is down",
    );
    loop {
        nodes.assert_running();
        // Several at once: each may wait for the node's storage to give up on connecting.
        let asked_at = Instant::now();
        let (first, second, third, ready_now) = tokio::join!(
            api.publish(&ws, &body),
            api.publish(&ws, &body),
            api.publish(&ws, &body),
            ready(),
        );
        let answered_in = asked_at.elapsed();
        for answer in [first, second, third] {
            match &answer {
                Ok((202, body)) => accepted_while_down.push(body.clone()),
                Ok((503, body)) if body["error"]["code"].is_string() => refused_properly += 1,
                _ => {}
            }
            publish_answers.push(match answer {
                Ok((status, body)) => format!("{status} {body} (within {answered_in:?})"),
                Err(error) => format!("no answer: {error}"),
            });
        }
        readiness.push(format!("{ready_now:?}"));
        if ready_now == Ok(503) {
            break;
        }
        deadline
            .tick(format!(
                "publish answers: {publish_answers:?}; /readyz: {readiness:?}"
            ))
            .await;
    }
    eprintln!(
        "while PostgreSQL was down ({:?}): publish answered {publish_answers:?}; /readyz {readiness:?}",
        down_at.elapsed()
    );
    assert!(
        accepted_while_down.is_empty(),
        "publish answered 202 while PostgreSQL was down (those events cannot have been stored): {accepted_while_down:?}"
    );
    assert_eq!(
        refused_properly,
        publish_answers.len(),
        "every publish while PostgreSQL is down is a 503 with a JSON error: {publish_answers:#?}"
    );
    let log = nodes.nodes[0].log();
    let new_lines = &log[log_before.min(log.len())..];
    assert!(
        new_lines.lines().any(|line| line.contains("ERROR")),
        "no error in the node's log while PostgreSQL was down:\n{new_lines}"
    );

    // Back: publishing works again within 20 s of the restart.
    let starting = cluster.clone();
    blocking(move || starting.start())
        .await
        .unwrap_or_else(|e| panic!("starting PostgreSQL again: {e}"));
    let up_at = Instant::now();
    let mut recovering: Vec<String> = Vec::new();
    let deadline = Deadline::after(
        Duration::from_secs(20),
        "a publish accepted after PostgreSQL came back",
    );
    loop {
        nodes.assert_running();
        match api.publish(&ws, &body).await {
            Ok((202, body)) => {
                accepted_events.push(accepted(&body));
                break;
            }
            Ok((status, body)) => recovering.push(format!("{status} {body}")),
            Err(error) => recovering.push(format!("no answer: {error}")),
        }
        deadline.tick(format!("answers: {recovering:?}")).await;
    }
    eprintln!(
        "publishing worked again {:?} after PostgreSQL restarted; answers before: {recovering:?}",
        up_at.elapsed()
    );
    for _ in 1..AFTER {
        accepted_events.push(api.publish_accepted(&ws, &body).await);
    }
    assert_eq!(ready().await, Ok(200), "/readyz once PostgreSQL is back");

    // Every event accepted before and after the outage is delivered; nothing stays pending.
    let ids: HashSet<String> = accepted_events.iter().map(|a| a.event_id.clone()).collect();
    let deadline = Deadline::after(
        Duration::from_secs(30),
        "every accepted event delivered and nothing pending",
    );
    loop {
        nodes.assert_running();
        let missing: Vec<String> = ids.difference(&endpoint.seen()).cloned().collect();
        let pending = if missing.is_empty() {
            api.pending_count(&ws).await
        } else {
            usize::MAX
        };
        if missing.is_empty() && pending == 0 {
            break;
        }
        deadline
            .tick(format!(
                "not received: {missing:?}; pending (checked once all arrived): {pending}"
            ))
            .await;
    }
    let counts = endpoint.counts();
    let unknown: Vec<&String> = counts.keys().filter(|id| !ids.contains(*id)).collect();
    assert!(
        unknown.is_empty(),
        "requests for unknown events: {unknown:?}"
    );
}
