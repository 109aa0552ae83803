//! `tidings-bench`: measures Tidings on this machine (see BENCHMARKS.md).
//!
//! `cargo run --release -p tidings-bench -- [--quick] [--json target/bench.json]`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use tidings_bench::Config;

#[derive(Parser)]
#[command(
    name = "tidings-bench",
    about = "Benchmark Tidings against the ceiling of this machine"
)]
struct Cli {
    /// Tiny counts and durations: checks every phase in seconds; the figures mean nothing.
    #[arg(long)]
    quick: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The tidings binary to measure (default: `tidings` next to this executable, built if missing).
    #[arg(long)]
    tidings: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
    /// Pending deliveries of the backlog phase (default 1,000,000; --quick 2,000).
    #[arg(long)]
    backlog: Option<usize>,
    /// Events of the end-to-end phase (default 50,000; --quick 500).
    #[arg(long)]
    e2e_events: Option<usize>,
    /// Skip the PostgreSQL rows (they need the PostgreSQL server binaries installed).
    #[arg(long)]
    no_postgres: bool,
    /// Run only these groups (comma-separated; the ceiling always runs): publish, end-to-end,
    /// latency, postgres, fan-out (with isolation), backlog.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run `tidings serve` under this command (split on whitespace), e.g. `valgrind --tool=callgrind
    /// --callgrind-out-file=target/cg.out` to count its instructions; the server is stopped with
    /// SIGTERM at the end of each group, so the command sees it exit.
    #[arg(long)]
    wrap: Option<String>,
    /// Internal: run as the ceiling's client process, POSTing to this URL.
    #[arg(long, hide = true, requires_all = ["ceiling_secret", "ceiling_millis", "ceiling_workers"])]
    ceiling_client: Option<String>,
    #[arg(long, hide = true)]
    ceiling_secret: Option<String>,
    #[arg(long, hide = true)]
    ceiling_millis: Option<u64>,
    #[arg(long, hide = true)]
    ceiling_workers: Option<usize>,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tidings-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let (Some(url), Some(secret), Some(millis), Some(workers)) = (
        &cli.ceiling_client,
        &cli.ceiling_secret,
        cli.ceiling_millis,
        cli.ceiling_workers,
    ) {
        return tidings_bench::phases::ceiling::client_main(url, secret, millis, workers);
    }
    let binary = match cli.tidings {
        Some(path) => path,
        None => default_binary()?,
    };
    let mut config = if cli.quick {
        Config::quick(binary)
    } else {
        Config::full(binary)
    };
    config.progress = !cli.no_progress;
    config.postgres = !cli.no_postgres;
    config.only = cli.only;
    config.wrap = cli
        .wrap
        .map(|command| command.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    if let Some(backlog) = cli.backlog {
        config.backlog_events = backlog;
    }
    if let Some(events) = cli.e2e_events {
        config.e2e_events = events;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(tidings_bench::run(&config))?;
    println!("\n{}", report.table());
    if let Some(path) = cli.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    if report.get("receiver signature failures").unwrap_or(0.0) > 0.0 {
        bail!("the receiver saw requests whose signature did not verify");
    }
    Ok(())
}

/// `tidings` next to this executable; built with cargo (same profile) when it is missing.
fn default_binary() -> anyhow::Result<PathBuf> {
    let binary = std::env::current_exe()?.with_file_name("tidings");
    if !binary.exists() {
        build_tidings(&binary)?;
    }
    Ok(binary)
}

fn build_tidings(binary: &Path) -> anyhow::Result<()> {
    let release = !cfg!(debug_assertions);
    eprintln!(
        "{} is missing: running `cargo build {}-p tidings`",
        binary.display(),
        if release { "--release " } else { "" }
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.arg("build").args(["-p", "tidings"]);
    if release {
        command.arg("--release");
    }
    let status = command.status().context("cannot run cargo")?;
    if !status.success() || !binary.exists() {
        bail!(
            "could not build {}: run `cargo build {}-p tidings` first",
            binary.display(),
            if release { "--release " } else { "" }
        );
    }
    Ok(())
}
