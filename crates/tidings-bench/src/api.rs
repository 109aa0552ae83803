//! The few Tidings API calls the bench makes, over one pooled HTTP client.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::tidings_process::TidingsProcess;

/// The event type every phase publishes.
pub const EVENT_TYPE: &str = "email.sent.v1";

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    auth: String,
}

/// A webhook as created: its id and signing secret.
#[derive(Debug, Clone)]
pub struct CreatedWebhook {
    pub id: String,
    pub secret: String,
}

impl Api {
    pub fn new(tidings: &TidingsProcess) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(300))
            .build()?;
        Ok(Self {
            http,
            base: tidings.base_url.clone(),
            auth: format!("Bearer {}", tidings.operator_key),
        })
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("authorization", &self.auth);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "{method} {path} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(
            http::Method::POST,
            path,
            Some(Bytes::from(serde_json::to_vec(body)?)),
        )
        .await
    }

    pub async fn create_workspace(&self, name: &str) -> anyhow::Result<String> {
        let created = self
            .post("/v1/workspaces", &json!({ "name": name }))
            .await?;
        string_field(&created, "id")
    }

    /// The catalog example of the bench's event type (valid `data`).
    pub async fn example_data(&self) -> anyhow::Result<serde_json::Map<String, Value>> {
        let event_type = self
            .call(
                http::Method::GET,
                &format!("/v1/event-types/{EVENT_TYPE}"),
                None,
            )
            .await?;
        match event_type.get("example") {
            Some(Value::Object(example)) => Ok(example.clone()),
            _ => bail!("the catalog has no object example for {EVENT_TYPE}"),
        }
    }

    /// Creates a webhook for the bench's event type; `extra` fields are merged into the request.
    pub async fn create_webhook(
        &self,
        ws: &str,
        url: &str,
        extra: Value,
    ) -> anyhow::Result<CreatedWebhook> {
        let mut body = json!({ "url": url, "event_types": [EVENT_TYPE] });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        let created = self
            .post(&format!("/v1/workspaces/{ws}/webhooks"), &body)
            .await?;
        Ok(CreatedWebhook {
            id: string_field(&created, "id")?,
            secret: string_field(&created, "secret")?,
        })
    }

    pub async fn patch_webhook(&self, ws: &str, id: &str, patch: &Value) -> anyhow::Result<()> {
        self.call(
            http::Method::PATCH,
            &format!("/v1/workspaces/{ws}/webhooks/{id}"),
            Some(Bytes::from(serde_json::to_vec(patch)?)),
        )
        .await?;
        Ok(())
    }

    /// Publishes one event (pre-serialised body); returns the number of deliveries made.
    pub async fn publish(&self, ws: &str, body: Bytes) -> anyhow::Result<usize> {
        let published = self
            .call(
                http::Method::POST,
                &format!("/v1/workspaces/{ws}/events"),
                Some(body),
            )
            .await?;
        Ok(published
            .get("deliveries")
            .and_then(Value::as_array)
            .map_or(0, Vec::len))
    }

    /// Publishes a batch (pre-serialised `{"events": [...]}`); returns the number of events accepted.
    pub async fn publish_batch(&self, ws: &str, body: Bytes) -> anyhow::Result<usize> {
        let published = self
            .call(
                http::Method::POST,
                &format!("/v1/workspaces/{ws}/events/batch"),
                Some(body),
            )
            .await?;
        Ok(published
            .get("events")
            .and_then(Value::as_array)
            .map_or(0, Vec::len))
    }
}

fn string_field(value: &Value, field: &str) -> anyhow::Result<String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("the answer has no `{field}`: {value}"))
}

/// Serialised bodies of events of the bench's type.
#[derive(Clone)]
pub struct EventMaker {
    example: serde_json::Map<String, Value>,
}

impl EventMaker {
    pub fn new(example: serde_json::Map<String, Value>) -> Self {
        Self { example }
    }

    /// One event's JSON, with the send time in `data.bench_sent_at_ns` and an optional campaign.
    pub fn event(&self, sent_at_ns: u64, campaign_id: Option<&str>) -> Value {
        let mut data = self.example.clone();
        data.insert("bench_sent_at_ns".into(), json!(sent_at_ns));
        let mut event = json!({ "type": EVENT_TYPE, "data": data });
        if let (Some(campaign), Some(event)) = (campaign_id, event.as_object_mut()) {
            event.insert("campaign_id".into(), json!(campaign));
        }
        event
    }

    pub fn single(&self, sent_at_ns: u64, campaign_id: Option<&str>) -> Bytes {
        Bytes::from(serde_json::to_vec(&self.event(sent_at_ns, campaign_id)).unwrap_or_default())
    }

    /// `{"events": [...]}` of `count` events sent at `sent_at_ns`. They are all the same, so one is
    /// serialised and repeated: the publishers share the cores with Tidings, and building every
    /// event anew took them a third of a core that Tidings then lacked.
    pub fn batch(&self, count: usize, sent_at_ns: u64) -> Bytes {
        let one = serde_json::to_vec(&self.event(sent_at_ns, None)).unwrap_or_default();
        let mut body = Vec::with_capacity(13 + count * (one.len() + 1));
        body.extend_from_slice(br#"{"events":["#);
        for index in 0..count {
            if index > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&one);
        }
        body.extend_from_slice(b"]}");
        Bytes::from(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_the_events_array_of_its_events() {
        let mut example = serde_json::Map::new();
        example.insert("subject".into(), json!("Quick question, \"Ana\""));
        example.insert("n".into(), json!(3));
        let maker = EventMaker::new(example);
        let body: Value = serde_json::from_slice(&maker.batch(3, 42)).expect("a JSON body");
        let one = maker.event(42, None);
        assert_eq!(body, json!({ "events": [one.clone(), one.clone(), one] }));
        let empty: Value = serde_json::from_slice(&maker.batch(0, 42)).expect("a JSON body");
        assert_eq!(empty, json!({ "events": [] }));
    }
}
