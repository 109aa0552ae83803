//! Phase 7, backlog: many pending deliveries for one paused webhook whose receiver is down, then the
//! receiver comes up and the webhook is resumed: drain rate and the Tidings process' peak RSS.
//!
//! The webhook is paused while publishing so no attempt fails (a failed attempt would wait 60 s for
//! its retry); its receiver is not started until then either, so its port refuses connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::json;

use super::{Setup, wait_for_requests};
use crate::Config;
use crate::receiver::{Mode, Receiver, reserve_port};
use crate::report::Report;
use crate::tidings_process::TidingsProcess;

/// Publishers sending batches into the backlog.
const PUBLISHERS: usize = 2;

pub async fn run(
    config: &Config,
    tidings: &mut TidingsProcess,
    setup: &Setup,
    report: &mut Report,
) -> anyhow::Result<()> {
    let ws = setup.api.create_workspace("bench backlog").await?;
    let port = reserve_port()?;
    let path = "/backlog";
    let url = format!("http://127.0.0.1:{port}{path}");
    let webhook = setup
        .api
        .create_webhook(&ws, &url, json!({ "state": "paused" }))
        .await?;

    let total = config.backlog_events;
    let batch = config.backlog_batch;
    let bar = config.bar(total as u64, "backlog");
    bar.set_message("published (receiver down)");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut publishers = tokio::task::JoinSet::new();
    for _ in 0..PUBLISHERS {
        let (api, events, ws, next, bar) = (
            setup.api.clone(),
            setup.events.clone(),
            ws.clone(),
            Arc::clone(&next),
            bar.clone(),
        );
        publishers.spawn(async move {
            loop {
                let from = next.fetch_add(batch, Ordering::AcqRel);
                if from >= total {
                    return anyhow::Ok(());
                }
                let count = batch.min(total - from);
                let body = events.batch(count, crate::receiver::unix_nanos());
                api.publish_batch(&ws, body).await?;
                bar.inc(count as u64);
            }
        });
    }
    while let Some(done) = publishers.join_next().await {
        done??;
    }
    let published_in = started.elapsed().as_secs_f64();
    bar.finish();
    let rss_pending = tidings.rss_bytes()?;
    let bytes_pending = tidings.storage_bytes();

    let receiver = Receiver::start(port, Mode::Ok).await?;
    receiver.stats.set_secret(path, &webhook.secret);
    let bar = config.bar(total as u64, "drain");
    bar.set_message("delivered");
    let resumed = Instant::now();
    setup
        .api
        .patch_webhook(&ws, &webhook.id, &json!({ "state": "active" }))
        .await?;
    // A drain that outlasts the limit still yields a rate: what arrived by then.
    let (delivered, drained_in, drain_note) = match wait_for_requests(
        &receiver.stats,
        total as u64,
        config.wait_limit,
        tidings,
        &bar,
        0,
    )
    .await
    {
        Ok(arrived) => (
            total as u64,
            arrived.saturating_duration_since(resumed).as_secs_f64(),
            "resume → last of the backlog at the receiver".to_owned(),
        ),
        Err(error) => {
            tidings.check_alive()?;
            let delivered = receiver.stats.requests();
            anyhow::ensure!(delivered > 0, "backlog: nothing drained: {error}");
            (
                delivered,
                receiver
                    .stats
                    .last_arrival()
                    .saturating_duration_since(resumed)
                    .as_secs_f64(),
                format!(
                    "stopped at the {} s limit: {delivered} of {total} delivered",
                    config.wait_limit.as_secs()
                ),
            )
        }
    };
    bar.finish();
    let peak = tidings.peak_rss_bytes()?;
    let failures = receiver.stats.verify_failures();
    anyhow::ensure!(
        failures == 0,
        "backlog: {failures} signature failures at the receiver: {:?}",
        receiver.stats.last_failure()
    );
    receiver.stop();

    let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
    report.add(
        "backlog publish",
        total as f64 / published_in,
        "events/s",
        format!("{total} events in batches of {batch} by {PUBLISHERS} clients, webhook paused"),
    );
    report.add(
        "backlog RSS with all pending",
        mib(rss_pending),
        "MiB",
        format!(
            "{total} pending deliveries; database {:.0} MiB on disk",
            mib(bytes_pending)
        ),
    );
    report.add(
        "backlog drain",
        delivered as f64 / drained_in,
        "deliveries/s",
        drain_note,
    );
    report.add(
        "backlog peak RSS",
        mib(peak),
        "MiB",
        "VmHWM of the tidings process over publish and drain; target ≤ 250 MB",
    );
    Ok(())
}
