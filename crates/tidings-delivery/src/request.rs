//! The exact bytes and headers a receiver gets (SPEC section 3).

use std::collections::BTreeMap;

use bytes::Bytes;
use tidings_core::signing;
use tidings_core::webhook::{PayloadFormat, SigningScheme};
use tidings_store::Webhook;

/// What is shown in the delivery log for a custom header's value: it may be a credential.
const REDACTED: &str = "[redacted]";

/// A request ready to send: body bytes, headers in order, and the headers as they are logged.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub body: Bytes,
    pub headers: Vec<(String, String)>,
    pub logged_headers: BTreeMap<String, String>,
}

/// The envelope `{"id","type","timestamp","data"}` around the stored `data` bytes, without re-parsing them.
pub(crate) fn envelope(event_id: &str, event_type: &str, occurred_at: i64, data: &str) -> Vec<u8> {
    let quote = |text: &str| serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned());
    let timestamp = tidings_core::format_rfc3339(occurred_at);
    let mut body = Vec::with_capacity(data.len() + event_id.len() + event_type.len() + 80);
    body.extend_from_slice(b"{\"id\":");
    body.extend_from_slice(quote(event_id).as_bytes());
    body.extend_from_slice(b",\"type\":");
    body.extend_from_slice(quote(event_type).as_bytes());
    body.extend_from_slice(b",\"timestamp\":");
    body.extend_from_slice(quote(&timestamp).as_bytes());
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(data.as_bytes());
    body.push(b'}');
    body
}

/// Builds the body and signs it for one attempt made at `now_secs`.
pub fn build_request(
    webhook: &Webhook,
    event_id: &str,
    event_type: &str,
    occurred_at: i64,
    data: &str,
    now_secs: i64,
    user_agent: &str,
) -> SignedRequest {
    let body = match webhook.spec.payload_format {
        PayloadFormat::Envelope => Bytes::from(envelope(event_id, event_type, occurred_at, data)),
        PayloadFormat::Data => Bytes::copy_from_slice(data.as_bytes()),
    };
    let mut headers: Vec<(String, String)> = vec![
        ("content-type".into(), "application/json".into()),
        ("user-agent".into(), user_agent.to_owned()),
    ];
    match webhook.spec.signing.scheme {
        SigningScheme::Standard => {
            headers.push(("webhook-id".into(), event_id.to_owned()));
            headers.push(("webhook-timestamp".into(), now_secs.to_string()));
            // During a rotation's grace period the old secret signs too, so receivers holding
            // either secret verify.
            let signatures: Vec<String> = webhook
                .signing_secrets(now_secs * 1000)
                .into_iter()
                .map(|secret| signing::standard_signature(secret, event_id, now_secs, &body))
                .collect();
            headers.push(("webhook-signature".into(), signatures.join(" ")));
            headers.push(("webhook-key-id".into(), signing::key_id(&webhook.secret)));
        }
        SigningScheme::HmacSha256 => {
            headers.push((
                webhook.spec.signing.hmac_header().to_ascii_lowercase(),
                signing::hmac_sha256_signature(&webhook.secret, &body),
            ));
            headers.push(("x-request-id".into(), event_id.to_owned()));
        }
    }
    let mut logged_headers: BTreeMap<String, String> = headers.iter().cloned().collect();
    for (name, value) in &webhook.spec.headers {
        headers.push((name.to_ascii_lowercase(), value.clone()));
        logged_headers.insert(name.to_ascii_lowercase(), REDACTED.to_owned());
    }
    SignedRequest {
        body,
        headers,
        logged_headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::webhook::WebhookState;
    use tidings_core::webhook::{Filters, Signing, WebhookSpec};

    fn webhook(scheme: SigningScheme, format: PayloadFormat) -> Webhook {
        Webhook {
            id: "wh_1".into(),
            workspace_id: "ws_1".into(),
            spec: WebhookSpec {
                name: String::new(),
                description: String::new(),
                url: "https://example.com".into(),
                event_types: vec!["email.sent.v1".into()],
                filters: Filters::default(),
                headers: [("X-Api-Key".to_owned(), "s3cret".to_owned())].into(),
                signing: Signing {
                    scheme,
                    header: None,
                },
                payload_format: format,
                timeout_ms: 10_000,
                retry_schedule: None,
                rate_limit_per_s: None,
            },
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            previous_secret: None,
            state: WebhookState::Active,
            disabled_reason: None,
            health: Default::default(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn header<'a>(request: &'a SignedRequest, name: &str) -> Option<&'a str> {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn envelope_wraps_data_bytes_verbatim_and_signs_them() {
        let hook = webhook(SigningScheme::Standard, PayloadFormat::Envelope);
        let data = r#"{"lead":{"email":"a@example.com"},"n":1.50}"#;
        let request = build_request(
            &hook,
            "evt_1",
            "email.sent.v1",
            1_763_800_000_123,
            data,
            1_763_800_001,
            "Tidings/test",
        );
        let body = std::str::from_utf8(&request.body).expect("utf8");
        assert_eq!(
            body,
            r#"{"id":"evt_1","type":"email.sent.v1","timestamp":"2025-11-22T08:26:40.123Z","data":{"lead":{"email":"a@example.com"},"n":1.50}}"#
        );
        let signature = header(&request, "webhook-signature").expect("signed");
        assert!(signing::verify_standard(
            &hook.secret,
            "evt_1",
            1_763_800_001,
            &request.body,
            signature
        ));
        assert_eq!(header(&request, "webhook-id"), Some("evt_1"));
        assert_eq!(header(&request, "webhook-timestamp"), Some("1763800001"));
        assert_eq!(
            header(&request, "webhook-key-id").map(str::to_owned),
            Some(signing::key_id(&hook.secret))
        );
        assert_eq!(header(&request, "x-api-key"), Some("s3cret"));
        assert_eq!(
            request.logged_headers.get("x-api-key").map(String::as_str),
            Some(REDACTED)
        );
        assert!(request.logged_headers.contains_key("webhook-signature"));
    }

    #[test]
    fn data_format_sends_bare_data_with_hmac_header() {
        let hook = webhook(SigningScheme::HmacSha256, PayloadFormat::Data);
        let data = r#"{"a":1}"#;
        let request = build_request(&hook, "evt_2", "email.sent.v1", 0, data, 5, "Tidings/test");
        assert_eq!(&request.body[..], data.as_bytes());
        let signature = header(&request, "x-tidings-signature").expect("signed");
        assert!(signing::verify_hmac_sha256(
            &hook.secret,
            data.as_bytes(),
            signature
        ));
        assert_eq!(header(&request, "x-request-id"), Some("evt_2"));
        assert_eq!(header(&request, "webhook-signature"), None);
    }

    #[test]
    fn a_rotated_secret_signs_alongside_the_new_one_until_its_grace_ends() {
        let mut hook = webhook(SigningScheme::Standard, PayloadFormat::Envelope);
        let old = "whsec_b2xkIHNlY3JldCBvbGQgc2VjcmV0IG9sZCBzZWNyZXQ=".to_owned();
        hook.previous_secret = Some((old.clone(), 10_000_000));
        let during = build_request(
            &hook,
            "evt_3",
            "email.sent.v1",
            0,
            "{}",
            9_999,
            "Tidings/test",
        );
        let signature = header(&during, "webhook-signature").expect("signed");
        assert_eq!(signature.split(' ').count(), 2, "{signature}");
        assert!(signing::verify_standard(
            &hook.secret,
            "evt_3",
            9_999,
            &during.body,
            signature
        ));
        assert!(signing::verify_standard(
            &old,
            "evt_3",
            9_999,
            &during.body,
            signature
        ));
        assert_eq!(
            header(&during, "webhook-key-id").map(str::to_owned),
            Some(signing::key_id(&hook.secret))
        );

        let after = build_request(
            &hook,
            "evt_3",
            "email.sent.v1",
            0,
            "{}",
            10_000,
            "Tidings/test",
        );
        let signature = header(&after, "webhook-signature").expect("signed");
        assert_eq!(signature.split(' ').count(), 1, "{signature}");
        assert!(!signing::verify_standard(
            &old,
            "evt_3",
            10_000,
            &after.body,
            signature
        ));
    }
}
