//! Phase 6, isolation: many webhooks, each receiving its own campaign's events, at a modest offered
//! load. First all healthy, then with every 10th webhook pointed at a receiver that never answers
//! (timeout 1 s): the healthy webhooks' p99 in both runs, and the ratio.

use std::sync::Arc;

use serde_json::json;

use super::{
    Setup, flush_dirty_pages, for_each_concurrent, offered_load, quantile_ms, wait_for_requests,
};
use crate::Config;
use crate::receiver::Receiver;
use crate::report::Report;
use crate::tidings_process::TidingsProcess;

pub async fn run(
    config: &Config,
    tidings: &mut TidingsProcess,
    setup: &Setup,
    healthy: &Receiver,
    hanging: &Receiver,
    report: &mut Report,
) -> anyhow::Result<()> {
    let ws = setup.api.create_workspace("bench isolation").await?;
    let count = config.isolation_webhooks;
    let bar = config.bar(count as u64, "isolation");
    bar.set_message("webhooks created");
    let ids = for_each_concurrent(count, 16, |i| {
        let (api, ws, bar) = (setup.api.clone(), ws.clone(), bar.clone());
        let path = format!("/iso/{i}");
        let url = healthy.url(&path);
        let stats = Arc::clone(&healthy.stats);
        async move {
            let webhook = api
                .create_webhook(
                    &ws,
                    &url,
                    json!({ "timeout_ms": 1000, "filters": { "campaign_ids": [campaign(i)] } }),
                )
                .await?;
            stats.set_secret(&path, &webhook.secret);
            bar.inc(1);
            anyhow::Ok(webhook.id)
        }
    })
    .await?;
    bar.finish_and_clear();

    let campaigns: Arc<dyn Fn(u64) -> String + Send + Sync> =
        Arc::new(move |n| campaign((n % count as u64) as usize));
    let all_healthy = measure(
        config,
        tidings,
        setup,
        &ws,
        healthy,
        &campaigns,
        "all healthy",
        |_| true,
    )
    .await?;

    for (i, id) in ids.iter().enumerate().filter(|(i, _)| is_timing_out(*i)) {
        setup
            .api
            .patch_webhook(
                &ws,
                id,
                &json!({ "url": hanging.url(&format!("/hang/{i}")) }),
            )
            .await?;
    }
    let with_timeouts = measure(
        config,
        tidings,
        setup,
        &ws,
        healthy,
        &campaigns,
        "10% time out",
        |n| !is_timing_out((n % count as u64) as usize),
    )
    .await?;

    let note = format!(
        "{count} webhooks, one campaign each, {}/s over {} s",
        config.isolation_rate,
        config.isolation_duration.as_secs()
    );
    report.add("isolation p99, all healthy", all_healthy, "ms", note);
    report.add(
        "isolation p99, 10% time out",
        with_timeouts,
        "ms",
        "healthy webhooks' p99 while every 10th webhook never answers (timeout 1 s)",
    );
    report.add(
        "isolation p99 ratio",
        with_timeouts / all_healthy,
        "x",
        "target ≤ 2",
    );
    Ok(())
}

fn campaign(i: usize) -> String {
    format!("cmp_bench_{i}")
}

fn is_timing_out(i: usize) -> bool {
    i.is_multiple_of(10)
}

/// One run at the phase's offered load; the p99 of the healthy deliveries in ms.
#[allow(clippy::too_many_arguments)]
async fn measure(
    config: &Config,
    tidings: &mut TidingsProcess,
    setup: &Setup,
    ws: &str,
    healthy: &Receiver,
    campaigns: &Arc<dyn Fn(u64) -> String + Send + Sync>,
    label: &str,
    counts_as_healthy: impl Fn(u64) -> bool,
) -> anyhow::Result<f64> {
    flush_dirty_pages().await?;
    let total =
        (f64::from(config.isolation_rate) * config.isolation_duration.as_secs_f64()).round() as u64;
    let bar = config.bar(total, "isolation");
    bar.set_message(format!("{label}: published"));
    let base = healthy.stats.requests();
    healthy.stats.start_latency();
    let sent = offered_load(
        setup,
        ws,
        config.isolation_rate,
        config.isolation_duration,
        Some(Arc::clone(campaigns)),
        &bar,
    )
    .await?;
    let expected = (0..sent).filter(|n| counts_as_healthy(*n)).count() as u64;
    bar.set_length(expected);
    bar.set_message(format!("{label}: delivered to healthy"));
    wait_for_requests(
        &healthy.stats,
        base + expected,
        config.wait_limit,
        tidings,
        &bar,
        base,
    )
    .await?;
    bar.finish();
    let histogram = healthy.stats.take_latency();
    Ok(quantile_ms(&histogram, 0.99))
}
