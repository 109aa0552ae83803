//! Nodes sharing the work of one database: each delivery goes out once, a webhook's concurrency
//! and rate limits hold for the whole cluster rather than per node, and a retrigger sent to two
//! nodes at once queues each delivery once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;
use tidings_testkit::postgres::fresh_database;

use crate::api::{Accepted, Api, publish_round_robin};
use crate::endpoint::Endpoint;
use crate::process::Nodes;
use crate::sockets::ports_connected_to;
use crate::{Deadline, ms};

/// Long before any delivery a test makes.
const LONG_AGO: &str = "2000-01-01T00:00:00Z";

/// The event ids of `accepted`, asserting each event has exactly one delivery (one webhook).
fn event_ids(accepted: &[Accepted]) -> HashSet<String> {
    for event in accepted {
        assert_eq!(
            event.deliveries.len(),
            1,
            "one webhook, one delivery per event: {event:?}"
        );
    }
    let ids: HashSet<String> = accepted.iter().map(|a| a.event_id.clone()).collect();
    assert_eq!(ids.len(), accepted.len(), "event ids are unique");
    ids
}

/// Waits until the endpoint got every one of `ids` `times` times or more and nothing of `ws` is
/// pending, with every node still running.
async fn wait_until_sent(
    nodes: &mut Nodes,
    endpoint: &Endpoint,
    api: &Api,
    ws: &str,
    ids: &HashSet<String>,
    times: usize,
    timeout: Duration,
) {
    let deadline = Deadline::after(timeout, "every delivery sent and recorded");
    loop {
        nodes.assert_running();
        let counts = endpoint.counts();
        let short = ids
            .iter()
            .filter(|id| counts.get(*id).copied().unwrap_or(0) < times)
            .count();
        let pending = if short == 0 {
            api.pending_count(ws).await
        } else {
            usize::MAX
        };
        if short == 0 && pending == 0 {
            return;
        }
        deadline
            .tick(format!(
                "{short} of {} events received fewer than {times} times; pending: {}",
                ids.len(),
                if pending == usize::MAX {
                    "not checked".to_owned()
                } else {
                    pending.to_string()
                }
            ))
            .await;
    }
}

/// Asserts every one of `ids` reached the endpoint exactly `times` times and nothing else did.
fn assert_each_received(endpoint: &Endpoint, ids: &HashSet<String>, times: usize) {
    let counts = endpoint.counts();
    let wrong: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n != times).collect();
    assert!(
        wrong.is_empty(),
        "events received other than {times} times ({} of them): {wrong:?}",
        wrong.len()
    );
    let unknown: Vec<&String> = counts.keys().filter(|id| !ids.contains(*id)).collect();
    assert!(
        unknown.is_empty(),
        "requests for unknown events: {unknown:?}"
    );
    assert_eq!(
        endpoint.arrivals().len(),
        ids.len() * times,
        "requests received"
    );
}

/// How many requests each node sent, told by the connections each node still holds to the
/// endpoint (a diagnostic: nodes keep their connections alive).
fn requests_per_node(nodes: &Nodes, endpoint: &Endpoint) -> Vec<(String, usize)> {
    let arrivals = endpoint.arrivals();
    nodes
        .nodes
        .iter()
        .map(|node| {
            let connections =
                endpoint.connections_from(&ports_connected_to(node.pid(), endpoint.port()));
            let sent = arrivals
                .iter()
                .filter(|a| connections.contains(&a.connection.id))
                .count();
            (node.name.clone(), sent)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_send_every_event_once_within_one_concurrency_limit() {
    const EVENTS: usize = 300;
    const LIMIT: usize = 4;
    let endpoint = Endpoint::start(ms(20)..ms(20)).await;
    let mut nodes = Nodes::start(
        fresh_database().await,
        3,
        &[
            ("TIDINGS_PER_WEBHOOK_CONCURRENCY", "4"),
            ("TIDINGS_DATABASE_POOL_SIZE", "8"),
        ],
    )
    .await;
    let apis = nodes.apis();
    let (ws, _hook) = apis[0]
        .workspace_with_webhook(&endpoint.url, json!({}))
        .await;
    let body = apis[0].example_event().await;

    let started = Instant::now();
    let accepted = publish_round_robin(&apis, &ws, &body, EVENTS, 6)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids = event_ids(&accepted);
    assert_eq!(ids.len(), EVENTS);
    wait_until_sent(
        &mut nodes,
        &endpoint,
        &apis[1],
        &ws,
        &ids,
        1,
        Duration::from_secs(30),
    )
    .await;
    eprintln!(
        "{EVENTS} events delivered in {:?}; at most {} requests in flight; requests per node: {:?}",
        started.elapsed(),
        endpoint.max_in_flight(),
        requests_per_node(&nodes, &endpoint)
    );

    assert_each_received(&endpoint, &ids, 1);
    assert_eq!(
        endpoint.overlapping(),
        Vec::<String>::new(),
        "requests with the same webhook-id in flight at once"
    );
    assert!(
        endpoint.max_in_flight() <= LIMIT,
        "the webhook had {} requests in flight at once across the nodes; its limit is {LIMIT}",
        endpoint.max_in_flight()
    );
    for api in &apis {
        assert_eq!(
            api.pending_count(&ws).await,
            0,
            "pending on {}",
            api.address
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_rate_limit_holds_across_nodes() {
    const EVENTS: usize = 30;
    const RATE: usize = 5;
    // One node alone at 5/s with a burst of 5 needs (30 - 5) / 5 = 5 s; three nodes each keeping
    // the limit alone would need about (30 - 15) / 15 = 1 s.
    const LEAST_SPAN: Duration = Duration::from_millis(3500);
    const WINDOW: Duration = Duration::from_secs(2);
    // In any 2 s: the rate for 2 s plus a burst of one second's worth, plus slack for scheduling.
    const MOST_IN_WINDOW: usize = 2 * RATE + RATE + 3;
    let endpoint = Endpoint::start(ms(0)..ms(0)).await;
    let mut nodes = Nodes::start(
        fresh_database().await,
        3,
        &[("TIDINGS_DATABASE_POOL_SIZE", "8")],
    )
    .await;
    let apis = nodes.apis();
    let (ws, _hook) = apis[0]
        .workspace_with_webhook(&endpoint.url, json!({"rate_limit_per_s": RATE}))
        .await;
    let body = apis[0].example_event().await;

    let started = Instant::now();
    let accepted = publish_round_robin(&apis, &ws, &body, EVENTS, 6)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let published_in = started.elapsed();
    let ids = event_ids(&accepted);
    wait_until_sent(
        &mut nodes,
        &endpoint,
        &apis[2],
        &ws,
        &ids,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_each_received(&endpoint, &ids, 1);

    let mut times: Vec<Instant> = endpoint.arrivals().iter().map(|a| a.started).collect();
    times.sort();
    let span = times[times.len() - 1] - times[0];
    let most_in_window = times
        .iter()
        .enumerate()
        .map(|(first, start)| {
            times[first..]
                .iter()
                .take_while(|t| **t - *start < WINDOW)
                .count()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "published in {published_in:?}; first to last arrival {span:?}; at most {most_in_window} in any {WINDOW:?}; requests per node: {:?}",
        requests_per_node(&nodes, &endpoint)
    );
    assert!(
        span >= LEAST_SPAN,
        "{EVENTS} events at {RATE}/s arrived within {span:?} (at least {LEAST_SPAN:?} expected): the rate limit does not hold across nodes"
    );
    assert!(
        most_in_window <= MOST_IN_WINDOW,
        "{most_in_window} requests arrived within {WINDOW:?} at {RATE}/s (at most {MOST_IN_WINDOW} expected)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrigger_sent_to_two_nodes_at_once_sends_each_delivery_once_more() {
    const EVENTS: usize = 60;
    let endpoint = Endpoint::start(ms(0)..ms(0)).await;
    let mut nodes = Nodes::start(
        fresh_database().await,
        2,
        &[("TIDINGS_DATABASE_POOL_SIZE", "8")],
    )
    .await;
    let apis = nodes.apis();
    let (ws, hook) = apis[0]
        .workspace_with_webhook(&endpoint.url, json!({}))
        .await;
    let body = apis[0].example_event().await;
    let accepted = publish_round_robin(&apis, &ws, &body, EVENTS, 4)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids = event_ids(&accepted);
    wait_until_sent(
        &mut nodes,
        &endpoint,
        &apis[0],
        &ws,
        &ids,
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_each_received(&endpoint, &ids, 1);

    // Paused, the retriggered deliveries wait, so a retrigger arriving after some were already
    // re-sent cannot legitimately queue them again: both requests see the same finished deliveries.
    let hook_path = format!("/v1/workspaces/{ws}/webhooks/{hook}");
    apis[0]
        .call(
            reqwest::Method::PATCH,
            &hook_path,
            json!({"state": "paused"}),
            200,
        )
        .await;
    let retrigger = json!({"since": LONG_AGO, "status": "delivered"});
    let path = format!("{hook_path}/retrigger");
    let (first, second) = tokio::join!(
        apis[0].send(reqwest::Method::POST, &path, Some(&retrigger)),
        apis[1].send(reqwest::Method::POST, &path, Some(&retrigger)),
    );
    let mut retriggered = HashMap::new();
    for (api, answer) in apis.iter().zip([first, second]) {
        let (status, body) = answer.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 200, "retrigger on {}: {body}", api.address);
        retriggered.insert(
            api.address.clone(),
            body["retriggered"]
                .as_u64()
                .unwrap_or_else(|| panic!("retriggered in {body}")),
        );
    }
    assert_eq!(
        retriggered.values().sum::<u64>(),
        EVENTS as u64,
        "the two retriggers together queued each delivery once: {retriggered:?}"
    );
    assert_eq!(apis[1].pending_count(&ws).await, EVENTS, "queued again");
    apis[1]
        .call(
            reqwest::Method::PATCH,
            &hook_path,
            json!({"state": "active"}),
            200,
        )
        .await;

    wait_until_sent(
        &mut nodes,
        &endpoint,
        &apis[1],
        &ws,
        &ids,
        2,
        Duration::from_secs(20),
    )
    .await;
    // Nothing is pending, so nothing more can be sent: the counts are final.
    assert_each_received(&endpoint, &ids, 2);
    assert_eq!(
        endpoint.overlapping(),
        Vec::<String>::new(),
        "requests with the same webhook-id in flight at once"
    );
}
