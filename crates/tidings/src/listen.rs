//! `tidings listen`: a local receiver that verifies signatures and prints each delivery.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use tidings_core::signing::{verify_hmac_sha256, verify_standard};

/// What the receiver checks.
#[derive(Clone)]
pub struct ListenOptions {
    pub addr: SocketAddr,
    pub secret: Option<String>,
    /// Header carrying an `hmac-sha256` signature, when that scheme is used.
    pub hmac_header: String,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks a request's signature: `Ok(scheme)` when it verifies, `Err(reason)` otherwise.
pub fn verify(
    secret: &str,
    hmac_header: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<&'static str, String> {
    if let Some(signature) = header(headers, "webhook-signature") {
        let id = header(headers, "webhook-id").ok_or("webhook-id is missing")?;
        let timestamp: i64 = header(headers, "webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .ok_or("webhook-timestamp is missing or not a number")?;
        let age = (tidings_core::now_millis() / 1000 - timestamp).abs();
        if age > 300 {
            return Err(format!("webhook-timestamp is {age} s away from now"));
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
        None => Err("the request carries no signature".into()),
    }
}

/// Serves until interrupted, printing one JSON line per delivery on stdout.
pub async fn run(options: ListenOptions) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.addr))?;
    eprintln!(
        "listening on http://{} (POST any path); Ctrl-C stops",
        listener.local_addr()?
    );
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let options = options.clone();
        async move {
            let verdict = options.secret.as_deref().map(|secret| verify(secret, &options.hmac_header, &headers, &body));
            let payload: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
            let line = serde_json::json!({
                "webhook_id": header(&headers, "webhook-id").or_else(|| header(&headers, "x-request-id")),
                "verified": verdict.as_ref().map(|v| v.is_ok()),
                "problem": verdict.as_ref().and_then(|v| v.as_ref().err()),
                "body": payload,
            });
            println!("{line}");
            match verdict {
                Some(Err(_)) => StatusCode::BAD_REQUEST,
                _ => StatusCode::NO_CONTENT,
            }
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
