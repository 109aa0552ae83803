//! Phase 1, the ceiling: Tidings' own delivery client (`tidings_delivery::DeliveryClient`: pooled
//! reqwest, rustls, keep-alive) POSTing a signed envelope of the same shape and size to the same
//! receiver, with no Tidings in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use tidings_core::outcome::AttemptResult;
use tidings_delivery::{DeliveryClient, SignedRequest};

use crate::Config;
use crate::receiver::{Receiver, sign};
use crate::report::Report;

/// Runs the phase; returns the ceiling in requests/s.
pub async fn run(config: &Config, receiver: &Receiver, report: &mut Report) -> anyhow::Result<f64> {
    let client = DeliveryClient::new(true).map_err(anyhow::Error::msg)?;
    let secret = format!("whsec_{}", BASE64.encode([7u8; 32]));
    let path = "/ceiling";
    receiver.stats.set_secret(path, &secret);
    let request = Arc::new(signed_request(&secret)?);
    let url = Arc::new(receiver.url(path));

    let bar = config.bar(config.ceiling_duration.as_millis() as u64, "ceiling");
    bar.set_message("ms");
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let base = receiver.stats.requests();
    let cpu_before = crate::cpu::process_cpu(std::process::id()).unwrap_or_default();
    let started = Instant::now();
    let deadline = started + config.ceiling_duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.ceiling_workers {
        let (client, request, url) = (client.clone(), Arc::clone(&request), Arc::clone(&url));
        let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
        workers.spawn(async move {
            while Instant::now() < deadline {
                let attempt = client.send(&url, &request, Duration::from_secs(10)).await;
                match attempt.result {
                    AttemptResult::Responded { status, .. } if (200..300).contains(&status) => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    while !workers.is_empty() {
        tokio::select! {
            _ = workers.join_next() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        bar.set_position(started.elapsed().as_millis() as u64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = crate::cpu::process_cpu(std::process::id())
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    bar.finish();
    let ok = ok.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 || ok == 0 {
        bail!("ceiling: {failed} of {} requests failed", ok + failed);
    }
    let served = receiver.stats.requests().saturating_sub(base);
    let ceiling = ok as f64 / elapsed;
    report.add(
        "ceiling",
        ceiling,
        "requests/s",
        format!(
            "Tidings' delivery client, {} concurrent, {} B signed body, same receiver, no Tidings",
            config.ceiling_workers,
            request.body.len()
        ),
    );
    report.add(
        "receiver served",
        served as f64 / elapsed,
        "requests/s",
        "the receiver's own count during the ceiling: its limit on this machine (shares the cores with the client)",
    );
    report.add(
        "ceiling CPU per request",
        cpu.as_secs_f64() * 1e6 / ok.max(1) as f64,
        "µs",
        "CPU time (user + system) of the bench process, client and receiver together, per request",
    );
    Ok(ceiling)
}

/// A request shaped like one of Tidings' deliveries of the bench's event.
fn signed_request(secret: &str) -> anyhow::Result<SignedRequest> {
    let id = "evt_0190f0a0b0c07d8e9f0a1b2c3d4e5f60";
    let timestamp = (crate::receiver::unix_nanos() / 1_000_000_000).to_string();
    // The catalog example Tidings' own phases publish, with the same extra field.
    let mut data = tidings_core::catalog::builtin_type(crate::api::EVENT_TYPE)
        .and_then(|t| t.example.clone())
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(data) = data.as_object_mut() {
        data.insert(
            "bench_sent_at_ns".into(),
            crate::receiver::unix_nanos().into(),
        );
    }
    let body = serde_json::to_vec(&serde_json::json!({
        "id": id, "type": crate::api::EVENT_TYPE, "timestamp": "2026-11-22T06:00:00.000Z", "data": data,
    }))?;
    let signature = BASE64.encode(sign(secret, id, &timestamp, &body).map_err(anyhow::Error::msg)?);
    Ok(SignedRequest {
        body: Bytes::from(body),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (
                "user-agent".into(),
                format!("Tidings/{}", env!("CARGO_PKG_VERSION")),
            ),
            ("webhook-id".into(), id.into()),
            ("webhook-timestamp".into(), timestamp),
            ("webhook-signature".into(), format!("v1,{signature}")),
            ("webhook-key-id".into(), "key_0123456789abcdef".into()),
        ],
        logged_headers: Default::default(),
    })
}
