//! Phase 5, fan-out: one event to many webhooks: time to 202 and time until every delivery arrived.

use std::time::Instant;

use serde_json::json;

use super::{Setup, for_each_concurrent, wait_for_requests};
use crate::Config;
use crate::receiver::Receiver;
use crate::report::Report;
use crate::tidings_process::TidingsProcess;

pub async fn run(
    config: &Config,
    tidings: &mut TidingsProcess,
    setup: &Setup,
    receiver: &Receiver,
    report: &mut Report,
) -> anyhow::Result<()> {
    let ws = setup.api.create_workspace("bench fan-out").await?;
    let count = config.fanout_webhooks;
    let bar = config.bar(count as u64, "fan-out");
    bar.set_message("webhooks created");
    for_each_concurrent(count, 16, |i| {
        let (api, ws, bar) = (setup.api.clone(), ws.clone(), bar.clone());
        let path = format!("/fan/{i}");
        let url = receiver.url(&path);
        let stats = std::sync::Arc::clone(&receiver.stats);
        async move {
            let webhook = api.create_webhook(&ws, &url, json!({})).await?;
            stats.set_secret(&path, &webhook.secret);
            bar.inc(1);
            anyhow::Ok(())
        }
    })
    .await?;

    bar.reset();
    bar.set_message("delivered");
    let base = receiver.stats.requests();
    let started = Instant::now();
    let deliveries = setup
        .api
        .publish(
            &ws,
            setup.events.single(crate::receiver::unix_nanos(), None),
        )
        .await?;
    let accepted = started.elapsed();
    anyhow::ensure!(
        deliveries == count,
        "fan-out: the event made {deliveries} deliveries, not {count}"
    );
    let arrived = wait_for_requests(
        &receiver.stats,
        base + count as u64,
        config.wait_limit,
        tidings,
        &bar,
        base,
    )
    .await?;
    bar.finish();
    report.add(
        "fan-out accepted",
        accepted.as_secs_f64() * 1000.0,
        "ms",
        format!(
            "one event to {count} webhooks: publish → 202 (event and {count} deliveries committed)"
        ),
    );
    report.add(
        "fan-out all delivered",
        arrived.saturating_duration_since(started).as_secs_f64() * 1000.0,
        "ms",
        format!("publish → the last of the {count} deliveries at the receiver"),
    );
    Ok(())
}
