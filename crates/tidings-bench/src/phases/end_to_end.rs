//! Phase 3, end-to-end: events published in batches through the API and delivered by Tidings to the
//! receiver (one webhook); then phase 8, the storage bytes per delivered event.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Backend, Setup, wait_for_requests};
use crate::Config;
use crate::cpu::{CpuMeter, CpuSpent};
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
    // The moment the last batch is accepted splits the phase: before it, publishing and delivery
    // share the cores; after it, Tidings only delivers.
    let published = async {
        while let Some(done) = publishers.join_next().await {
            done??;
        }
        anyhow::Ok((
            Instant::now(),
            receiver.stats.requests().saturating_sub(base),
            cpu.since_start(),
        ))
    };
    let (arrived, (published_at, arrived_by_then, cpu_by_then)) = tokio::try_join!(
        wait_for_requests(
            &receiver.stats,
            base + total as u64,
            config.wait_limit,
            tidings,
            &bar,
            base,
        ),
        published
    )?;
    let spent = cpu.since_start();
    let [tidings_cpu, bench_cpu, postgres_cpu] = spent.per_event(total as u64);
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
        format!(
            "of {ceiling:.0} requests/s, the higher of the run's first ceiling and the one just before this phase; target ≥ 50 %"
        ),
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
    split(
        report,
        backend,
        ceiling,
        Split {
            total: total as u64,
            publishing: published_at.saturating_duration_since(started),
            after: arrived.saturating_duration_since(published_at),
            arrived_by_then,
            cpu_after: spent.since(&cpu_by_then),
        },
    );
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

/// The end-to-end phase cut at the moment its last batch was accepted.
struct Split {
    total: u64,
    publishing: Duration,
    after: Duration,
    arrived_by_then: u64,
    cpu_after: CpuSpent,
}

/// Reports the deliveries made while publishing and after it, and Tidings' CPU per delivery once
/// it only delivers; the difference from the whole phase's is what publishing cost. Left out when
/// delivery kept up with publishing, so that too few arrived afterwards to say anything.
fn split(report: &mut Report, backend: Backend, ceiling: f64, split: Split) {
    let after = split.total.saturating_sub(split.arrived_by_then);
    if after < split.total / 10 || split.after < Duration::from_millis(500) {
        return;
    }
    let publishing = split.publishing.as_secs_f64();
    report.add(
        &backend.row("end-to-end while publishing"),
        split.arrived_by_then as f64 / publishing,
        "deliveries/s",
        format!(
            "arrivals from the first publish until the last batch was accepted ({publishing:.1} s; {:.0} events/s accepted meanwhile)",
            split.total as f64 / publishing
        ),
    );
    let rate = after as f64 / split.after.as_secs_f64();
    report.add(
        &backend.row("end-to-end after publishing"),
        rate,
        "deliveries/s",
        format!(
            "arrivals after the last batch was accepted ({after} in {:.1} s): delivery alone, {:.1} % of the ceiling",
            split.after.as_secs_f64(),
            100.0 * rate / ceiling
        ),
    );
    let [tidings, bench, _] = split.cpu_after.per_event(after);
    report.add(
        &backend.row("end-to-end CPU per delivery after publishing: Tidings"),
        tidings,
        "µs",
        "Tidings' CPU after the last batch was accepted / deliveries that arrived meanwhile: what a delivery costs alone",
    );
    report.add(
        &backend.row("end-to-end CPU per delivery after publishing: bench"),
        bench,
        "µs",
        "the same for the bench process (the receiver alone)",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(arrived_by_then: u64, after: Duration, tidings_cpu: Duration) -> Report {
        let mut report = Report::new(true);
        split(
            &mut report,
            Backend::Sqlite,
            20_000.0,
            Split {
                total: 10_000,
                publishing: Duration::from_secs(2),
                after,
                arrived_by_then,
                cpu_after: CpuSpent([tidings_cpu, Duration::from_millis(60), Duration::ZERO]),
            },
        );
        report
    }

    #[test]
    fn the_phase_is_cut_where_the_last_batch_was_accepted() {
        let report = cut(4_000, Duration::from_secs(1), Duration::from_millis(300));
        assert_eq!(report.get("end-to-end while publishing"), Some(2_000.0));
        assert_eq!(report.get("end-to-end after publishing"), Some(6_000.0));
        let note = &report.rows[1].note;
        assert!(note.contains("30.0 % of the ceiling"), "{note}");
        assert_eq!(
            report.get("end-to-end CPU per delivery after publishing: Tidings"),
            Some(50.0)
        );
        assert_eq!(
            report.get("end-to-end CPU per delivery after publishing: bench"),
            Some(10.0)
        );
    }

    #[test]
    fn no_cut_is_reported_when_delivery_kept_up_with_publishing() {
        let few_after = cut(9_500, Duration::from_secs(1), Duration::from_millis(30));
        assert!(few_after.rows.is_empty());
        let short_after = cut(4_000, Duration::from_millis(200), Duration::from_millis(30));
        assert!(short_after.rows.is_empty());
    }
}
