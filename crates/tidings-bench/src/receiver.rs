//! The bench's receiver: a small hyper HTTP/1.1 keep-alive server on 127.0.0.1 that counts requests,
//! notes when each arrived, measures publish→received latency when asked, and verifies the Standard
//! Webhooks signature of every 100th request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hdrhistogram::Histogram;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Every how many requests the signature is checked.
pub const VERIFY_EVERY: u64 = 100;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 at once.
    Ok,
    /// Never answers: holds the request until the client gives up.
    Hang,
}

/// What the receiver saw, shared with the phases.
pub struct Stats {
    started: Instant,
    requests: AtomicU64,
    /// Nanoseconds after `started` of the latest arrival.
    last_arrival_ns: AtomicU64,
    verified: AtomicU64,
    verify_failures: AtomicU64,
    measure_latency: AtomicBool,
    /// Publish→received latency in microseconds.
    latency_us: Mutex<Histogram<u64>>,
    /// Signing secrets by request path.
    secrets: RwLock<HashMap<String, String>>,
    last_failure: Mutex<Option<String>>,
}

impl Stats {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            last_arrival_ns: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            verify_failures: AtomicU64::new(0),
            measure_latency: AtomicBool::new(false),
            latency_us: Mutex::new(new_histogram()),
            secrets: RwLock::new(HashMap::new()),
            last_failure: Mutex::new(None),
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// When the latest request arrived.
    pub fn last_arrival(&self) -> Instant {
        self.started + Duration::from_nanos(self.last_arrival_ns.load(Ordering::Acquire))
    }

    pub fn verified(&self) -> u64 {
        self.verified.load(Ordering::Acquire)
    }

    pub fn verify_failures(&self) -> u64 {
        self.verify_failures.load(Ordering::Acquire)
    }

    pub fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().ok().and_then(|f| f.clone())
    }

    /// The secret that signs requests to `path`.
    pub fn set_secret(&self, path: &str, secret: &str) {
        if let Ok(mut secrets) = self.secrets.write() {
            secrets.insert(path.to_owned(), secret.to_owned());
        }
    }

    /// Starts measuring latency from the `bench_sent_at_ns` field of each body, with an empty histogram.
    pub fn start_latency(&self) {
        if let Ok(mut histogram) = self.latency_us.lock() {
            histogram.reset();
        }
        self.measure_latency.store(true, Ordering::Release);
    }

    /// Stops measuring and returns what was measured.
    pub fn take_latency(&self) -> Histogram<u64> {
        self.measure_latency.store(false, Ordering::Release);
        match self.latency_us.lock() {
            Ok(mut histogram) => std::mem::replace(&mut *histogram, new_histogram()),
            Err(_) => new_histogram(),
        }
    }

    fn on_request(&self, path: &str, headers: &http::HeaderMap, body: &[u8]) {
        let n = self.requests.fetch_add(1, Ordering::AcqRel) + 1;
        let at = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_arrival_ns.fetch_max(at, Ordering::AcqRel);
        if self.measure_latency.load(Ordering::Acquire)
            && let Some(sent) = sent_at_ns(body)
        {
            let now = unix_nanos();
            let micros = now.saturating_sub(sent) / 1000;
            if let Ok(mut histogram) = self.latency_us.lock() {
                histogram.saturating_record(micros.max(1));
            }
        }
        if n % VERIFY_EVERY == 1 {
            let secret = self
                .secrets
                .read()
                .ok()
                .and_then(|secrets| secrets.get(path).cloned());
            match secret {
                Some(secret) => match verify_standard(&secret, headers, body) {
                    Ok(()) => {
                        self.verified.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(reason) => self.fail(format!("{path}: {reason}")),
                },
                None => self.fail(format!("{path}: no secret known for this path")),
            }
        }
    }

    fn fail(&self, reason: String) {
        self.verify_failures.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut last) = self.last_failure.lock() {
            *last = Some(reason);
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 1 hour at 3 significant figures; cannot fail with these bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Unix time in nanoseconds.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The number after `"bench_sent_at_ns":` in a body, without parsing the JSON.
fn sent_at_ns(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"bench_sent_at_ns\":";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: Vec<u8> = body[start..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Standard Webhooks: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed with the base64-decoded
/// part after `whsec_`. Written here independently of the product's signing code.
pub fn verify_standard(secret: &str, headers: &http::HeaderMap, body: &[u8]) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("{name} is missing"))
    };
    let id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?;
    let signatures = header("webhook-signature")?;
    let expected = BASE64.encode(sign(secret, id, timestamp, body)?);
    if signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
    {
        Ok(())
    } else {
        Err("webhook-signature does not match".into())
    }
}

/// The raw HMAC of a Standard Webhooks signature.
pub fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let key = secret
        .strip_prefix("whsec_")
        .ok_or("the secret does not start with whsec_")?;
    let key = BASE64
        .decode(key)
        .map_err(|e| format!("the secret is not base64: {e}"))?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
        .map_err(|e| format!("bad HMAC key: {e}"))?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// A running receiver; dropping it stops it (listener and every open connection).
pub struct Receiver {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    tasks: JoinSet<()>,
}

impl Receiver {
    /// Listens on 127.0.0.1 (`port` 0 for any free one).
    pub async fn start(port: u16, mode: Mode) -> anyhow::Result<Self> {
        Self::start_with(port, mode, Arc::new(Stats::new())).await
    }

    /// Like `start`, keeping counts in `stats` (to restart a receiver that was down).
    pub async fn start_with(port: u16, mode: Mode, stats: Arc<Stats>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let addr = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        let shared = Arc::clone(&stats);
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors or similar: let connections finish before accepting more.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let stats = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let stats = Arc::clone(&stats);
                        async move { handle(request, mode, stats).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self { addr, stats, tasks })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops listening and closes every connection: the receiver is down (connection refused).
    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn handle(
    request: Request<Incoming>,
    mode: Mode,
    stats: Arc<Stats>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if mode == Mode::Hang {
        std::future::pending::<()>().await;
    }
    stats.on_request(parts.uri.path(), &parts.headers, &body);
    Ok(Response::new(Full::new(Bytes::new())))
}

/// A free port on 127.0.0.1, for a receiver that starts later (down until then).
pub fn reserve_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_send_time_in_a_body() {
        assert_eq!(
            sent_at_ns(br#"{"data":{"a":1,"bench_sent_at_ns": 12345}}"#),
            Some(12345)
        );
        assert_eq!(sent_at_ns(b"{}"), None);
    }

    #[test]
    fn verifies_the_standard_webhooks_reference_vector() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "webhook-id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        headers.insert(
            "webhook-timestamp",
            "1614265330".parse().unwrap_or_else(|_| unreachable!()),
        );
        headers.insert(
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert_eq!(
            verify_standard(secret, &headers, br#"{"test": 2432232314}"#),
            Ok(())
        );
        assert!(verify_standard(secret, &headers, b"{}").is_err());
    }
}
