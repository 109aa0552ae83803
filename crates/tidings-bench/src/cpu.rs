//! CPU time spent by the processes of a phase, from `/proc`: throughput on a shared 2-core machine
//! moves with what else runs, CPU time per delivered event much less, and it shows where the
//! machine's cores went (Tidings, the bench's receiver and publishers, PostgreSQL).

use std::time::Duration;

/// CPU time (user + system, every thread, living or exited) of one process so far.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time of a process and of every process it started that is still running (PostgreSQL's
/// backends and background workers are children of the server process).
pub fn tree_cpu(pid: u32) -> Option<Duration> {
    let mut total = process_cpu(pid)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        if parent(&stat) == Some(pid) {
            total += stat_cpu(&stat).unwrap_or_default();
        }
    }
    Some(total)
}

/// The fields after the command name, which may itself hold spaces and parentheses.
fn fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

fn parent(stat: &str) -> Option<u32> {
    fields(stat)?.get(1)?.parse().ok()
}

fn stat_cpu(stat: &str) -> Option<Duration> {
    let fields = fields(stat)?;
    // Fields 14 and 15 of proc(5), utime and stime, in clock ticks; field 3 is the first here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / per_second,
    ))
}

/// CPU time of the processes of one measurement, read at its start and at its end.
pub struct CpuMeter {
    tidings: u32,
    postgres: Option<u32>,
    start: [Duration; 3],
}

impl CpuMeter {
    pub fn start(tidings: u32, postgres: Option<u32>) -> Self {
        let mut meter = Self {
            tidings,
            postgres,
            start: Default::default(),
        };
        meter.start = meter.read();
        meter
    }

    fn read(&self) -> [Duration; 3] {
        [
            process_cpu(self.tidings).unwrap_or_default(),
            process_cpu(std::process::id()).unwrap_or_default(),
            self.postgres.and_then(tree_cpu).unwrap_or_default(),
        ]
    }

    /// Microseconds of CPU per event since the start: Tidings, the bench, PostgreSQL (if any).
    pub fn per_event(&self, events: u64) -> [f64; 3] {
        self.since_start().per_event(events)
    }

    /// CPU spent since the start so far, to be split later (`CpuSpent::since`).
    pub fn since_start(&self) -> CpuSpent {
        let now = self.read();
        CpuSpent(std::array::from_fn(|i| {
            now[i].saturating_sub(self.start[i])
        }))
    }
}

/// CPU time of a measurement's processes (Tidings, the bench, PostgreSQL) over some span.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSpent(pub(crate) [Duration; 3]);

impl CpuSpent {
    /// What was spent after `earlier`, a reading of the same meter.
    pub fn since(&self, earlier: &CpuSpent) -> CpuSpent {
        CpuSpent(std::array::from_fn(|i| {
            self.0[i].saturating_sub(earlier.0[i])
        }))
    }

    /// Microseconds per event.
    pub fn per_event(&self, events: u64) -> [f64; 3] {
        let events = events.max(1) as f64;
        std::array::from_fn(|i| self.0[i].as_secs_f64() * 1e6 / events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cpu_fields_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) worker) S 17 4242 17 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        let ticks = rustix::param::clock_ticks_per_second();
        assert_eq!(
            stat_cpu(stat),
            Some(Duration::from_nanos(300 * 1_000_000_000 / ticks))
        );
        assert_eq!(parent(stat), Some(17));
    }

    #[test]
    fn this_process_has_spent_some_cpu() {
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(process_cpu(std::process::id()).is_some_and(|cpu| cpu > Duration::ZERO));
    }
}
