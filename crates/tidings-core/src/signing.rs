//! Signing secrets and the two signature schemes a receiver can verify.
//!
//! `standard` follows Standard Webhooks 1.0: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//! keyed with the base64-decoded part of a `whsec_` secret. `hmac-sha256` is the older sales-platform
//! convention: `sha256=<hex HMAC-SHA256 of the body>` keyed with the secret string's UTF-8 bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` followed by base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", BASE64.encode(bytes))
}

/// The key id that names a secret in `webhook-key-id`: derived from it, so it needs no storage and
/// reveals nothing usable about the secret.
pub fn key_id(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut id = String::with_capacity(4 + 16);
    id.push_str("key_");
    push_hex(&mut id, &digest[..8]);
    id
}

/// Appends `bytes` as lowercase hex digits.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
}

/// The HMAC key bytes of a `standard` secret (the decoded base64 after `whsec_`); a secret that is not
/// in that form is used as raw bytes, as the reference libraries do.
fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|encoded| BASE64.decode(encoded).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// One `v1,<signature>` entry of `webhook-signature`.
pub fn standard_signature(secret: &str, message_id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let digest = hmac(
        &standard_key(secret),
        &[
            message_id.as_bytes(),
            b".",
            timestamp.as_bytes(),
            b".",
            body,
        ],
    );
    format!("v1,{}", BASE64.encode(digest))
}

/// The `sha256=<hex>` value of the `hmac-sha256` scheme.
pub fn hmac_sha256_signature(secret: &str, body: &[u8]) -> String {
    let digest = hmac(secret.as_bytes(), &[body]);
    let mut value = String::with_capacity(7 + 64);
    value.push_str("sha256=");
    push_hex(&mut value, &digest);
    value
}

/// Checks a `webhook-signature` header value (space-separated `v1,...` entries) against a secret, in
/// constant time per entry.
pub fn verify_standard(
    secret: &str,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let expected = standard_signature(secret, message_id, timestamp, body);
    header
        .split(' ')
        .any(|candidate| bool::from(candidate.as_bytes().ct_eq(expected.as_bytes())))
}

/// Checks an `hmac-sha256` header value in constant time.
pub fn verify_hmac_sha256(secret: &str, body: &[u8], header: &str) -> bool {
    let expected = hmac_sha256_signature(secret, body);
    bool::from(header.trim().as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_signature_matches_the_standard_webhooks_reference_vector() {
        // The test vector published with the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let timestamp = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            standard_signature(secret, id, timestamp, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(verify_standard(
            secret,
            id,
            timestamp,
            body,
            "v1,bogus v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
        assert!(!verify_standard(
            secret,
            id,
            timestamp + 1,
            body,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
    }

    #[test]
    fn hmac_sha256_is_keyed_with_the_secret_string_bytes() {
        // Computed with Python: hmac.new(b"whsec_abc", b'{"a":1}', hashlib.sha256).hexdigest()
        let value = hmac_sha256_signature("whsec_abc", br#"{"a":1}"#);
        assert_eq!(
            value,
            "sha256=359ab2775fc376b1a8dee20a432572581b7d5b4e2c3a4e3ff657ed6713fa7eeb"
        );
        assert!(verify_hmac_sha256("whsec_abc", br#"{"a":1}"#, &value));
        assert!(!verify_hmac_sha256("whsec_abd", br#"{"a":1}"#, &value));
    }

    #[test]
    fn generated_secrets_have_the_whsec_form_and_distinct_key_ids() {
        let first = generate_secret();
        let second = generate_secret();
        assert!(first.starts_with("whsec_"));
        assert_eq!(BASE64.decode(&first[6..]).map(|b| b.len()).ok(), Some(32));
        assert_ne!(first, second);
        assert_ne!(key_id(&first), key_id(&second));
        assert_eq!(key_id(&first), key_id(&first));
        assert_eq!(key_id(&first).len(), 4 + 16);
    }

    #[test]
    fn a_key_id_is_the_first_8_bytes_of_the_secrets_sha256_in_hex() {
        assert_eq!(
            key_id("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "key_96ad2ccd81462a76"
        );
    }
}
