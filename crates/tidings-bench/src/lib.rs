//! The Tidings benchmark (SPEC section 8): the real `tidings` binary as a separate process on durable
//! SQLite, a hyper receiver and a load generator, all on 127.0.0.1, with bounded counts and durations.
//! `run` measures every phase and returns the figures; `main.rs` prints them and writes the JSON.

pub mod api;
pub mod cpu;
pub mod phases;
pub mod receiver;
pub mod report;
pub mod tidings_process;

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub use report::{Report, Row};

/// Counts and durations of one run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `tidings` binary under test.
    pub tidings_binary: PathBuf,
    /// A command `tidings serve` runs under (its program and arguments), such as a profiler.
    pub wrap: Vec<String>,
    pub quick: bool,
    pub progress: bool,
    /// Concurrent requests of the ceiling phase; the same as Tidings' default per-webhook concurrency.
    pub ceiling_workers: usize,
    pub ceiling_duration: Duration,
    pub publish_clients: usize,
    pub publish_duration: Duration,
    pub batch_size: usize,
    pub batch_clients: usize,
    pub e2e_events: usize,
    pub latency_rate: u32,
    pub latency_duration: Duration,
    /// Publishing at the latency phase's rate before it is measured (reported on its own row).
    pub latency_warm_up: Duration,
    pub fanout_webhooks: usize,
    pub isolation_webhooks: usize,
    pub isolation_rate: u32,
    pub isolation_duration: Duration,
    pub backlog_events: usize,
    pub backlog_batch: usize,
    /// The longest any wait for deliveries may take before the run fails.
    pub wait_limit: Duration,
    /// Also run the end-to-end and latency phases on a throwaway, durable PostgreSQL cluster.
    pub postgres: bool,
    /// Run only these groups of phases (the ceiling always runs); empty: all.
    pub only: Vec<String>,
}

impl Config {
    /// Whether the group of phases named `group` runs.
    pub fn runs(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

impl Config {
    /// The default run: the figures of BENCHMARKS.md.
    pub fn full(tidings_binary: PathBuf) -> Self {
        Self {
            tidings_binary,
            wrap: Vec::new(),
            quick: false,
            progress: true,
            ceiling_workers: 16,
            ceiling_duration: Duration::from_secs(10),
            publish_clients: 32,
            publish_duration: Duration::from_secs(10),
            batch_size: 100,
            batch_clients: 4,
            e2e_events: 50_000,
            latency_rate: 1000,
            latency_duration: Duration::from_secs(15),
            latency_warm_up: Duration::from_secs(1),
            fanout_webhooks: 1000,
            isolation_webhooks: 1000,
            isolation_rate: 200,
            isolation_duration: Duration::from_secs(15),
            backlog_events: 1_000_000,
            backlog_batch: 1000,
            postgres: true,
            only: Vec::new(),
            wait_limit: Duration::from_secs(600),
        }
    }

    /// Tiny counts: checks that every phase works, in seconds. Not figures.
    pub fn quick(tidings_binary: PathBuf) -> Self {
        Self {
            quick: true,
            ceiling_duration: Duration::from_secs(1),
            publish_duration: Duration::from_secs(1),
            e2e_events: 500,
            latency_duration: Duration::from_secs(1),
            latency_warm_up: Duration::from_millis(200),
            fanout_webhooks: 100,
            isolation_webhooks: 100,
            isolation_rate: 100,
            isolation_duration: Duration::from_secs(1),
            backlog_events: 2000,
            postgres: true,
            only: Vec::new(),
            wait_limit: Duration::from_secs(60),
            ..Self::full(tidings_binary)
        }
    }

    /// A progress bar of `len` steps for one phase (hidden when progress is off).
    pub(crate) fn bar(&self, len: u64, phase: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} {msg} ({elapsed})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(phase.to_owned());
        bar
    }
}

/// Runs every phase and returns the figures.
pub async fn run(config: &Config) -> anyhow::Result<Report> {
    // The HTTP clients use rustls without a built-in provider; any installed one will do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !config.tidings_binary.exists() {
        anyhow::bail!(
            "the tidings binary is missing at {}: run `cargo build --release -p tidings` first",
            config.tidings_binary.display()
        );
    }
    let mut report = Report::new(config.quick);
    phases::run_all(config, &mut report).await?;
    Ok(report)
}
