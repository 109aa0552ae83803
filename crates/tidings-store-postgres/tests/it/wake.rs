//! Waking every node when work becomes due, and what nodes see while PostgreSQL is down.

use std::time::Duration;

use tidings_core::webhook::WebhookState;
use tidings_store::*;
use tidings_store_postgres::{PostgresOptions, PostgresStore};
use tidings_testkit::postgres::Cluster;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_made_due_on_one_node_wakes_the_other() {
    let (_url, a, b) = two_nodes().await;
    let signal = b.work_signal();
    assert!(
        woken(&signal, Duration::from_secs(10)).await,
        "woken once listening"
    );
    let ws = workspace(&a).await;
    let hook = webhook(&a, &ws.id).await;

    drain(&signal).await;
    let ids = publish_many(&a, &hook, 1, now()).await;
    assert!(
        woken(&signal, Duration::from_secs(3)).await,
        "publish on a wakes b"
    );

    let claimed = a
        .claim_due(&claim("node-a", now(), 10))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    drain(&signal).await;
    a.release("node-a", &ids).await.expect("release");
    assert!(
        woken(&signal, Duration::from_secs(3)).await,
        "release on a wakes b"
    );

    let mut paused = a.get_webhook(&ws.id, &hook.id).await.expect("read");
    paused.state = WebhookState::Paused;
    a.update_webhook(&paused).await.expect("pause");
    publish_many(&a, &hook, 1, now()).await;
    drain(&signal).await;
    paused.state = WebhookState::Active;
    a.update_webhook(&paused).await.expect("resume");
    assert!(
        woken(&signal, Duration::from_secs(3)).await,
        "resuming on a wakes b"
    );

    drain(&signal).await;
    a.enable_webhook(&ws.id, &hook.id, now())
        .await
        .expect("enable");
    assert!(
        woken(&signal, Duration::from_secs(3)).await,
        "enabling on a wakes b"
    );

    // Nothing due: nobody is woken.
    drain(&signal).await;
    a.renew_claims("node-a", &ids, now() + 60_000)
        .await
        .expect("renew");
    assert!(!woken(&signal, Duration::from_millis(500)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_answer_unavailable_while_postgres_is_down_and_listen_again_after() {
    let cluster = Cluster::start_new(None).expect("a cluster of our own to stop and start");
    let url = cluster.create_database().await.expect("a database");
    let short = PostgresOptions {
        acquire_timeout: Duration::from_secs(1),
        ..options(&url)
    };
    let a = PostgresStore::open(&short).await.expect("open a");
    let b = PostgresStore::open(&short).await.expect("open b");
    let ws = workspace(&a).await;
    let hook = webhook(&a, &ws.id).await;
    let signal = a.work_signal();
    assert!(woken(&signal, Duration::from_secs(10)).await, "listening");
    drain(&signal).await;

    // The test cluster commits asynchronously: make what is committed so far survive the crash.
    sqlx::query("CHECKPOINT")
        .execute(&inspect(&url).await)
        .await
        .expect("checkpoint");
    cluster.stop().expect("stop PostgreSQL");
    match a.ping().await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("ping while down: expected Unavailable, got {other:?}"),
    }
    match a.publish(vec![new_event(&ws.id, now(), &[&hook])]).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("publish while down: expected Unavailable, got {other:?}"),
    }
    match b.claim_due(&claim("node-b", now(), 10)).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("claim while down: expected Unavailable, got {other:?}"),
    }

    cluster.start().expect("start PostgreSQL again");
    assert!(
        woken(&signal, Duration::from_secs(20)).await,
        "woken after listening again, since notifications may have been missed"
    );
    a.ping().await.expect("ping after the restart");
    drain(&signal).await;
    publish_many(&b, &hook, 1, now()).await;
    assert!(
        woken(&signal, Duration::from_secs(3)).await,
        "notifications from other nodes arrive again"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn open_names_the_host_but_never_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let options = PostgresOptions {
        acquire_timeout: Duration::from_secs(1),
        ..options(&format!(
            "postgres://tidings:s3cr3t-pw@127.0.0.1:{port}/tidings"
        ))
    };
    assert!(
        !format!("{options:?}").contains("s3cr3t-pw"),
        "Debug hides the password"
    );
    match PostgresStore::open(&options).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(
                message.contains(&format!("127.0.0.1:{port}")),
                "names the host: {message}"
            );
            assert!(
                !message.contains("s3cr3t-pw"),
                "leaks the password: {message}"
            );
        }
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("nothing listens there"),
    }
}
