//! `tidings listen`: a local receiver that verifies signatures and prints each delivery.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};

use crate::verify::{DEFAULT_TOLERANCE_S, header, verify};

/// What the receiver checks.
#[derive(Clone)]
pub struct ListenOptions {
    pub addr: SocketAddr,
    pub secret: Option<String>,
    /// Header carrying an `hmac-sha256` signature, when that scheme is used.
    pub hmac_header: String,
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
            let verdict = options.secret.as_deref().map(|secret| verify(secret, &options.hmac_header, &headers, &body, Some(DEFAULT_TOLERANCE_S)));
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
