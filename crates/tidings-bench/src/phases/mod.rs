//! The phases, in order. Each phase that needs a fresh database starts its own Tidings and kills it
//! when done (the process guard kills it on any early return too).

mod backlog;
pub mod ceiling;
mod end_to_end;
mod fanout;
mod isolation;
mod latency;
mod publish;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use crate::Config;
use crate::api::{Api, EventMaker};
use crate::receiver::{Mode, Receiver, Stats};
use crate::report::Report;
use crate::tidings_process::TidingsProcess;

/// Writes every dirty page on the machine to disk (`sync`) before a latency measurement. The kernel
/// writes pages back some 30 s after they were dirtied, so what earlier phases (or a build) wrote
/// would otherwise go to disk during the measurement, and every fsync there would wait behind it.
pub async fn flush_dirty_pages() -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sync")
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run `sync`: {e}"))?;
    anyhow::ensure!(status.success(), "`sync` failed: {status}");
    Ok(())
}

/// The ceiling measured again just before each end-to-end phase.
const BEFORE_END_TO_END: &str = "ceiling before end-to-end";

pub async fn run_all(config: &Config, report: &mut Report) -> anyhow::Result<()> {
    let receiver = Receiver::start(0, Mode::Ok).await?;

    let ceiling = ceiling::run(config, &receiver, report).await?;

    if config.runs("publish") {
        let tidings = TidingsProcess::start(config).await?;
        publish::run(config, &tidings, report).await?;
    }

    if config.runs("end-to-end") {
        let ceiling = ceiling::again(
            config,
            &receiver,
            ceiling,
            &Backend::Sqlite.row(BEFORE_END_TO_END),
            report,
        )
        .await?;
        let mut tidings = TidingsProcess::start(config).await?;
        let setup = Setup::new(&tidings).await?;
        end_to_end::run(
            config,
            &mut tidings,
            &setup,
            &receiver,
            ceiling,
            Backend::Sqlite,
            report,
        )
        .await?;
    }

    if config.runs("latency") {
        // A fresh database: the end-to-end phase leaves a large WAL whose checkpoints would land here.
        let mut tidings = TidingsProcess::start(config).await?;
        let setup = Setup::new(&tidings).await?;
        latency::run(
            config,
            &mut tidings,
            &setup,
            &receiver,
            Backend::Sqlite,
            report,
        )
        .await?;
    }

    if config.postgres && config.runs("postgres") {
        // A durable cluster (fsync, synchronous commit: PostgreSQL's defaults) on this machine.
        let cluster = tidings_testkit::postgres::Cluster::start_new_with(None, true)
            .map_err(|e| anyhow::anyhow!("cannot start PostgreSQL for the bench: {e}"))?;
        let backend = Backend::Postgres {
            server: cluster.server_pid(),
        };
        // Measured before the loop, whose first phase is end-to-end: before its database and
        // Tidings are started, as on SQLite.
        let ceiling = ceiling::again(
            config,
            &receiver,
            ceiling,
            &backend.row(BEFORE_END_TO_END),
            report,
        )
        .await?;
        for phase in ["end-to-end", "latency"] {
            let url = cluster
                .create_database()
                .await
                .map_err(anyhow::Error::msg)?;
            let mut tidings = TidingsProcess::start_on(config, Some(&url)).await?;
            let setup = Setup::new(&tidings).await?;
            if phase == "end-to-end" {
                end_to_end::run(
                    config,
                    &mut tidings,
                    &setup,
                    &receiver,
                    ceiling,
                    backend,
                    report,
                )
                .await?;
                // What its writes leave behind (dirty pages, autovacuum of its tables, WAL segments
                // not recycled yet) would land in the latency phase, as the SQLite end-to-end
                // phase's WAL would in SQLite's.
                drop(tidings);
                cluster
                    .retire_database(&url)
                    .await
                    .map_err(anyhow::Error::msg)?;
            } else {
                latency::run(config, &mut tidings, &setup, &receiver, backend, report).await?;
            }
        }
    }

    if config.runs("fan-out") {
        let mut tidings = TidingsProcess::start(config).await?;
        let setup = Setup::new(&tidings).await?;
        fanout::run(config, &mut tidings, &setup, &receiver, report).await?;
        let hanging = Receiver::start(0, Mode::Hang).await?;
        isolation::run(config, &mut tidings, &setup, &receiver, &hanging, report).await?;
    }

    if config.runs("backlog") {
        let mut tidings = TidingsProcess::start(config).await?;
        let setup = Setup::new(&tidings).await?;
        backlog::run(config, &mut tidings, &setup, report).await?;
    }

    let stats = &receiver.stats;
    report.add(
        "receiver signatures verified",
        stats.verified() as f64,
        "requests",
        format!(
            "every {}th request to the healthy receiver, Standard Webhooks HMAC checked independently of Tidings",
            crate::receiver::VERIFY_EVERY
        ),
    );
    report.add(
        "receiver signature failures",
        stats.verify_failures() as f64,
        "requests",
        stats
            .last_failure()
            .map_or_else(|| "must be 0".to_owned(), |f| format!("last: {f}")),
    );
    Ok(())
}

/// The storage a phase runs on; PostgreSQL rows carry a suffix.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Backend {
    Sqlite,
    /// With the server's process id, whose CPU time (and its children's) the phase counts.
    Postgres {
        server: Option<u32>,
    },
}

impl Backend {
    pub(crate) fn row(self, name: &str) -> String {
        match self {
            Backend::Sqlite => name.to_owned(),
            Backend::Postgres { .. } => format!("{name} (PostgreSQL)"),
        }
    }
}

/// What most phases share: the API client, the catalog example and a workspace.
pub(crate) struct Setup {
    pub api: Api,
    pub events: EventMaker,
}

impl Setup {
    async fn new(tidings: &TidingsProcess) -> anyhow::Result<Self> {
        let api = Api::new(tidings)?;
        let events = EventMaker::new(api.example_data().await?);
        Ok(Self { api, events })
    }
}

/// Waits until the receiver has counted `target` requests; returns the arrival time of the last one.
pub(crate) async fn wait_for_requests(
    stats: &Stats,
    target: u64,
    limit: Duration,
    tidings: &mut TidingsProcess,
    bar: &ProgressBar,
    base: u64,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    let mut checked = Instant::now();
    loop {
        let seen = stats.requests();
        bar.set_position(seen.saturating_sub(base));
        if seen >= target {
            return Ok(stats.last_arrival());
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {} deliveries arrived within {} s",
                seen.saturating_sub(base),
                target.saturating_sub(base),
                limit.as_secs()
            );
        }
        if checked.elapsed() > Duration::from_secs(1) {
            tidings.check_alive()?;
            checked = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Publishes single events at `rate` per second for `duration` (open loop: each send is its own task,
/// so a slow answer never delays the next send). `campaign` names the campaign of the n-th event.
/// Returns how many were accepted.
pub(crate) async fn offered_load(
    setup: &Setup,
    ws: &str,
    rate: u32,
    duration: Duration,
    campaign: Option<Arc<dyn Fn(u64) -> String + Send + Sync>>,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let mut interval =
        tokio::time::interval(Duration::from_nanos(1_000_000_000 / u64::from(rate.max(1))));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        interval.tick().await;
        let api = setup.api.clone();
        let campaign = campaign.as_ref().map(|f| f(n));
        let sent_at = crate::receiver::unix_nanos();
        let body = setup.events.single(sent_at, campaign.as_deref());
        let ws = ws.to_owned();
        tasks.spawn(async move { api.publish(&ws, body).await });
        bar.set_position(n + 1);
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(total)
}

/// Milliseconds of a histogram of microseconds at a quantile.
pub(crate) fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// Runs `count` jobs with at most `concurrency` at once, in order of index.
pub(crate) async fn for_each_concurrent<F, Fut, T>(
    count: usize,
    concurrency: usize,
    job: F,
) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    use futures::StreamExt;
    let results: Vec<anyhow::Result<T>> = futures::stream::iter(0..count)
        .map(job)
        .buffered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}
