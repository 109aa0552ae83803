//! A webhook's configuration (SPEC section 2) and the rules it must satisfy.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::net;

pub const DEFAULT_TIMEOUT_MS: u32 = 10_000;
pub const MIN_TIMEOUT_MS: u32 = 1_000;
pub const MAX_TIMEOUT_MS: u32 = 30_000;
pub const DEFAULT_HMAC_HEADER: &str = "x-tidings-signature";
const MAX_HEADERS: usize = 32;
const MAX_FILTER_IDS: usize = 1_000;
const MAX_EVENT_TYPES: usize = 200;

/// Which events of the workspace a webhook receives, beyond its event types. Empty lists match all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    #[serde(default)]
    pub campaign_ids: Vec<String>,
    #[serde(default)]
    pub client_ids: Vec<String>,
    #[serde(default)]
    pub agent_ids: Vec<String>,
    #[serde(default)]
    pub category_ids: Vec<String>,
}

/// The body a receiver gets: the full envelope or the bare `data` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    #[default]
    Envelope,
    Data,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum SigningScheme {
    /// Standard Webhooks 1.0 (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    #[default]
    #[serde(rename = "standard")]
    Standard,
    /// `sha256=<hex>` of the body in one header, keyed with the secret string.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

/// How deliveries are signed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    #[serde(default)]
    pub scheme: SigningScheme,
    /// Header carrying the `hmac-sha256` signature; default `x-tidings-signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

impl Signing {
    /// The header name the `hmac-sha256` signature goes in.
    pub fn hmac_header(&self) -> &str {
        self.header.as_deref().unwrap_or(DEFAULT_HMAC_HEADER)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    #[default]
    Active,
    Paused,
    Disabled,
}

impl WebhookState {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookState::Active => "active",
            WebhookState::Paused => "paused",
            WebhookState::Disabled => "disabled",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(WebhookState::Active),
            "paused" => Some(WebhookState::Paused),
            "disabled" => Some(WebhookState::Disabled),
            _ => None,
        }
    }
}

/// Everything a workspace sets on a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookSpec {
    pub name: String,
    pub description: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub filters: Filters,
    pub headers: BTreeMap<String, String>,
    pub signing: Signing,
    pub payload_format: PayloadFormat,
    pub timeout_ms: u32,
    pub retry_schedule: Option<Vec<u32>>,
    pub rate_limit_per_s: Option<u32>,
}

/// Which targets the server lets webhooks point at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    pub allow_http: bool,
    pub allow_private: bool,
}

/// A rule a webhook broke, naming the field so a form can show the message beside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidWebhook {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidWebhook {
    InvalidWebhook {
        field: field.into(),
        message: message.into(),
    }
}

/// Headers a webhook may not set: the transport's own and the signatures'.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "webhook-key-id",
    "x-request-id",
    DEFAULT_HMAC_HEADER,
];

/// RFC 9110 `token`: the characters a header name may use.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 9110 field value: visible ASCII, spaces and tabs, no leading or trailing whitespace.
fn is_field_value(text: &str) -> bool {
    text.bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        && text.trim_matches([' ', '\t']).len() == text.len()
}

/// Checks a webhook URL against the target policy; IP literals are classified here, host names again
/// after resolution at delivery time.
pub fn validate_url(text: &str, policy: TargetPolicy) -> Result<url::Url, InvalidWebhook> {
    let url = url::Url::parse(text)
        .map_err(|e| invalid("url", format!("The URL is not a valid absolute URL: {e}")))?;
    if text.len() > 2048 {
        return Err(invalid("url", "The URL is longer than 2048 characters"));
    }
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => {
            return Err(invalid(
                "url",
                "The URL must use https:// (this server does not allow http:// targets)",
            ));
        }
        other => {
            return Err(invalid(
                "url",
                format!("The URL scheme `{other}` is not supported; use https://"),
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "url",
            "The URL must not carry credentials; send them in a custom header instead",
        ));
    }
    if url.fragment().is_some() {
        return Err(invalid("url", "The URL must not have a #fragment"));
    }
    let host = url
        .host()
        .ok_or_else(|| invalid("url", "The URL has no host"))?;
    if !policy.allow_private {
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    return Err(invalid(
                        "url",
                        "The URL points at this machine (localhost), which webhooks may not reach",
                    ));
                }
                None
            }
        };
        if let Some(class) = literal.and_then(net::blocked_class) {
            return Err(invalid(
                "url",
                format!(
                    "The URL points at {}, which webhooks may not reach",
                    class.describe()
                ),
            ));
        }
    }
    Ok(url)
}

fn validate_ids(field: &str, ids: &[String]) -> Result<(), InvalidWebhook> {
    if ids.len() > MAX_FILTER_IDS {
        return Err(invalid(field, format!("Use at most {MAX_FILTER_IDS} ids")));
    }
    if let Some(bad) = ids.iter().find(|id| id.is_empty() || id.len() > 200) {
        return Err(invalid(
            field,
            format!("`{bad}` is not a valid id (1 to 200 characters)"),
        ));
    }
    Ok(())
}

/// Checks a whole webhook. `event_type_exists` answers for catalog and custom types alike.
pub fn validate_spec(
    spec: &WebhookSpec,
    policy: TargetPolicy,
    event_type_exists: impl Fn(&str) -> bool,
) -> Result<(), InvalidWebhook> {
    if spec.name.chars().count() > 200 {
        return Err(invalid("name", "The name is longer than 200 characters"));
    }
    if spec.description.chars().count() > 2000 {
        return Err(invalid(
            "description",
            "The description is longer than 2000 characters",
        ));
    }
    validate_url(&spec.url, policy)?;
    if spec.event_types.is_empty() {
        return Err(invalid("event_types", "Choose at least one event type"));
    }
    if spec.event_types.len() > MAX_EVENT_TYPES {
        return Err(invalid(
            "event_types",
            format!("Choose at most {MAX_EVENT_TYPES} event types"),
        ));
    }
    if let Some(unknown) = spec.event_types.iter().find(|t| !event_type_exists(t)) {
        return Err(invalid(
            "event_types",
            format!("`{unknown}` is not an event type of this server"),
        ));
    }
    validate_ids("filters.campaign_ids", &spec.filters.campaign_ids)?;
    validate_ids("filters.client_ids", &spec.filters.client_ids)?;
    validate_ids("filters.agent_ids", &spec.filters.agent_ids)?;
    validate_ids("filters.category_ids", &spec.filters.category_ids)?;

    let hmac_header = spec.signing.hmac_header().to_ascii_lowercase();
    if spec.signing.header.is_some() {
        if spec.signing.scheme != SigningScheme::HmacSha256 {
            return Err(invalid(
                "signing.header",
                "a signature header name only applies to the hmac-sha256 scheme",
            ));
        }
        if !is_token(&hmac_header) || hmac_header.len() > 100 {
            return Err(invalid(
                "signing.header",
                "The signature header name must be a valid HTTP header name",
            ));
        }
        if RESERVED_HEADERS.contains(&hmac_header.as_str()) && hmac_header != DEFAULT_HMAC_HEADER {
            return Err(invalid(
                "signing.header",
                format!("`{hmac_header}` is reserved and cannot carry the signature"),
            ));
        }
    }
    if spec.headers.len() > MAX_HEADERS {
        return Err(invalid(
            "headers",
            format!("Use at most {MAX_HEADERS} custom headers"),
        ));
    }
    for (name, value) in &spec.headers {
        let lower = name.to_ascii_lowercase();
        if !is_token(name) || name.len() > 100 {
            return Err(invalid(
                "headers",
                format!("`{name}` is not a valid HTTP header name"),
            ));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower == hmac_header {
            return Err(invalid(
                "headers",
                format!("`{name}` is set by Tidings and cannot be a custom header"),
            ));
        }
        if !is_field_value(value) || value.len() > 4096 {
            return Err(invalid(
                "headers",
                format!(
                    "The value of `{name}` must be printable text without line breaks or surrounding spaces, at most 4096 bytes"
                ),
            ));
        }
    }
    if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&spec.timeout_ms) {
        return Err(invalid(
            "timeout_ms",
            format!("The timeout must be between {MIN_TIMEOUT_MS} and {MAX_TIMEOUT_MS} ms"),
        ));
    }
    if let Some(schedule) = &spec.retry_schedule {
        crate::retry::validate_schedule(schedule).map_err(|m| invalid("retry_schedule", m))?;
    }
    if let Some(rate) = spec.rate_limit_per_s
        && !(1..=10_000).contains(&rate)
    {
        return Err(invalid(
            "rate_limit_per_s",
            "The rate limit must be between 1 and 10000 per second",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: TargetPolicy = TargetPolicy {
        allow_http: false,
        allow_private: false,
    };
    const LOOSE: TargetPolicy = TargetPolicy {
        allow_http: true,
        allow_private: true,
    };

    fn spec() -> WebhookSpec {
        WebhookSpec {
            name: "CRM sync".into(),
            description: String::new(),
            url: "https://hooks.example.com/tidings".into(),
            event_types: vec!["email.sent.v1".into()],
            filters: Filters::default(),
            headers: BTreeMap::new(),
            signing: Signing::default(),
            payload_format: PayloadFormat::Envelope,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            retry_schedule: None,
            rate_limit_per_s: None,
        }
    }

    fn check(change: impl FnOnce(&mut WebhookSpec), policy: TargetPolicy, field: Option<&str>) {
        let mut spec = spec();
        change(&mut spec);
        let result = validate_spec(&spec, policy, |t| {
            t == "email.sent.v1" || t == "email.opened.v1"
        });
        assert_eq!(
            result.as_ref().err().map(|e| e.field.as_str()),
            field,
            "{spec:?}: {result:?}"
        );
    }

    #[test]
    fn a_plain_https_webhook_is_valid() {
        check(|_| {}, STRICT, None);
    }

    #[test]
    fn url_rules() {
        check(
            |s| s.url = "http://hooks.example.com".into(),
            STRICT,
            Some("url"),
        );
        check(|s| s.url = "http://hooks.example.com".into(), LOOSE, None);
        check(
            |s| s.url = "ftp://hooks.example.com".into(),
            LOOSE,
            Some("url"),
        );
        check(|s| s.url = "/relative".into(), STRICT, Some("url"));
        check(
            |s| s.url = "https://user:pw@hooks.example.com".into(),
            STRICT,
            Some("url"),
        );
        check(
            |s| s.url = "https://hooks.example.com/#frag".into(),
            STRICT,
            Some("url"),
        );
        check(
            |s| s.url = "https://127.0.0.1/x".into(),
            STRICT,
            Some("url"),
        );
        check(
            |s| s.url = "https://[::ffff:127.0.0.1]/x".into(),
            STRICT,
            Some("url"),
        );
        check(
            |s| s.url = "https://169.254.169.254/latest".into(),
            STRICT,
            Some("url"),
        );
        check(|s| s.url = "https://0x7f.1/x".into(), STRICT, Some("url"));
        check(
            |s| s.url = "https://localhost:8443/x".into(),
            STRICT,
            Some("url"),
        );
        check(|s| s.url = "https://127.0.0.1/x".into(), LOOSE, None);
        check(
            |s| s.url = format!("https://example.com/{}", "a".repeat(2100)),
            STRICT,
            Some("url"),
        );
    }

    #[test]
    fn event_types_must_exist_and_not_be_empty() {
        check(|s| s.event_types.clear(), STRICT, Some("event_types"));
        check(
            |s| s.event_types.push("email.nope.v1".into()),
            STRICT,
            Some("event_types"),
        );
        check(
            |s| s.event_types.push("email.opened.v1".into()),
            STRICT,
            None,
        );
    }

    #[test]
    fn header_rules() {
        let header = |name: &str, value: &str| {
            let (name, value) = (name.to_owned(), value.to_owned());
            move |s: &mut WebhookSpec| {
                s.headers.insert(name, value);
            }
        };
        check(header("X-Api-Key", "abc123"), STRICT, None);
        check(header("Bad Name", "x"), STRICT, Some("headers"));
        check(
            header("X-Ok", "line\r\nInjected: 1"),
            STRICT,
            Some("headers"),
        );
        check(header("X-Ok", "nul\0"), STRICT, Some("headers"));
        check(header("X-Ok", " padded"), STRICT, Some("headers"));
        check(
            header("Content-Type", "text/plain"),
            STRICT,
            Some("headers"),
        );
        check(header("Webhook-Signature", "v1,x"), STRICT, Some("headers"));
        check(header("host", "evil"), STRICT, Some("headers"));
        check(header("User-Agent", "x"), STRICT, Some("headers"));
        check(header("X-Tidings-Signature", "x"), STRICT, Some("headers"));
    }

    #[test]
    fn hmac_header_name_is_configurable_and_reserved() {
        check(
            |s| {
                s.signing = Signing {
                    scheme: SigningScheme::HmacSha256,
                    header: Some("X-Hub-Signature".into()),
                };
                s.headers.insert("x-hub-signature".into(), "x".into());
            },
            STRICT,
            Some("headers"),
        );
        check(
            |s| {
                s.signing = Signing {
                    scheme: SigningScheme::HmacSha256,
                    header: Some("X-Hub-Signature".into()),
                }
            },
            STRICT,
            None,
        );
        check(
            |s| {
                s.signing = Signing {
                    scheme: SigningScheme::HmacSha256,
                    header: Some("bad header".into()),
                }
            },
            STRICT,
            Some("signing.header"),
        );
        check(
            |s| {
                s.signing = Signing {
                    scheme: SigningScheme::HmacSha256,
                    header: Some("webhook-id".into()),
                }
            },
            STRICT,
            Some("signing.header"),
        );
        check(
            |s| {
                s.signing = Signing {
                    scheme: SigningScheme::Standard,
                    header: Some("x-sig".into()),
                }
            },
            STRICT,
            Some("signing.header"),
        );
    }

    #[test]
    fn timeout_schedule_and_rate_limits_are_bounded() {
        check(|s| s.timeout_ms = 999, STRICT, Some("timeout_ms"));
        check(|s| s.timeout_ms = 1_000, STRICT, None);
        check(|s| s.timeout_ms = 30_000, STRICT, None);
        check(|s| s.timeout_ms = 30_001, STRICT, Some("timeout_ms"));
        check(
            |s| s.retry_schedule = Some(vec![0]),
            STRICT,
            Some("retry_schedule"),
        );
        check(|s| s.retry_schedule = Some(vec![5, 300]), STRICT, None);
        check(
            |s| s.rate_limit_per_s = Some(0),
            STRICT,
            Some("rate_limit_per_s"),
        );
        check(|s| s.rate_limit_per_s = Some(50), STRICT, None);
        check(
            |s| s.filters.campaign_ids = vec![String::new()],
            STRICT,
            Some("filters.campaign_ids"),
        );
    }
}
