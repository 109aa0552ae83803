//! The hot paths (publishing, claiming, recording, and the wake-up sent after them) keep their
//! connections between uses: no ping before or after each use, and a kept connection the database
//! dropped while it sat idle is replaced without the next use failing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tidings_core::ids::{IdKind, new_id};
use tidings_store::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

/// SSLRequest's code, in place of a protocol version (PostgreSQL's frontend/backend protocol).
const SSL_REQUEST: u32 = 80_877_103;

/// A TCP relay between the store and PostgreSQL that counts pings: a Sync message sent on its own,
/// with no statement before it since the last round trip ended.
struct Relay {
    url: String,
    pings: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(url: &str) -> Relay {
        let (head, rest) = url
            .strip_prefix("postgres://")
            .and_then(|u| u.split_once('@'))
            .expect("a postgres:// URL with a user");
        let (server, database) = rest.split_once('/').expect("a database in the URL");
        let server = server.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let pings = Arc::new(AtomicUsize::new(0));
        let counted = pings.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&server).await.expect("reach PostgreSQL");
                // Messages go on as they are read, not held back to fill a segment.
                for end in [&client, &server] {
                    end.set_nodelay(true).expect("set TCP_NODELAY");
                }
                tokio::spawn(relay(client, server, counted.clone()));
            }
        });
        Relay {
            url: format!("postgres://{head}@127.0.0.1:{port}/{database}"),
            pings,
        }
    }

    fn pings(&self) -> usize {
        self.pings.load(Ordering::SeqCst)
    }
}

async fn relay(client: TcpStream, server: TcpStream, pings: Arc<AtomicUsize>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    tokio::spawn(async move { tokio::io::copy(&mut from_server, &mut to_client).await });
    // Untyped messages first (an SSLRequest, answered by the server, then the startup message).
    let mut untyped = true;
    let mut statement_pending = false;
    loop {
        let mut kind = [0u8; 1];
        if !untyped && from_client.read_exact(&mut kind).await.is_err() {
            return;
        }
        let mut length = [0u8; 4];
        if from_client.read_exact(&mut length).await.is_err() {
            return;
        }
        let mut body = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
        if from_client.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut message = Vec::with_capacity(5 + body.len());
        if untyped {
            untyped = body.get(..4) == Some(&SSL_REQUEST.to_be_bytes()[..]) && body.len() == 4;
        } else {
            message.push(kind[0]);
            match kind[0] {
                b'S' if !statement_pending => {
                    pings.fetch_add(1, Ordering::SeqCst);
                }
                b'S' | b'Q' => statement_pending = false,
                _ => statement_pending = true,
            }
        }
        message.extend_from_slice(&length);
        message.extend_from_slice(&body);
        if to_server.write_all(&message).await.is_err() {
            return;
        }
    }
}

/// Reads what the API reads for every request (the caller's key, the workspace), publishes one
/// event, claims it and records it: the hot path of one delivery.
async fn one_delivery(store: &dyn Store, hook: &Webhook) {
    store
        .get_workspace(&hook.workspace_id)
        .await
        .expect("read the workspace");
    let key = new_id(IdKind::ApiKey);
    assert!(matches!(
        store.get_api_key(&key).await,
        Err(StoreError::NotFound)
    ));
    deliver_one(store, hook).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_claiming_and_recording_send_no_pings() {
    let url = tidings_testkit::postgres::fresh_database().await;
    let relay = Relay::start(&url).await;
    let store = node(&relay.url).await;
    let ws = workspace(&store).await;
    let hook = webhook(&store, &ws.id).await;
    // The first runs open the connections and prepare the statements.
    for _ in 0..3 {
        one_delivery(&store, &hook).await;
    }
    let before = relay.pings();
    for _ in 0..20 {
        one_delivery(&store, &hook).await;
    }
    // Each of the 20 rounds of reads, publishes, claims, records and wake-ups took a pool
    // connection and gave it back (pinged on the way back, and on the way out too) before
    // connections were kept: 120 pings or more. Now only the publishing runner's first use takes a
    // connection from the pool, which pings it if it sat idle for a second.
    assert!(
        relay.pings() - before <= 1,
        "{} pings sent by 20 deliveries' reads, publishes, claims, records and wake-ups",
        relay.pings() - before
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_the_database_dropped_is_replaced_unnoticed() {
    let url = tidings_testkit::postgres::fresh_database().await;
    let store = node(&url).await;
    let ws = workspace(&store).await;
    let hook = webhook(&store, &ws.id).await;
    one_delivery(&store, &hook).await;
    let look = inspect(&url).await;
    let dropped: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'tidings'",
    )
    .fetch_all(&look)
    .await
    .expect("terminate the store's connections");
    assert!(
        dropped.len() >= 4,
        "the store's connections: a runner's, the claim's, the record's, the announcer's and the listener's; terminated {}",
        dropped.len()
    );
    // Idle past the check: each kept connection is pinged, found gone and replaced.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    one_delivery(&store, &hook).await;
    store.close().await;
}
