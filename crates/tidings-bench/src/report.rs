//! The figures of one run: one table on stdout, the same as JSON.

use serde::Serialize;

/// One figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub note: String,
}

/// Where and when the run happened.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub ram_mib: u64,
    pub date: String,
    /// 1-minute load average when the run started: other work on the machine skews every figure.
    pub load_average_at_start: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub quick: bool,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn new(quick: bool) -> Self {
        Self {
            machine: Machine::detect(),
            quick,
            rows: Vec::new(),
        }
    }

    pub fn add(&mut self, name: &str, value: f64, unit: &str, note: impl Into<String>) {
        self.rows.push(Row {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            note: note.into(),
        });
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.name == name).map(|r| r.value)
    }

    /// The table printed at the end.
    pub fn table(&self) -> String {
        let name_width = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let values: Vec<String> = self.rows.iter().map(|r| format_value(r.value)).collect();
        let value_width = values.iter().map(String::len).max().unwrap_or(5).max(5);
        let unit_width = self
            .rows
            .iter()
            .map(|r| r.unit.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut out = format!(
            "Tidings bench — {} cores, {} MiB RAM, load average {:.2} at start, {}{}\n\n",
            self.machine.cores,
            self.machine.ram_mib,
            self.machine.load_average_at_start,
            self.machine.date,
            if self.quick {
                " (--quick: tiny counts, not figures)"
            } else {
                ""
            }
        );
        out.push_str(&format!(
            "{:<name_width$}  {:>value_width$}  {:<unit_width$}  note\n",
            "name", "value", "unit"
        ));
        out.push_str(&format!(
            "{}  {}  {}  {}\n",
            "-".repeat(name_width),
            "-".repeat(value_width),
            "-".repeat(unit_width),
            "-".repeat(4)
        ));
        for (row, value) in self.rows.iter().zip(&values) {
            out.push_str(&format!(
                "{:<name_width$}  {:>value_width$}  {:<unit_width$}  {}\n",
                row.name, value, row.unit, row.note
            ));
        }
        out
    }
}

fn format_value(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

impl Machine {
    pub fn detect() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let ram_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|kib| kib.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib / 1024);
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let load_average_at_start = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        Self {
            cores,
            ram_mib,
            date,
            load_average_at_start,
        }
    }
}
