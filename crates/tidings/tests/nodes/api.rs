//! The API of one node, as an operator: workspaces, webhooks, publishing, and reading deliveries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::helpers::{str_of, webhook_body};

/// The event type every webhook here subscribes to.
pub const SENT: &str = "email.sent.v1";

/// One node's API, called with the operator key.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub address: String,
    pub key: String,
}

/// An event a node accepted: (event id, which is the `webhook-id`; its delivery ids).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub event_id: String,
    pub deliveries: Vec<String>,
}

impl Api {
    /// Sends a request; `Err` when no answer came (connection refused, timeout).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.address))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {path} on {}: {e}", self.address))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{method} {path} on {}: body: {e}", self.address))?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// GETs `path` and asserts a 200.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self
            .send(reqwest::Method::GET, path, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 200, "GET {path} on {}: {body}", self.address);
        body
    }

    /// Sends `body` with `method` to `path` and asserts the `expected` status.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
        expected: u16,
    ) -> Value {
        let (status, answer) = self
            .send(method.clone(), path, Some(&body))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            status, expected,
            "{method} {path} on {}: {answer}",
            self.address
        );
        answer
    }

    pub async fn post(&self, path: &str, body: Value, expected: u16) -> Value {
        self.call(reqwest::Method::POST, path, body, expected).await
    }

    /// A new workspace with one webhook for `url` subscribed to [`SENT`], with `extra` fields
    /// merged into the webhook: (workspace id, webhook id).
    pub async fn workspace_with_webhook(&self, url: &str, extra: Value) -> (String, String) {
        let ws = str_of(
            &self
                .post("/v1/workspaces", json!({"name": "Nodes"}), 201)
                .await["id"],
        );
        let hook = self
            .post(
                &format!("/v1/workspaces/{ws}/webhooks"),
                webhook_body(url, &[SENT], extra),
                201,
            )
            .await;
        (ws, str_of(&hook["id"]))
    }

    /// The catalog example of [`SENT`], as an event body to publish.
    pub async fn example_event(&self) -> Value {
        let example = self.get(&format!("/v1/event-types/{SENT}")).await["example"].clone();
        assert!(example.is_object(), "{SENT} has an example: {example}");
        json!({"type": SENT, "data": example})
    }

    /// Publishes `body` to `ws`: the status and answer, or `Err` when no answer came.
    pub async fn publish(&self, ws: &str, body: &Value) -> Result<(u16, Value), String> {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/workspaces/{ws}/events"),
            Some(body),
        )
        .await
    }

    /// Publishes `body` and asserts it was accepted.
    pub async fn publish_accepted(&self, ws: &str, body: &Value) -> Accepted {
        let (status, answer) = self
            .publish(ws, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 202, "publish on {}: {answer}", self.address);
        accepted(&answer)
    }

    /// How many of `ws`'s deliveries are pending, over every page.
    pub async fn pending_count(&self, ws: &str) -> usize {
        let mut count = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/workspaces/{ws}/deliveries?status=pending&limit=500");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.get(&path).await;
            count += page["data"].as_array().expect("data array").len();
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return count,
            }
        }
    }

    /// A delivery as the API shows it.
    pub async fn delivery(&self, ws: &str, id: &str) -> Value {
        self.get(&format!("/v1/workspaces/{ws}/deliveries/{id}"))
            .await
    }
}

/// The event id and delivery ids of a publish's 202 answer.
pub fn accepted(answer: &Value) -> Accepted {
    Accepted {
        event_id: str_of(&answer["id"]),
        deliveries: answer["deliveries"]
            .as_array()
            .unwrap_or_else(|| panic!("deliveries in {answer}"))
            .iter()
            .map(str_of)
            .collect(),
    }
}

/// Publishes `count` copies of `body` to `ws` from `parallel` tasks, event `i` through node
/// `i % apis.len()`: every accepted event, or the first answer that was not a 202.
pub async fn publish_round_robin(
    apis: &[Api],
    ws: &str,
    body: &Value,
    count: usize,
    parallel: usize,
) -> Result<Vec<Accepted>, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (apis, ws, body, next) = (apis.to_vec(), ws.to_owned(), body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut accepted_here = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return Ok(accepted_here);
                }
                let api = &apis[index % apis.len()];
                match api.publish(&ws, &body).await? {
                    (202, answer) => accepted_here.push(accepted(&answer)),
                    (status, answer) => {
                        return Err(format!(
                            "publish {index} on {} answered {status}: {answer}",
                            api.address
                        ));
                    }
                }
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.map_err(|e| format!("publisher task: {e}"))??);
    }
    Ok(all)
}
