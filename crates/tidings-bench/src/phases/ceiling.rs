//! Phase 1, the ceiling: Tidings' own delivery client (`tidings_delivery::DeliveryClient`: pooled
//! reqwest, rustls, keep-alive), in a process of its own, POSTing a signed envelope of the same
//! shape and size to the same receiver, with no Tidings in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use tidings_core::outcome::AttemptResult;
use tidings_delivery::{DeliveryClient, SignedRequest};

use crate::Config;
use crate::receiver::{Receiver, sign};
use crate::report::Report;

/// What one way of running the client measured.
struct Measured {
    ok: u64,
    elapsed: f64,
    /// CPU of the client and the receiver together.
    cpu: Duration,
    /// CPU of the client alone, when it ran in a process of its own.
    client_cpu: Option<Duration>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed
    }

    /// Microseconds of CPU per answered request.
    fn cpu_per_request(&self) -> f64 {
        self.per_request(self.cpu)
    }

    fn per_request(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.ok.max(1) as f64
    }

    /// The CPU per request of the client's process and of the receiver's, when the client ran
    /// in a process of its own.
    fn parts(&self) -> Option<(f64, f64)> {
        self.client_cpu.map(|client| {
            (
                self.per_request(client),
                self.per_request(self.cpu.saturating_sub(client)),
            )
        })
    }
}

/// What the client process reports on its stdout.
#[derive(serde::Serialize, serde::Deserialize)]
struct ClientReport {
    ok: u64,
    seconds: f64,
    cpu_us: u64,
}

/// Runs the phase; returns the ceiling in requests/s.
///
/// The ceiling's client runs in a process of its own, as Tidings' does: in the receiver's process,
/// a request and its answer can be handed over between tasks of one thread without waking another
/// (seen as two modes of that figure, about 30 and 45 µs of CPU per request in consecutive runs),
/// which no separate deliverer can have. That figure is reported too.
pub async fn run(config: &Config, receiver: &Receiver, report: &mut Report) -> anyhow::Result<f64> {
    let (url, secret) = target(receiver);
    let body_len = signed_request(&secret)?.body.len();

    let bar = config.bar(2 * config.ceiling_duration.as_millis() as u64, "ceiling");
    bar.set_message("ms");
    let base = receiver.stats.requests();
    let separate = in_own_process(config, &url, &secret, &bar).await?;
    let served = receiver.stats.requests().saturating_sub(base);
    bar.set_position(config.ceiling_duration.as_millis() as u64);
    let shared = in_bench_process(config, &url, &secret, &bar).await?;
    bar.finish();

    let ceiling = separate.rate();
    report.add(
        "ceiling",
        ceiling,
        "requests/s",
        format!(
            "Tidings' delivery client in a process of its own, {} concurrent, {body_len} B signed body, same receiver, no Tidings",
            config.ceiling_workers,
        ),
    );
    report.add(
        "receiver served",
        served as f64 / separate.elapsed,
        "requests/s",
        "the receiver's own count during the ceiling: its limit on this machine (shares the cores with the client)",
    );
    report.add(
        "ceiling CPU per request",
        separate.cpu_per_request(),
        "µs",
        "CPU time (user + system) of the client's process and the bench's (the receiver) together, per request",
    );
    if let Some((client, receiver)) = separate.parts() {
        // Tidings' CPU per delivery less the client's is what Tidings adds to a raw POST.
        report.add(
            "ceiling CPU per request: client",
            client,
            "µs",
            "the client's process alone",
        );
        report.add(
            "ceiling CPU per request: receiver",
            receiver,
            "µs",
            "the bench's process alone: the receiver",
        );
    }
    report.add(
        "ceiling, client in the receiver's process",
        shared.rate(),
        "requests/s",
        "the same client on the bench's own runtime beside the receiver; not what ratios use",
    );
    report.add(
        "ceiling CPU per request, client in the receiver's process",
        shared.cpu_per_request(),
        "µs",
        "CPU time of the bench process per request",
    );
    Ok(ceiling)
}

/// Measures the ceiling again (the client in its own process) just before an end-to-end phase and
/// reports it as `row`; returns the higher of it and `first`, which that phase's ratios divide by.
///
/// This machine's speed moves within minutes, and the ceiling with it (from 35,000 to 54,000
/// requests/s in one afternoon's runs), so the ceiling measured at the start of the run can be
/// slower than the machine during the phase and flatter the ratio. The higher of the two never
/// does: it is the faster the client and receiver were seen to be in this run.
pub async fn again(
    config: &Config,
    receiver: &Receiver,
    first: f64,
    row: &str,
    report: &mut Report,
) -> anyhow::Result<f64> {
    let (url, secret) = target(receiver);
    let bar = config.bar(config.ceiling_duration.as_millis() as u64, row);
    bar.set_message("ms");
    let measured = in_own_process(config, &url, &secret, &bar).await?;
    bar.finish();
    let rate = measured.rate();
    report.add(
        row,
        rate,
        "requests/s",
        format!(
            "the ceiling measured again just before this phase, at {:.1} µs of CPU per request{}; the phase's ratios divide by the higher of this and the run's first ceiling ({first:.0})",
            measured.cpu_per_request(),
            measured
                .parts()
                .map(|(client, receiver)| format!(
                    " ({client:.1} µs of it the client's process, {receiver:.1} the receiver's)"
                ))
                .unwrap_or_default(),
        ),
    );
    Ok(rate.max(first))
}

/// The receiver's URL for the ceiling's requests and the secret that signs them.
fn target(receiver: &Receiver) -> (String, String) {
    let secret = format!("whsec_{}", BASE64.encode([7u8; 32]));
    let path = "/ceiling";
    receiver.stats.set_secret(path, &secret);
    (receiver.url(path), secret)
}

/// Runs the client as a child process (this executable with `--ceiling-client`).
async fn in_own_process(
    config: &Config,
    url: &str,
    secret: &str,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe().context("finding the bench's own executable")?;
    let own_before = own_cpu();
    let mut child = tokio::process::Command::new(exe)
        .args([
            "--ceiling-client",
            url,
            "--ceiling-secret",
            secret,
            "--ceiling-millis",
            &config.ceiling_duration.as_millis().to_string(),
            "--ceiling-workers",
            &config.ceiling_workers.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the ceiling's client process")?;
    let mut stdout = child.stdout.take().context("the client's stdout")?;
    let mut output = Vec::new();
    with_progress(
        bar,
        0,
        tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut output),
    )
    .await
    .context("reading the client's report")?;
    let status = child
        .wait()
        .await
        .context("waiting for the client process")?;
    let own = own_cpu().saturating_sub(own_before);
    if !status.success() {
        bail!("ceiling: the client process failed ({status})");
    }
    let client: ClientReport =
        serde_json::from_slice(&output).context("reading the client's report")?;
    Ok(Measured {
        ok: client.ok,
        elapsed: client.seconds,
        cpu: own + Duration::from_micros(client.cpu_us),
        client_cpu: Some(Duration::from_micros(client.cpu_us)),
    })
}

/// Runs the client on the bench's own runtime, beside the receiver.
async fn in_bench_process(
    config: &Config,
    url: &str,
    secret: &str,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Measured> {
    let cpu_before = own_cpu();
    let started = Instant::now();
    let offset = config.ceiling_duration.as_millis() as u64;
    let sending = send_for(
        url,
        signed_request(secret)?,
        config.ceiling_duration,
        config.ceiling_workers,
    );
    let ok = with_progress(bar, offset, sending).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = own_cpu().saturating_sub(cpu_before);
    Ok(Measured {
        ok,
        elapsed,
        cpu,
        client_cpu: None,
    })
}

/// CPU time of this process so far.
fn own_cpu() -> Duration {
    crate::cpu::process_cpu(std::process::id()).unwrap_or_default()
}

/// Awaits `work` while moving the bar to `offset` + the milliseconds it has taken.
async fn with_progress<T>(
    bar: &indicatif::ProgressBar,
    offset: u64,
    work: impl std::future::Future<Output = T>,
) -> T {
    let started = Instant::now();
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                bar.set_position(offset + started.elapsed().as_millis() as u64);
            }
        }
    }
}

/// `workers` loops POSTing `request` to `url` until `duration` has passed; returns the requests
/// answered 2xx, and fails if any was not.
async fn send_for(
    url: &str,
    request: SignedRequest,
    duration: Duration,
    workers: usize,
) -> anyhow::Result<u64> {
    let client = DeliveryClient::new(true).map_err(anyhow::Error::msg)?;
    let request = Arc::new(request);
    let url = Arc::new(url.to_owned());
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (client, request, url) = (client.clone(), Arc::clone(&request), Arc::clone(&url));
        let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
        tasks.spawn(async move {
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
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    if failed > 0 || ok == 0 {
        bail!("ceiling: {failed} of {} requests failed", ok + failed);
    }
    Ok(ok)
}

/// The ceiling's client process: sends for `millis` on a runtime of its own, then prints what it
/// measured as JSON on stdout.
pub fn client_main(url: &str, secret: &str, millis: u64, workers: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cpu_before = own_cpu();
    let started = Instant::now();
    let ok = runtime.block_on(send_for(
        url,
        signed_request(secret)?,
        Duration::from_millis(millis),
        workers,
    ))?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = own_cpu().saturating_sub(cpu_before);
    let report = ClientReport {
        ok,
        seconds,
        cpu_us: u64::try_from(cpu.as_micros()).unwrap_or(u64::MAX),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
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
