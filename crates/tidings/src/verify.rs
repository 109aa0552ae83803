//! Checking a delivery's signature: what `tidings listen` does to each request, and `tidings verify`
//! to one captured delivery.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use tidings_core::signing::{verify_hmac_sha256, verify_standard};

/// How far a Standard Webhooks timestamp may be from now, as the official libraries allow.
pub const DEFAULT_TOLERANCE_S: u32 = 300;

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks a request's signature: `Ok(scheme)` when it verifies, `Err(reason)` otherwise. A
/// Standard Webhooks timestamp further than `tolerance_s` from now fails; `None` accepts any
/// (for a delivery captured earlier).
pub fn verify(
    secret: &str,
    hmac_header: &str,
    headers: &HeaderMap,
    body: &[u8],
    tolerance_s: Option<u32>,
) -> Result<&'static str, String> {
    if let Some(signature) = header(headers, "webhook-signature") {
        let id = header(headers, "webhook-id").ok_or("webhook-id is missing")?;
        let timestamp: i64 = header(headers, "webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .ok_or("webhook-timestamp is missing or not a number")?;
        let age = (tidings_core::now_millis() / 1000 - timestamp).abs();
        if let Some(tolerance) = tolerance_s.filter(|&t| age > i64::from(t)) {
            return Err(format!(
                "webhook-timestamp is {age} s away from now (more than {tolerance} s)"
            ));
        }
        return if verify_standard(secret, id, timestamp, body, signature) {
            Ok("standard")
        } else {
            Err("webhook-signature does not match".into())
        };
    }
    match header(headers, hmac_header) {
        Some(signature) if verify_hmac_sha256(secret, body, signature) => Ok("hmac-sha256"),
        Some(_) => Err(format!("{hmac_header} does not match")),
        None => Err(format!(
            "the request carries no signature (neither webhook-signature nor {hmac_header})"
        )),
    }
}

/// What `tidings verify` checks.
#[derive(clap::Args)]
pub struct VerifyOptions {
    /// The webhook's signing secret (whsec_...).
    #[arg(long, env = "TIDINGS_VERIFY_SECRET", hide_env_values = true)]
    pub secret: String,
    /// A request header, `Name: value`, as the receiver logged it; repeat for each
    /// (webhook-id, webhook-timestamp, webhook-signature, or the hmac-sha256 header).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Header of `hmac-sha256` signatures.
    #[arg(long, default_value = "x-tidings-signature")]
    pub hmac_header: String,
    /// Seconds webhook-timestamp may be from now; 0 accepts any (a delivery captured earlier).
    #[arg(long, default_value_t = DEFAULT_TOLERANCE_S)]
    pub tolerance: u32,
    /// The body exactly as received: a file, or - (the default) for stdin.
    pub body: Option<std::path::PathBuf>,
}

/// Verifies one delivery; `Ok(scheme)` when its signature holds.
pub fn run(options: &VerifyOptions) -> anyhow::Result<&'static str> {
    if !options.secret.starts_with("whsec_") {
        anyhow::bail!("the secret must be the webhook's signing secret (whsec_...)");
    }
    let mut headers = HeaderMap::new();
    for line in &options.headers {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--header `{line}` is not `Name: value`"))?;
        let name = HeaderName::try_from(name.trim()).map_err(|_| {
            anyhow::anyhow!("--header `{line}`: `{}` is not a header name", name.trim())
        })?;
        let value = HeaderValue::try_from(value.trim())
            .map_err(|_| anyhow::anyhow!("--header `{line}`: the value is not a header value"))?;
        headers.append(name, value);
    }
    let body = match options.body.as_deref() {
        Some(path) if path.as_os_str() != "-" => std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        _ => {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                .map_err(|e| anyhow::anyhow!("cannot read the body from stdin: {e}"))?;
            body
        }
    };
    verify(
        &options.secret,
        &options.hmac_header.to_ascii_lowercase(),
        &headers,
        &body,
        (options.tolerance > 0).then_some(options.tolerance),
    )
    .map_err(|reason| anyhow::anyhow!("not verified: {reason}"))
}
