//! A node killed with SIGKILL while it is sending: the other nodes send what it had claimed once
//! its claims run out, so every accepted event arrives and nothing stays pending; only what the
//! dead node was sending, or had its answer to but had not recorded yet, may arrive twice.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;
use tidings_testkit::postgres::fresh_database;

use crate::api::publish_round_robin;
use crate::endpoint::{Arrival, Endpoint};
use crate::process::Nodes;
use crate::sockets::ports_connected_to;
use crate::{Deadline, ms};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_deliveries_are_sent_by_the_others_once_its_claims_run_out() {
    const EVENTS: usize = 200;
    const LIMIT: usize = 8;
    const LEASE: Duration = Duration::from_secs(3);
    // A running attempt renews its claim every third of the lease, so a dead node's claims hold
    // for at least two thirds of it after the node stops; one third is left as slack.
    const EARLIEST_TAKEOVER: Duration = Duration::from_secs(1);
    // An answered attempt's outcome is committed in the recorder's next batch; an answer read
    // longer ago than this must not be sent again.
    const OUTCOME_COMMITTED_WITHIN: Duration = Duration::from_secs(1);
    let endpoint = Endpoint::start(ms(100)..ms(200)).await;
    let mut nodes = Nodes::start(
        fresh_database().await,
        3,
        &[
            ("TIDINGS_CLAIM_LEASE_S", "3"),
            ("TIDINGS_PER_WEBHOOK_CONCURRENCY", "8"),
            ("TIDINGS_DATABASE_POOL_SIZE", "8"),
        ],
    )
    .await;
    let apis = nodes.apis();
    let (ws, _hook) = apis[0]
        .workspace_with_webhook(&endpoint.url, json!({}))
        .await;
    let body = apis[0].example_event().await;
    let accepted = publish_round_robin(&apis, &ws, &body, EVENTS, 6)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(accepted.len(), EVENTS);
    let delivery_of: HashMap<String, String> = accepted
        .iter()
        .map(|event| {
            assert_eq!(
                event.deliveries.len(),
                1,
                "one delivery per event: {event:?}"
            );
            (event.event_id.clone(), event.deliveries[0].clone())
        })
        .collect();

    // Kill the first node seen with a request in flight at the endpoint. It is frozen first: a
    // frozen node opens no connection and sends nothing, so the connections read then are all it
    // has, and nothing it does after can escape the count. From the node's side, it died when it
    // froze: any answer after that was never read.
    let deadline = Deadline::after(
        Duration::from_secs(15),
        "a node with a request in flight at the endpoint",
    );
    let (victim, victim_connections, killed_at) = loop {
        nodes.assert_running();
        let found = nodes.nodes.iter().position(|node| {
            let connections =
                endpoint.connections_from(&ports_connected_to(node.pid(), endpoint.port()));
            !endpoint.in_flight_on(&connections).is_empty()
        });
        if let Some(index) = found {
            let node = &mut nodes.nodes[index];
            node.freeze(true);
            let frozen_at = Instant::now();
            let ports = ports_connected_to(node.pid(), endpoint.port());
            // The kernel completes a loopback handshake at once; the endpoint's accept may lag.
            let settled = Instant::now() + Duration::from_secs(1);
            let mut connections = endpoint.connections_from(&ports);
            while connections.len() < ports.len() && Instant::now() < settled {
                tokio::time::sleep(ms(10)).await;
                connections = endpoint.connections_from(&ports);
            }
            let open_at_freeze = endpoint.arrivals().iter().any(|a| {
                connections.contains(&a.connection.id) && a.finished.is_none_or(|f| f > frozen_at)
            });
            if open_at_freeze {
                node.kill();
                break (index, connections, frozen_at);
            }
            node.freeze(false);
        }
        deadline
            .tick(format!("{} requests received", endpoint.arrivals().len()))
            .await;
    };
    let victim_name = nodes.nodes[victim].name.clone();
    let from_victim = |arrival: &Arrival| victim_connections.contains(&arrival.connection.id);
    // The dead node never read an answer to these: they must be sent again by another node.
    let unanswered: Vec<Arrival> = endpoint
        .arrivals()
        .into_iter()
        .filter(|a| from_victim(a) && (!a.answered || a.finished.is_none_or(|f| f > killed_at)))
        .collect();
    eprintln!(
        "killed {victim_name} with {} requests of it in flight, {} of {EVENTS} events received by then",
        unanswered.len(),
        endpoint.seen().len()
    );
    assert!(
        !unanswered.is_empty(),
        "the kill hit no request in flight: nothing here tests a takeover"
    );

    let survivors: Vec<_> = (0..nodes.nodes.len())
        .filter(|index| *index != victim)
        .map(|index| nodes.api(index))
        .collect();
    let ids: HashSet<String> = delivery_of.keys().cloned().collect();
    let deadline = Deadline::after(
        Duration::from_secs(40),
        "every accepted event received and nothing pending on the surviving nodes",
    );
    loop {
        for (index, node) in nodes.nodes.iter_mut().enumerate() {
            if index != victim {
                node.assert_running();
            }
        }
        let missing = ids.difference(&endpoint.seen()).count();
        let pending = if missing == 0 {
            survivors[0].pending_count(&ws).await
        } else {
            usize::MAX
        };
        if missing == 0 && pending == 0 {
            break;
        }
        deadline
            .tick(format!(
                "{missing} of {EVENTS} events not received yet (pending checked only once all arrived: {pending})"
            ))
            .await;
    }
    assert_eq!(survivors[1].pending_count(&ws).await, 0, "pending");

    let arrivals = endpoint.arrivals();
    let counts = endpoint.counts();
    let unknown: Vec<&String> = counts.keys().filter(|id| !ids.contains(*id)).collect();
    assert!(
        unknown.is_empty(),
        "requests for unknown events: {unknown:?}"
    );
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

    // Sent twice only if the dead node was sending it, or had its answer but had not committed
    // the outcome yet; then once by it (before it died) and once by another node (once its claim
    // ran out).
    let twice: Vec<&String> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    for id in &twice {
        let sends: Vec<&Arrival> = arrivals.iter().filter(|a| &a.webhook_id == *id).collect();
        let described = format!("{id} was sent {} times: {sends:#?}", sends.len());
        assert_eq!(sends.len(), 2, "{described}");
        assert!(
            from_victim(sends[0]) && sends[0].started < killed_at,
            "{described}\nthe first send was not the killed node's"
        );
        assert!(
            !from_victim(sends[1]),
            "{described}\nthe second send came from the killed node"
        );
        if let Some(finished) = sends[0]
            .finished
            .filter(|f| sends[0].answered && *f <= killed_at)
        {
            let before = killed_at - finished;
            assert!(
                before <= OUTCOME_COMMITTED_WITHIN,
                "{described}\nanswered {before:?} before the node stopped, yet sent again: its outcome should have been committed by then"
            );
        }
        assert!(
            sends[1].started >= killed_at + EARLIEST_TAKEOVER,
            "{described}\nsent again {:?} after the kill, before the dead node's claim ({LEASE:?}, renewed every third) could have run out",
            sends[1].started - killed_at
        );
    }
    assert!(
        unanswered.len() <= LIMIT,
        "{} requests of the dead node unanswered; it may have at most {LIMIT} in flight",
        unanswered.len()
    );
    for arrival in &unanswered {
        assert_eq!(
            counts.get(&arrival.webhook_id),
            Some(&2),
            "{} was in flight from the killed node and must be sent again by another",
            arrival.webhook_id
        );
        let delivery = survivors[0]
            .delivery(&ws, &delivery_of[&arrival.webhook_id])
            .await;
        assert_eq!(delivery["status"], "delivered", "{delivery:#}");
    }
    let taken_over_after: Vec<Duration> = twice
        .iter()
        .filter_map(|id| {
            arrivals
                .iter()
                .filter(|a| &a.webhook_id == *id)
                .nth(1)
                .map(|again| again.started - killed_at)
        })
        .collect();
    eprintln!(
        "{} events sent twice, all by {victim_name} first, again {taken_over_after:?} after the kill; at most {} requests in flight",
        twice.len(),
        endpoint.max_in_flight()
    );
}
