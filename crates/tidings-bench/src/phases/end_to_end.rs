//! Phase 3, end-to-end: events published in batches through the API and delivered by Tidings to the
//! receiver (one webhook); then phase 8, the storage bytes per delivered event.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Backend, Setup, wait_for_requests};
use crate::Config;
use crate::cpu::CpuMeter;
use crate::receiver::Receiver;
use crate::report::Report;
use crate::tidings_process::TidingsProcess;

/// Publishers of the end-to-end phase, each sending batches.
const PUBLISHERS: usize = 4;

pub async fn run(
    config: &Config,
    tidings: &mut TidingsProcess,
    setup: &Setup,
    receiver: &Receiver,
    ceiling: f64,
    backend: Backend,
    report: &mut Report,
) -> anyhow::Result<()> {
    let ws = setup.api.create_workspace("bench end-to-end").await?;
    let path = "/e2e";
    let webhook = setup
        .api
        .create_webhook(&ws, &receiver.url(path), json!({}))
        .await?;
    receiver.stats.set_secret(path, &webhook.secret);

    let total = config.e2e_events;
    let batch = config.batch_size;
    let bar = config.bar(total as u64, "end-to-end");
    bar.set_message("delivered");
    let base = receiver.stats.requests();
    let next = Arc::new(AtomicUsize::new(0));
    let postgres = match backend {
        Backend::Sqlite => None,
        Backend::Postgres { server } => server,
    };
    let cpu = CpuMeter::start(tidings.pid(), postgres);
    let started = Instant::now();
    let mut publishers = tokio::task::JoinSet::new();
    for _ in 0..PUBLISHERS {
        let (api, events, ws, next) = (
            setup.api.clone(),
            setup.events.clone(),
            ws.clone(),
            Arc::clone(&next),
        );
        publishers.spawn(async move {
            loop {
                let from = next.fetch_add(batch, Ordering::AcqRel);
                if from >= total {
                    return anyhow::Ok(());
                }
                let count = batch.min(total - from);
                api.publish_batch(&ws, events.batch(count, crate::receiver::unix_nanos()))
                    .await?;
            }
        });
    }
    let arrived = wait_for_requests(
        &receiver.stats,
        base + total as u64,
        config.wait_limit,
        tidings,
        &bar,
        base,
    )
    .await?;
    while let Some(done) = publishers.join_next().await {
        done??;
    }
    let [tidings_cpu, bench_cpu, postgres_cpu] = cpu.per_event(total as u64);
    bar.finish();
    let elapsed = arrived.saturating_duration_since(started).as_secs_f64();
    let rate = total as f64 / elapsed;
    report.add(
        &backend.row("end-to-end"),
        rate,
        "deliveries/s",
        format!(
            "{total} events published in batches of {batch} by {PUBLISHERS} clients while delivering; first publish → last arrival"
        ),
    );
    report.add(
        &backend.row("end-to-end / ceiling"),
        100.0 * rate / ceiling,
        "%",
        "target ≥ 50 %",
    );

    report.add(
        &backend.row("end-to-end CPU per delivery: Tidings"),
        tidings_cpu,
        "µs",
        "CPU time (user + system) of the tidings process over the phase / deliveries",
    );
    report.add(
        &backend.row("end-to-end CPU per delivery: bench"),
        bench_cpu,
        "µs",
        "the same for the bench process: its publishers and the receiver",
    );
    if postgres.is_some() {
        report.add(
            &backend.row("end-to-end CPU per delivery: PostgreSQL"),
            postgres_cpu,
            "µs",
            "the same for the PostgreSQL server and its backends",
        );
    }
    if backend != Backend::Sqlite {
        return Ok(());
    }
    // Let the last outcomes be recorded before weighing the files.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bytes = tidings.storage_bytes();
    report.add(
        "storage per delivered event",
        bytes as f64 / total as f64,
        "bytes",
        format!(
            "bench.db + bench.db-wal ({:.1} MiB) after the end-to-end phase / deliveries",
            bytes as f64 / 1_048_576.0
        ),
    );
    Ok(())
}
