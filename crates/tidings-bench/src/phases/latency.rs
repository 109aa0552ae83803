//! Phase 4, latency: single publishes at a fixed offered load (open loop), publish → received at the
//! receiver, from the send time carried in the event's data.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use super::{Backend, Setup, flush_dirty_pages, offered_load, quantile_ms, wait_for_requests};
use crate::Config;
use crate::receiver::Receiver;
use crate::report::Report;
use crate::tidings_process::TidingsProcess;

pub async fn run(
    config: &Config,
    tidings: &mut TidingsProcess,
    setup: &Setup,
    receiver: &Receiver,
    backend: Backend,
    report: &mut Report,
) -> anyhow::Result<()> {
    let ws = setup.api.create_workspace("bench latency").await?;
    let path = "/latency";
    let webhook = setup
        .api
        .create_webhook(&ws, &receiver.url(path), json!({}))
        .await?;
    receiver.stats.set_secret(path, &webhook.secret);

    let rate = config.latency_rate;
    // The first second of a new process on a new database is not the service running: the pool's
    // connections are opened and their statements prepared, and on PostgreSQL the empty tables'
    // first pages are added under a lock every insert waits on. It is published at the same rate
    // first, and its worst latency reported on a row of its own.
    let (_, warm_up) = measure(
        config,
        setup,
        &ws,
        receiver,
        tidings,
        config.latency_warm_up,
        "latency warm-up",
    )
    .await?;

    flush_dirty_pages().await?;
    let (sent, histogram) = measure(
        config,
        setup,
        &ws,
        receiver,
        tidings,
        config.latency_duration,
        "latency",
    )
    .await?;
    let note = format!(
        "{sent} single publishes at {rate}/s over {} s to one webhook, publish → received",
        config.latency_duration.as_secs()
    );
    report.add(
        &backend.row("latency p50"),
        quantile_ms(&histogram, 0.5),
        "ms",
        note,
    );
    report.add(
        &backend.row("latency p99"),
        quantile_ms(&histogram, 0.99),
        "ms",
        "target ≤ 25 ms",
    );
    report.add(
        &backend.row("latency p999"),
        quantile_ms(&histogram, 0.999),
        "ms",
        "",
    );
    report.add(
        &backend.row("latency warm-up max"),
        quantile_ms(&warm_up, 1.0),
        "ms",
        format!(
            "the {} s published at the same rate before the rows above, from the process's start",
            config.latency_warm_up.as_secs_f64()
        ),
    );
    Ok(())
}

/// Publishes to the phase's webhook at its rate for `duration` and waits until every event
/// arrived; returns how many were sent and their publish → received latencies.
async fn measure(
    config: &Config,
    setup: &Setup,
    ws: &str,
    receiver: &Receiver,
    tidings: &mut TidingsProcess,
    duration: Duration,
    phase: &str,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let rate = config.latency_rate;
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let bar = config.bar(total, phase);
    bar.set_message("published");
    let base = receiver.stats.requests();
    receiver.stats.start_latency();
    let sent = offered_load(setup, ws, rate, duration, None, &bar).await?;
    bar.set_message("delivered");
    wait_for_requests(
        &receiver.stats,
        base + sent,
        config.wait_limit,
        tidings,
        &bar,
        base,
    )
    .await?;
    bar.finish();
    Ok((sent, receiver.stats.take_latency()))
}
