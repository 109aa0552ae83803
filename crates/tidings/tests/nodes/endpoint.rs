//! A receiver for tests with several nodes: a real HTTP endpoint on 127.0.0.1 that holds each
//! request for a while, answers 200, and records what the nodes did to it: every request's
//! `webhook-id`, the connection it came on, when it started and whether it was answered, how many
//! requests were in flight at most, and every `webhook-id` that arrived while a request with the
//! same id was still in flight.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::http::HeaderMap;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One TCP connection a node opened to the endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    /// Unique within the test process, so a reused port is never taken for the same connection.
    pub id: u64,
    pub peer: SocketAddr,
    pub accepted: Instant,
}

impl Connected<IncomingStream<'_, TcpListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            peer: *stream.remote_addr(),
            accepted: Instant::now(),
        }
    }
}

/// One request the endpoint got.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The `webhook-id` header (empty when missing).
    pub webhook_id: String,
    pub connection: Connection,
    pub started: Instant,
    /// When the request stopped being handled: answered, or given up because the sender went away.
    pub finished: Option<Instant>,
    /// Whether the endpoint produced its answer (false: the sender went away first).
    pub answered: bool,
}

#[derive(Default)]
struct State {
    arrivals: Vec<Arrival>,
    in_flight: usize,
    max_in_flight: usize,
    in_flight_by_id: HashMap<String, usize>,
    /// `webhook-id`s that arrived while a request with the same id was in flight.
    overlapping: Vec<String>,
    connections: Vec<Connection>,
}

/// Marks a request finished when its handling ends, also when the handler is dropped because the
/// sender went away (a killed node).
struct InFlight {
    state: Arc<Mutex<State>>,
    index: usize,
    answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.in_flight -= 1;
        let id = state.arrivals[self.index].webhook_id.clone();
        if let Some(count) = state.in_flight_by_id.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                state.in_flight_by_id.remove(&id);
            }
        }
        let arrival = &mut state.arrivals[self.index];
        arrival.finished = Some(Instant::now());
        arrival.answered = self.answered;
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves the counters as they were; keep reading them.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The endpoint; stopped when dropped.
pub struct Endpoint {
    pub url: String,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
}

impl Endpoint {
    /// An endpoint holding each request for a time drawn from `hold` before answering 200.
    pub async fn start(hold: Range<Duration>) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the endpoint");
        let addr = listener.local_addr().expect("endpoint address");
        let shared = state.clone();
        let app = axum::Router::new().fallback(
            move |ConnectInfo(connection): ConnectInfo<Connection>, headers: HeaderMap| {
                let state = shared.clone();
                let hold = hold.clone();
                async move {
                    let webhook_id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let mut guard = {
                        let mut locked = lock(&state);
                        if !locked.connections.iter().any(|c| c.id == connection.id) {
                            locked.connections.push(connection);
                        }
                        locked.in_flight += 1;
                        locked.max_in_flight = locked.max_in_flight.max(locked.in_flight);
                        let same = locked
                            .in_flight_by_id
                            .entry(webhook_id.clone())
                            .or_insert(0);
                        *same += 1;
                        if *same > 1 {
                            locked.overlapping.push(webhook_id.clone());
                        }
                        locked.arrivals.push(Arrival {
                            webhook_id,
                            connection,
                            started: Instant::now(),
                            finished: None,
                            answered: false,
                        });
                        InFlight {
                            index: locked.arrivals.len() - 1,
                            state: state.clone(),
                            answered: false,
                        }
                    };
                    let hold = if hold.is_empty() {
                        hold.start
                    } else {
                        rand::random_range(hold)
                    };
                    tokio::time::sleep(hold).await;
                    // Finished before the answer leaves, so the next request a node sends only
                    // once it has this answer is never counted as overlapping with this one.
                    guard.answered = true;
                    drop(guard);
                    "ok"
                }
            },
        );
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<Connection>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            state,
            shutdown,
        }
    }

    /// The endpoint's port (nodes' connections to it have it as their remote port).
    pub fn port(&self) -> u16 {
        self.url
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches("/hook")
            .parse()
            .expect("endpoint port")
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.state).arrivals.clone()
    }

    /// Requests per `webhook-id`.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for arrival in &lock(&self.state).arrivals {
            *counts.entry(arrival.webhook_id.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// The distinct `webhook-id`s received so far.
    pub fn seen(&self) -> HashSet<String> {
        lock(&self.state)
            .arrivals
            .iter()
            .map(|a| a.webhook_id.clone())
            .collect()
    }

    pub fn max_in_flight(&self) -> usize {
        lock(&self.state).max_in_flight
    }

    /// `webhook-id`s that arrived while a request with the same id was still in flight.
    pub fn overlapping(&self) -> Vec<String> {
        lock(&self.state).overlapping.clone()
    }

    /// The connections whose peer (local) port is one of `ports`, the latest accepted per port (a
    /// port may be reused by a later connection).
    pub fn connections_from(&self, ports: &HashSet<u16>) -> HashSet<u64> {
        let mut latest: HashMap<u16, Connection> = HashMap::new();
        for connection in &lock(&self.state).connections {
            let port = connection.peer.port();
            if ports.contains(&port)
                && latest
                    .get(&port)
                    .is_none_or(|seen| seen.accepted <= connection.accepted)
            {
                latest.insert(port, *connection);
            }
        }
        latest.values().map(|c| c.id).collect()
    }

    /// Requests still in flight that came on one of `connections`.
    pub fn in_flight_on(&self, connections: &HashSet<u64>) -> Vec<Arrival> {
        lock(&self.state)
            .arrivals
            .iter()
            .filter(|a| a.finished.is_none() && connections.contains(&a.connection.id))
            .cloned()
            .collect()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
