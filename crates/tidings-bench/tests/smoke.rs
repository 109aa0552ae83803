//! Smoke run of the whole bench with tiny counts (`--quick`): it completes and every figure is there and
//! positive. Never asserts a speed: benchmarks are not part of the suite's pass/fail.
//!
//! Needs the `tidings` binary next to `tidings-bench` (target/debug/tidings); the bench builds it with
//! `cargo build -p tidings` when it is missing.

use std::process::Command;

const ROWS: &[&str] = &[
    "ceiling",
    "receiver served",
    "ceiling CPU per request",
    "ceiling CPU per request: client",
    "ceiling CPU per request: receiver",
    "ceiling, client in the receiver's process",
    "ceiling CPU per request, client in the receiver's process",
    "publish single",
    "publish batch (100)",
    "publish single CPU per event: Tidings",
    "publish batch (100) CPU per event: Tidings",
    "ceiling before end-to-end",
    "end-to-end",
    "end-to-end / ceiling",
    "end-to-end CPU per delivery: Tidings",
    "storage per delivered event",
    "latency p50",
    "latency p99",
    "latency p999",
    "latency warm-up max",
    "fan-out accepted",
    "fan-out all delivered",
    "isolation p99, all healthy",
    "isolation p99, 10% time out",
    "isolation p99 ratio",
    "backlog publish",
    "backlog RSS with all pending",
    "backlog drain",
    "backlog peak RSS",
    "receiver signatures verified",
];

#[test]
fn the_quick_bench_completes_with_every_figure() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let json = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_tidings-bench"))
        .args(["--quick", "--no-progress", "--json"])
        .arg(&json)
        .output()
        .expect("run tidings-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tidings-bench --quick failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("ceiling"), "no table on stdout:\n{stdout}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON was written"))
            .expect("valid JSON");
    assert!(report["machine"]["cores"].as_u64().is_some_and(|c| c > 0));
    assert!(report["machine"]["ram_mib"].as_u64().is_some_and(|r| r > 0));
    assert!(
        report["machine"]["date"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    let rows = report["rows"].as_array().expect("rows");
    let value = |name: &str| {
        rows.iter()
            .find(|row| row["name"] == name)
            .and_then(|row| row["value"].as_f64())
            .unwrap_or_else(|| panic!("no figure `{name}` in {report}"))
    };
    for name in ROWS {
        let v = value(name);
        assert!(v.is_finite() && v > 0.0, "`{name}` is {v}, not positive");
    }
    // A few hundred deliveries may cost the bench less than one clock tick.
    let bench_cpu = value("end-to-end CPU per delivery: bench");
    assert!(bench_cpu.is_finite() && bench_cpu >= 0.0, "{bench_cpu}");
    assert_eq!(value("receiver signature failures"), 0.0);
}

/// `--wrap`: the server runs under the given command, and is asked to stop (SIGTERM) rather than
/// killed, so a profiler it runs under sees it exit. The wrapper here passes the signal on and
/// writes down the server's exit status; `timeout` bounds the server's life should the wrapper be
/// killed instead.
#[test]
fn the_server_runs_under_the_wrap_command_and_exits_by_itself() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let status = dir.path().join("status");
    let script = dir.path().join("wrap.sh");
    std::fs::write(
        &script,
        format!(
            "trap 'kill -TERM $child; wait $child; echo $? > {}; exit 0' TERM\ntimeout 120 \"$@\" &\nchild=$!\nwait $child\n",
            status.display()
        ),
    )
    .expect("write the wrapper");
    let output = Command::new(env!("CARGO_BIN_EXE_tidings-bench"))
        .args([
            "--quick",
            "--no-progress",
            "--no-postgres",
            "--only",
            "end-to-end",
            "--wrap",
        ])
        .arg(format!("sh {}", script.display()))
        .output()
        .expect("run tidings-bench");
    assert!(
        output.status.success(),
        "tidings-bench --wrap failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let written = std::fs::read_to_string(&status).expect("the wrapper saw the server exit");
    assert_eq!(written.trim(), "0", "the server's exit status");
}
