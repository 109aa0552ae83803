//! The HTTP client that makes attempts: pooled keep-alive connections per host, no redirects, no
//! proxies, the SSRF guard in its resolver, and a hard deadline per attempt.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_core::outcome::{AttemptResult, ErrorKind, parse_retry_after};

use crate::request::SignedRequest;
use crate::ssrf::{BlockedTarget, GuardedResolver, ResolveFailed, check_literal};

/// How much of a response body is kept for the log.
pub const EXCERPT_BYTES: usize = 4096;
const MAX_LOGGED_RESPONSE_HEADERS: usize = 50;
const MAX_LOGGED_HEADER_VALUE: usize = 512;

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub result: AttemptResult,
    pub duration: Duration,
    pub error_message: Option<String>,
    pub response_excerpt: Option<String>,
    pub response_headers: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct DeliveryClient {
    http: reqwest::Client,
    allow_private: bool,
}

impl DeliveryClient {
    pub fn new(allow_private: bool) -> Result<Self, String> {
        // Several crates may race to install the process-wide TLS provider; any installed one will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the delivery HTTP client: {e}"))?;
        Ok(Self {
            http,
            allow_private,
        })
    }

    /// Sends one attempt and classifies what happened. Never fails: every failure is an outcome.
    pub async fn send(
        &self,
        url: &str,
        request: &SignedRequest,
        timeout: Duration,
    ) -> AttemptReport {
        let started = Instant::now();
        let failed = |kind: ErrorKind, message: String| AttemptReport {
            result: AttemptResult::Failed(kind),
            duration: started.elapsed(),
            error_message: Some(message),
            response_excerpt: None,
            response_headers: BTreeMap::new(),
        };
        let parsed = match url::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(e) => {
                return failed(
                    ErrorKind::Other,
                    format!("the webhook URL is not valid: {e}"),
                );
            }
        };
        if let Err(blocked) = check_literal(&parsed, self.allow_private) {
            return failed(ErrorKind::SsrfBlocked, blocked.to_string());
        }
        let mut builder = self.http.post(parsed).body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let exchange = async {
            let response = builder.send().await?;
            let status = response.status().as_u16();
            let now_secs = tidings_core::now_millis() / 1000;
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now_secs));
            let headers = response
                .headers()
                .iter()
                .take(MAX_LOGGED_RESPONSE_HEADERS)
                .map(|(name, value)| {
                    let mut value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    value.truncate(value.floor_char_boundary(MAX_LOGGED_HEADER_VALUE));
                    (name.as_str().to_owned(), value)
                })
                .collect::<BTreeMap<_, _>>();
            // Read at most the excerpt; the rest is never buffered.
            let mut response = response;
            let mut excerpt = Vec::new();
            while excerpt.len() < EXCERPT_BYTES {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = EXCERPT_BYTES - excerpt.len();
                        excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            Ok::<_, reqwest::Error>((status, retry_after, headers, excerpt))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => failed(
                ErrorKind::Timeout,
                format!("no response within {} ms", timeout.as_millis()),
            ),
            Ok(Err(error)) => {
                let (kind, message) = classify(&error);
                failed(kind, message)
            }
            Ok(Ok((status, retry_after, headers, excerpt))) => AttemptReport {
                result: AttemptResult::Responded {
                    status,
                    retry_after_secs: retry_after,
                },
                duration: started.elapsed(),
                error_message: None,
                response_excerpt: (!excerpt.is_empty())
                    .then(|| String::from_utf8_lossy(&excerpt).into_owned()),
                response_headers: headers,
            },
        }
    }
}

/// Names the cause of a transport error from the error chain.
fn classify(error: &reqwest::Error) -> (ErrorKind, String) {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<BlockedTarget>() {
            return (ErrorKind::SsrfBlocked, blocked.to_string());
        }
        if let Some(failed) = cause.downcast_ref::<ResolveFailed>() {
            return (ErrorKind::Dns, failed.to_string());
        }
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return (ErrorKind::Tls, format!("TLS handshake failed: {tls}"));
        }
        source = cause.source();
    }
    let chain = {
        let mut text = error.to_string();
        let mut cause = error.source();
        while let Some(inner) = cause {
            text.push_str(": ");
            text.push_str(&inner.to_string());
            cause = inner.source();
        }
        text
    };
    if error.is_timeout() {
        (ErrorKind::Timeout, chain)
    } else if error.is_connect() {
        (ErrorKind::Connect, chain)
    } else {
        (ErrorKind::Other, chain)
    }
}
