//! Phase 2, publish throughput: events accepted per second, single and in batches, into one paused
//! webhook (each event still stores its delivery, but no delivery work competes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::Config;
use crate::api::{Api, EventMaker};
use crate::cpu::CpuMeter;
use crate::report::Report;
use crate::tidings_process::TidingsProcess;

pub async fn run(
    config: &Config,
    tidings: &TidingsProcess,
    report: &mut Report,
) -> anyhow::Result<()> {
    let api = Api::new(tidings)?;
    let events = EventMaker::new(api.example_data().await?);
    let ws = api.create_workspace("bench publish").await?;
    let _webhook = api
        .create_webhook(
            &ws,
            "http://127.0.0.1:9/paused",
            json!({ "state": "paused" }),
        )
        .await?;

    let cpu = CpuMeter::start(tidings.pid(), None);
    let (single, accepted) = closed_loop(
        config,
        "publish",
        &api,
        &ws,
        config.publish_clients,
        false,
        {
            let events = events.clone();
            move || (events.single(crate::receiver::unix_nanos(), None), 1)
        },
    )
    .await?;
    report.add(
        "publish single",
        single,
        "events/s",
        format!(
            "POST /events, {} concurrent clients, accepted (202 after commit), webhook paused",
            config.publish_clients
        ),
    );
    cpu_row(report, "publish single", cpu, accepted);

    let batch_size = config.batch_size;
    let cpu = CpuMeter::start(tidings.pid(), None);
    let (batch, accepted) = closed_loop(config, "batch", &api, &ws, config.batch_clients, true, {
        let events = events.clone();
        move || {
            (
                events.batch(batch_size, crate::receiver::unix_nanos()),
                batch_size,
            )
        }
    })
    .await?;
    report.add(
        &format!("publish batch ({batch_size})"),
        batch,
        "events/s",
        format!(
            "POST /events/batch of {batch_size}, {} concurrent clients, webhook paused",
            config.batch_clients
        ),
    );
    cpu_row(
        report,
        &format!("publish batch ({batch_size})"),
        cpu,
        accepted,
    );
    Ok(())
}

/// What accepting an event cost Tidings (the API, its commit, the WAL and checkpoint, the sync),
/// with nothing delivered meanwhile.
fn cpu_row(report: &mut Report, row: &str, cpu: CpuMeter, accepted: u64) {
    let [tidings, ..] = cpu.per_event(accepted);
    report.add(
        &format!("{row} CPU per event: Tidings"),
        tidings,
        "µs",
        "CPU time of the tidings process over the phase / events accepted (its webhook paused: each delivery is stored held, outside the due index)",
    );
}

/// `clients` loops publishing (to the batch endpoint when `batch`) bodies from `make` (body, events in it) until the phase's duration is
/// over; returns events accepted per second, and how many.
async fn closed_loop<F>(
    config: &Config,
    phase: &str,
    api: &Api,
    ws: &str,
    clients: usize,
    batch: bool,
    make: F,
) -> anyhow::Result<(f64, u64)>
where
    F: Fn() -> (bytes::Bytes, usize) + Send + Sync + Clone + 'static,
{
    let bar = config.bar(config.publish_duration.as_millis() as u64, phase);
    bar.set_message("ms");
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + config.publish_duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (api, ws, make, accepted) = (
            api.clone(),
            ws.to_owned(),
            make.clone(),
            Arc::clone(&accepted),
        );
        workers.spawn(async move {
            while Instant::now() < deadline {
                let (body, count) = make();
                let done = if batch {
                    api.publish_batch(&ws, body).await?
                } else {
                    api.publish(&ws, body).await?;
                    count
                };
                accepted.fetch_add(done as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    loop {
        tokio::select! {
            done = workers.join_next() => match done {
                Some(result) => result??,
                None => break,
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        bar.set_position(started.elapsed().as_millis() as u64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish();
    let accepted = accepted.load(Ordering::Relaxed);
    Ok((accepted as f64 / elapsed, accepted))
}
