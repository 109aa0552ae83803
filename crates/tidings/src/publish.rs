//! `tidings publish`: publishes one event through a running Tidings' API, as a platform would.

use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

/// What to publish, and where.
#[derive(clap::Args)]
pub struct PublishOptions {
    /// Tidings' address.
    #[arg(long, env = "TIDINGS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API key of the workspace, or an operator key (tdk_...).
    #[arg(long, env = "TIDINGS_API_KEY", hide_env_values = true)]
    pub key: String,
    /// The workspace to publish in (ws_...).
    #[arg(long, env = "TIDINGS_WORKSPACE")]
    pub workspace: String,
    /// The event type, e.g. email.replied.v1.
    #[arg(long = "type")]
    pub event_type: String,
    /// The event's data: JSON, @FILE, or - for stdin. Without it, the type's catalog example.
    #[arg(long)]
    pub data: Option<String>,
    /// When it happened (RFC 3339); default: when Tidings receives it.
    #[arg(long)]
    pub occurred_at: Option<String>,
    #[arg(long)]
    pub campaign_id: Option<String>,
    #[arg(long)]
    pub client_id: Option<String>,
    #[arg(long)]
    pub agent_id: Option<String>,
    #[arg(long)]
    pub category_id: Option<String>,
    /// Publishing again with the same key within 24 h returns the first event.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// The request body; `data` is sent as the text given, so receivers get the same bytes.
#[derive(Serialize)]
struct Publish<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurred_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    campaign_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
}

/// Publishes the event and returns the API's answer (`{id, deliveries, duplicate}`).
pub async fn run(options: &PublishOptions) -> anyhow::Result<serde_json::Value> {
    let base = options.url.trim_end_matches('/');
    let parsed = url::Url::parse(base)
        .map_err(|e| anyhow::anyhow!("--url `{}` is not a URL: {e}", options.url))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("--url `{}` must be http:// or https://", options.url);
    }
    // Several crates may race to install the process-wide TLS provider; any installed one will do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
    let call = |request: reqwest::RequestBuilder| async {
        let response = request
            .bearer_auth(&options.key)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach Tidings at {base}: {e}"))?;
        answer(response).await
    };

    let data = match options.data.as_deref() {
        None => {
            let path = format!("{base}/v1/event-types/{}", options.event_type);
            let found = call(http.get(path)).await?;
            serde_json::to_string(&found["example"])?
        }
        Some("-") => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| anyhow::anyhow!("cannot read the data from stdin: {e}"))?;
            text
        }
        Some(data) => match data.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read the data from {path}: {e}"))?,
            None => data.to_owned(),
        },
    };
    let data: &RawValue = serde_json::from_str(data.trim())
        .map_err(|e| anyhow::anyhow!("the data is not JSON: {e}"))?;
    let body = Publish {
        event_type: &options.event_type,
        data,
        occurred_at: options.occurred_at.as_deref(),
        campaign_id: options.campaign_id.as_deref(),
        client_id: options.client_id.as_deref(),
        agent_id: options.agent_id.as_deref(),
        category_id: options.category_id.as_deref(),
        idempotency_key: options.idempotency_key.as_deref(),
    };
    let path = format!("{base}/v1/workspaces/{}/events", options.workspace);
    let body = serde_json::to_vec(&body)?;
    call(
        http.post(path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body),
    )
    .await
}

/// A 2xx answer's JSON, or the API's error as a message.
async fn answer(response: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| anyhow::anyhow!("the answer ({status}) could not be read: {e}"))?;
    let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    if status.is_success() {
        return json.ok_or_else(|| anyhow::anyhow!("the answer ({status}) is not JSON: {text}"));
    }
    let error = json.as_ref().map(|j| &j["error"]);
    match error.and_then(|e| Some((e["code"].as_str()?, e["message"].as_str()?))) {
        Some((code, message)) => anyhow::bail!("refused ({status}): {code}: {message}"),
        None => anyhow::bail!("refused ({status}): {}", text.trim()),
    }
}
