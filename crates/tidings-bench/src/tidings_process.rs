//! The Tidings under test: the real `tidings` binary as a separate process on a fresh SQLite file or
//! a fresh PostgreSQL database.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tidings_testkit::serving::serving_port;

use crate::Config;

/// A running `tidings serve`; dropping it stops the process (and removes its database).
pub struct TidingsProcess {
    child: Child,
    dir: tempfile::TempDir,
    pub base_url: String,
    pub operator_key: String,
}

impl TidingsProcess {
    /// Creates a fresh SQLite database with an operator key, starts `serve` on a loopback port the system picks
    /// and waits until it answers `/healthz`.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        Self::start_on(config, None).await
    }

    /// As `start`, on `database_url` when given (an empty PostgreSQL database) instead of SQLite.
    /// `serve` runs under `config.wrap` when it is set (a profiler such as callgrind).
    pub async fn start_on(config: &Config, database_url: Option<&str>) -> anyhow::Result<Self> {
        let binary = config.tidings_binary.as_path();
        let dir = tempfile::Builder::new()
            .prefix("tidings-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let database_url = database_url.map_or_else(
            || format!("sqlite://{}", dir.path().join("bench.db").display()),
            str::to_owned,
        );
        let output = Command::new(binary)
            .args([
                "key",
                "create",
                "--operator",
                "--database-url",
                &database_url,
            ])
            .env("TIDINGS_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        if !output.status.success() {
            bail!(
                "`tidings key create` failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let operator_key = String::from_utf8(output.stdout)?.trim().to_owned();
        let log = std::fs::File::create(dir.path().join("tidings.log"))?;
        let mut command = match config.wrap.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let child = command
            .args([
                "serve",
                // A port the system picks, read back from the log: one found free beforehand
                // could be taken by another process before Tidings binds it.
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &database_url,
                "--allow-private-targets",
                "--allow-http-targets",
            ])
            .env("TIDINGS_LOG", "warn,tidings=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut process = Self {
            child,
            dir,
            base_url: String::new(),
            operator_key,
        };
        process.wait_healthy().await?;
        Ok(process)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        // Under a profiler the start can take much longer.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "tidings exited during start-up ({status}): {}",
                    self.log_tail()
                );
            }
            if self.base_url.is_empty()
                && let Some(port) = serving_port(&self.log())
            {
                self.base_url = format!("http://127.0.0.1:{port}");
            }
            if !self.base_url.is_empty()
                && let Ok(response) = client
                    .get(format!("{}/healthz", self.base_url))
                    .send()
                    .await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "tidings did not become healthy within 120 s: {}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tidings.log")).unwrap_or_default()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size of the process so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        proc_status_kib(self.pid(), "VmHWM:").map(|kib| kib * 1024)
    }

    /// Current resident set size (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        proc_status_kib(self.pid(), "VmRSS:").map(|kib| kib * 1024)
    }

    pub fn database_path(&self) -> PathBuf {
        self.dir.path().join("bench.db")
    }

    /// Bytes of the database file and its write-ahead log.
    pub fn storage_bytes(&self) -> u64 {
        let db = self.database_path();
        let wal = self.dir.path().join("bench.db-wal");
        [db, wal]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Fails when the process has died.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("tidings exited ({status}): {}", self.log_tail());
        }
        Ok(())
    }
}

impl Drop for TidingsProcess {
    /// Asks the server to stop (SIGTERM) and waits for it a while, then kills it: a profiler it
    /// runs under writes its figures only when the process exits by itself.
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok() {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a stopping server may take; its shutdown waits for attempts in flight.
const STOP_GRACE: Duration = Duration::from_secs(60);

fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}
