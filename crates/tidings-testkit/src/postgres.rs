//! Throwaway PostgreSQL clusters: `initdb` into a temporary directory, one server on a free port of
//! 127.0.0.1, and a watchdog that stops it and deletes its files when the owning process exits.
//!
//! `TIDINGS_TEST_POSTGRES_URL` (an admin URL, e.g. set by `scripts/test.sh`, which starts one cluster
//! for the whole run) makes every test process share that cluster instead of starting its own. Each
//! test gets its own database on it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};

/// The variable naming a running cluster's admin URL to share.
pub const URL_VAR: &str = "TIDINGS_TEST_POSTGRES_URL";

/// A running PostgreSQL server this process may stop and start again.
pub struct Cluster {
    admin_url: String,
    port: u16,
    bin: PathBuf,
    /// Data directory, socket directory and log; deleted with the cluster.
    dir: Option<tempfile::TempDir>,
    as_postgres: bool,
    durable: bool,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The directory holding `initdb` and `postgres`: `TIDINGS_TEST_POSTGRES_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`, else whatever `PATH` finds.
pub fn server_binaries() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TIDINGS_TEST_POSTGRES_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
    })
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

impl Cluster {
    /// Creates and starts a new cluster tuned for tests (no fsync); it is stopped and deleted when
    /// dropped, and by a watchdog when `watch_pid` (default: this process) exits.
    pub fn start_new(watch_pid: Option<u32>) -> Result<Self, String> {
        Self::start_new_with(watch_pid, false)
    }

    /// As `start_new`; `durable` keeps PostgreSQL's default durability (fsync, synchronous commit),
    /// as a benchmark needs.
    pub fn start_new_with(watch_pid: Option<u32>, durable: bool) -> Result<Self, String> {
        let bin = server_binaries()
            .ok_or("PostgreSQL server binaries not found (install the `postgresql` package)")?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("tidings-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        if as_postgres {
            // initdb refuses to run as root, so the cluster belongs to the `postgres` user.
            run(Command::new("chown").arg("postgres").arg(dir.path()))?;
            run(Command::new("chmod").arg("0755").arg(dir.path()))?;
        }
        let mut cluster = Self {
            admin_url: String::new(),
            port: free_port()?,
            bin,
            dir: Some(dir),
            as_postgres,
            durable,
        };
        let data = cluster.path().join("data");
        run(cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null()))?;
        cluster.admin_url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
        cluster.start()?;
        cluster.spawn_watchdog(watch_pid.unwrap_or_else(std::process::id))?;
        Ok(cluster)
    }

    fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let path = self.path();
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(path.join("data"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null()))
    }

    /// Starts the server (again) on the same port and waits until it accepts connections.
    pub fn start(&self) -> Result<(), String> {
        let path = self.path();
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=400",
            self.port,
            path.display()
        );
        if !self.durable {
            options.push_str(" -c fsync=off -c full_page_writes=off -c synchronous_commit=off");
        }
        self.pg_ctl(&[
            "-o",
            &options,
            "-l",
            &path.join("server.log").display().to_string(),
            "-w",
            "-t",
            "60",
            "start",
        ])
        .map_err(|e| {
            format!(
                "starting PostgreSQL failed ({e}); see {}/server.log",
                path.display()
            )
        })
    }

    /// Stops the server at once (connections are cut, as when it crashes or restarts).
    pub fn stop(&self) -> Result<(), String> {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"])
    }

    /// Stops and deletes the cluster when `pid` exits, even if it is killed.
    fn spawn_watchdog(&self, pid: u32) -> Result<(), String> {
        // In its own session and deaf to the usual signals, so a Ctrl-C or a kill of the test's
        // process group does not take the watchdog down with it and leave the server running.
        let script = format!(
            "trap '' INT TERM HUP; while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}; rm -rf '{dir}'",
            stop = if self.as_postgres {
                format!(
                    "runuser -u postgres -- '{}' -D '{}/data' -m immediate stop",
                    self.bin.join("pg_ctl").display(),
                    self.path().display()
                )
            } else {
                format!(
                    "'{}' -D '{}/data' -m immediate stop",
                    self.bin.join("pg_ctl").display(),
                    self.path().display()
                )
            },
            dir = self.path().display()
        );
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| format!("cannot start the cluster watchdog: {e}"))
    }

    /// The server's process id (its `postmaster.pid`), while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        let dir = self.dir.as_ref()?;
        let pid_file =
            std::fs::read_to_string(dir.path().join("data").join("postmaster.pid")).ok()?;
        pid_file.lines().next()?.trim().parse().ok()
    }

    /// The admin URL (database `postgres`, user `postgres`).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Leaves the cluster running after this value is gone (its watchdog still stops it).
    pub fn detach(mut self) -> String {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.admin_url.clone()
    }

    /// A URL of a new, empty database on this cluster.
    pub async fn create_database(&self) -> Result<String, String> {
        create_database(&self.admin_url).await
    }

    /// Drops the database at `url` and checkpoints, so what its writes left behind (dirty pages,
    /// autovacuum of its tables, WAL not yet recycled) does not land in what runs next.
    pub async fn retire_database(&self, url: &str) -> Result<(), String> {
        let name = url
            .rsplit_once('/')
            .map(|(_, name)| name)
            .filter(|name| name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .ok_or_else(|| format!("not a database URL of this cluster: {url}"))?;
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.admin_url))?;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .await
            .map_err(|e| format!("DROP DATABASE failed: {e}"))?;
        admin
            .execute("CHECKPOINT")
            .await
            .map_err(|e| format!("CHECKPOINT failed: {e}"))?;
        let _ = admin.close().await;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.dir.is_some() {
            let _ = self.stop();
        }
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed: {}",
            command.get_program(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Creates a database with a fresh name on the cluster at `admin_url`; returns its URL.
pub async fn create_database(admin_url: &str) -> Result<String, String> {
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match PgConnection::connect(admin_url).await {
            Ok(mut admin) => {
                admin
                    .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .map_err(|e| format!("CREATE DATABASE failed: {e}"))?;
                let _ = admin.close().await;
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(base, _)| base)
                    .unwrap_or(admin_url);
                return Ok(format!("{base}/{name}"));
            }
            Err(error) if Instant::now() > deadline => {
                return Err(format!("cannot connect to {admin_url}: {error}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The cluster this process shares: the one `TIDINGS_TEST_POSTGRES_URL` names, else one started
/// on first use and stopped when the process exits.
pub fn shared_admin_url() -> Result<&'static str, String> {
    static SHARED: OnceLock<Result<String, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => Ok(url),
            _ => Cluster::start_new(None).map(Cluster::detach),
        })
        .as_deref()
        .map_err(|e| e.clone())
}

/// A URL of a new, empty database on the shared cluster; panics with the reason when PostgreSQL
/// cannot be started (tests need it: `.ci/run` installs it).
pub async fn fresh_database() -> String {
    let admin = shared_admin_url().unwrap_or_else(|e| panic!("no PostgreSQL for tests: {e}"));
    create_database(admin)
        .await
        .unwrap_or_else(|e| panic!("no PostgreSQL database for tests: {e}"))
}
