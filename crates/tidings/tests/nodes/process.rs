//! `tidings serve` child processes sharing one database: started with the real binary, each with
//! its own log file, killed and reaped on every exit path; their logs are printed when a test fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::api::Api;
use crate::helpers::serving_port;

const BIN: &str = env!("CARGO_BIN_EXE_tidings");

/// How long a node may take to answer `/readyz` after it was started.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Lines of each node's log printed when a test fails.
const LOG_LINES_ON_FAILURE: usize = 200;

/// A client for the nodes' API, with a timeout so no test waits forever on a stuck request.
pub fn http_client() -> reqwest::Client {
    // Building the product's delivery client installs the process-wide TLS provider reqwest needs.
    let _ = tidings_delivery::DeliveryClient::new(false);
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(8))
        .build()
        .expect("http client")
}

/// A command for the binary that sees none of the `TIDINGS_*` settings of the environment the
/// tests run in, and no settings file.
fn tidings(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("TIDINGS_") && !name.starts_with("TIDINGS_TEST_") {
            command.env_remove(&*name);
        }
    }
    command
}

/// Creates an operator key with the CLI, the way an operator does before the first start.
pub fn create_operator_key(dir: &Path, database_url: &str) -> String {
    let output = tidings(dir)
        .args([
            "key",
            "create",
            "--operator",
            "--database-url",
            database_url,
        ])
        .output()
        .expect("run `tidings key create`");
    assert!(
        output.status.success(),
        "`tidings key create --operator` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8(output.stdout)
        .expect("utf-8 key")
        .trim()
        .to_owned();
    assert!(
        key.starts_with("tdk_"),
        "`tidings key create` printed `{key}`, not a key"
    );
    key
}

/// One `tidings serve` process.
pub struct Node {
    pub name: String,
    pub address: String,
    child: Child,
    log: PathBuf,
}

impl Node {
    /// Starts `tidings serve` on a loopback port the system picks, with `settings` as `TIDINGS_*`
    /// variables; `wait_ready` learns the port from its log. A port found free beforehand could be
    /// taken by another test before the node binds it.
    pub fn start(dir: &Path, name: &str, database_url: &str, settings: &[(&str, &str)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let mut command = tidings(dir);
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                database_url,
                "--allow-private-targets",
                "--allow-http-targets",
            ])
            .env("TIDINGS_NODE_NAME", name)
            .env("TIDINGS_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"));
        for (setting, value) in settings {
            command.env(setting, value);
        }
        let child = command.spawn().expect("start `tidings serve`");
        Self {
            name: name.to_owned(),
            address: String::new(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll child")
    }

    /// Panics with the log when the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("node {} exited ({status}):\n{}", self.name, self.log());
        }
    }

    /// Waits until the node has logged the port it listens on and `/readyz` answers 200, failing
    /// fast if the process exits.
    pub async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            self.assert_running();
            if self.address.is_empty()
                && let Some(port) = serving_port(&self.log())
            {
                self.address = format!("http://127.0.0.1:{port}");
            }
            if !self.address.is_empty()
                && let Ok(response) = http.get(format!("{}/readyz", self.address)).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} was not ready within {READY_WITHIN:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGSTOP (`freeze: true`) or SIGCONT: a frozen node opens no connection and sends no byte,
    /// so what it holds can be read without racing it.
    pub fn freeze(&self, freeze: bool) {
        let signal = if freeze { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill {signal} {} failed: {status}",
            self.pid()
        );
    }

    /// SIGKILL: no chance to finish or give back anything. Reaps the process.
    pub fn kill(&mut self) {
        // Killing an already reaped child fails; waiting again returns the same status.
        let _ = self.child.kill();
        self.child.wait().expect("reap the node");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Several nodes on one database, with the operator key and a directory for their logs. Kills them
/// all when dropped, and prints their logs first if the test is failing.
pub struct Nodes {
    pub nodes: Vec<Node>,
    pub key: String,
    pub http: reqwest::Client,
    pub database_url: String,
    dir: tempfile::TempDir,
}

impl Nodes {
    /// Creates the operator key on `database_url`, then starts `count` nodes on it with the same
    /// `settings` and waits until each is ready.
    pub async fn start(database_url: String, count: usize, settings: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = create_operator_key(dir.path(), &database_url);
        let mut nodes = Self {
            nodes: Vec::new(),
            key,
            http: http_client(),
            database_url,
            dir,
        };
        for index in 0..count {
            let name = format!("node-{}", char::from(b'a' + index as u8));
            nodes.nodes.push(Node::start(
                nodes.dir.path(),
                &name,
                &nodes.database_url,
                settings,
            ));
        }
        for node in &mut nodes.nodes {
            node.wait_ready(&nodes.http).await;
        }
        nodes
    }

    /// The API of node `index`.
    pub fn api(&self, index: usize) -> Api {
        Api {
            http: self.http.clone(),
            address: self.nodes[index].address.clone(),
            key: self.key.clone(),
        }
    }

    /// The APIs of every node, in order.
    pub fn apis(&self) -> Vec<Api> {
        (0..self.nodes.len()).map(|index| self.api(index)).collect()
    }

    /// Panics with the log of the first node that has exited, if any.
    pub fn assert_running(&mut self) {
        for node in &mut self.nodes {
            node.assert_running();
        }
    }

    /// The last lines of every node's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(LOG_LINES_ON_FAILURE);
            out.push_str(&format!(
                "----- {} (pid {}), last {} of {} log lines -----\n",
                node.name,
                node.pid(),
                lines.len() - from,
                lines.len()
            ));
            for line in &lines[from..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
