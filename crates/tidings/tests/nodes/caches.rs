//! What a node keeps of another node's changes: a key revoked through one node stops working on
//! another once that node's copy of it is out of date, and a workspace deleted through one node is
//! refused by another still holding fan-out's view of it (a 404, not a failed insert's 500).

use std::time::Duration;

use serde_json::{Value, json};
use tidings_testkit::postgres::fresh_database;

use crate::api::Api;
use crate::endpoint::Endpoint;
use crate::helpers::str_of;
use crate::process::Nodes;
use crate::{Deadline, ms};

/// Two nodes, their APIs, a workspace with one webhook, and an event to publish to it.
async fn two_nodes() -> (Endpoint, Nodes, Vec<Api>, String, Value) {
    let endpoint = Endpoint::start(ms(0)..ms(0)).await;
    let nodes = Nodes::start(fresh_database().await, 2, &[]).await;
    let apis = nodes.apis();
    let (ws, _) = apis[0]
        .workspace_with_webhook(&endpoint.url, json!({}))
        .await;
    let body = apis[0].example_event().await;
    (endpoint, nodes, apis, ws, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_one_node_stops_working_on_another() {
    let (_endpoint, mut nodes, apis, ws, body) = two_nodes().await;
    let created = apis[0]
        .post(
            "/v1/keys",
            json!({"scope": "workspace", "workspace_id": ws, "name": "publisher"}),
            201,
        )
        .await;
    let key_on_second = Api {
        key: str_of(&created["key"]),
        ..apis[1].clone()
    };
    // The second node now holds the key.
    key_on_second.publish_accepted(&ws, &body).await;

    apis[0]
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/keys/{}", str_of(&created["id"])),
            Value::Null,
            204,
        )
        .await;
    let limit = tidings_server::KEY_REFRESH + Duration::from_secs(4);
    let deadline = Deadline::after(limit, "the revoked key refused by the other node");
    loop {
        nodes.assert_running();
        let (status, answer) = key_on_second
            .publish(&ws, &body)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if status == 401 {
            assert_eq!(answer["error"]["code"], "unauthorized", "{answer}");
            break;
        }
        assert_eq!(status, 202, "{answer}");
        deadline.tick(format!("still {status}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_deleted_through_one_node_is_not_found_on_another() {
    let (_endpoint, mut nodes, apis, ws, body) = two_nodes().await;
    // The second node loads fan-out's view of the workspace, then it is deleted through the first.
    apis[1].publish_accepted(&ws, &body).await;
    apis[0]
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/workspaces/{ws}"),
            Value::Null,
            204,
        )
        .await;
    for _ in 0..2 {
        let (status, answer) = apis[1]
            .publish(&ws, &body)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (status, &answer["error"]["code"]),
            (404, &json!("workspace_not_found")),
            "{answer}"
        );
    }
    nodes.assert_running();
}
