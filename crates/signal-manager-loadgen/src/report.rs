//! What a run prints: one JSON line on stdout (for scripts), a short human
//! summary on stderr, and a once-a-second progress line on stderr meanwhile.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::proc_stats::CpuUsage;
use super::Common;

/// A finished run.
pub struct Report {
    fields: Map<String, Value>,
    summary: Vec<String>,
    failures: Vec<String>,
}

impl Report {
    /// An empty report for `scenario`, carrying the label and the target count.
    pub fn new(scenario: &str, common: &Common) -> Report {
        let mut fields = Map::new();
        fields.insert("scenario".into(), json!(scenario));
        fields.insert("label".into(), json!(common.label));
        fields.insert("nodes".into(), json!(common.urls.len()));
        fields.insert(
            "codec".into(),
            json!(format!("{:?}", common.codec).to_lowercase()),
        );
        Report {
            fields,
            summary: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Sets a JSON field.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a line to the human summary.
    pub fn line(&mut self, text: impl Into<String>) -> &mut Self {
        self.summary.push(text.into());
        self
    }

    /// Marks the run failed, with why.
    pub fn fail(&mut self, why: impl Into<String>) -> &mut Self {
        self.failures.push(why.into());
        self
    }

    /// Whether nothing failed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Records the CPU used in the measured window; `units` is what the
    /// per-unit figure divides by (delivered signals, connections).
    pub fn cpu(&mut self, usage: &CpuUsage, units: u64, unit: &str) -> &mut Self {
        let round = |v: Option<f64>| v.map(|s| (s * 1000.0).round() / 1000.0);
        self.set(
            "cpu",
            json!({
                "window_s": (usage.wall_seconds * 1000.0).round() / 1000.0,
                "nodes_s": usage.nodes.iter().map(|v| round(*v)).collect::<Vec<_>>(),
                "redis_s": round(usage.redis),
                "loadgen_s": round(usage.loadgen),
                "server_s": round(Some(usage.server_seconds())),
            }),
        );
        let per = usage.micros_per(units);
        self.set(
            &format!("cpu_us_per_{unit}"),
            json!(per.map(|v| (v * 100.0).round() / 100.0)),
        );
        let cores = usage.server_seconds() / usage.wall_seconds.max(1e-9);
        self.line(format!(
            "server CPU {:.2} s over {:.1} s ({cores:.2} cores): nodes {}, redis {}, loadgen {}; {} µs per {unit}",
            usage.server_seconds(),
            usage.wall_seconds,
            usage
                .nodes
                .iter()
                .map(|v| v.map_or("?".into(), |s| format!("{s:.2}")))
                .collect::<Vec<_>>()
                .join("+"),
            usage.redis.map_or("?".into(), |s| format!("{s:.2}")),
            usage.loadgen.map_or("?".into(), |s| format!("{s:.2}")),
            per.map_or("?".into(), |v| format!("{v:.1}")),
        ))
    }

    /// Prints the JSON line on stdout and the summary on stderr.
    pub fn print(&self) {
        let mut fields = self.fields.clone();
        fields.insert("pass".into(), json!(self.passed()));
        fields.insert("failures".into(), json!(self.failures));
        let scenario = fields["scenario"].as_str().unwrap_or("?").to_owned();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err);
        for line in &self.summary {
            let _ = writeln!(err, "[{scenario}] {line}");
        }
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(err, "[{scenario}] {verdict} {}", self.failures.join("; "));
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", Value::Object(fields));
        let _ = out.flush();
    }
}

/// Percentiles of a latency histogram in microseconds, as JSON.
pub fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!(null);
    }
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.50),
        "p90_us": h.value_at_quantile(0.90),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
        "mean_us": (h.mean() * 10.0).round() / 10.0,
    })
}

/// One line of percentiles for the summary.
pub fn percentile_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples)",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
        h.len()
    )
}

/// A latency histogram from 1 µs to 5 minutes at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Constant bounds within hdrhistogram's limits (low >= 1, high >= 2 *
    // low, at most 5 significant digits): construction cannot fail.
    Histogram::new_with_bounds(1, 300_000_000, 3).expect("constant histogram bounds are valid")
}

/// Prints `status()` on stderr once a second until dropped.
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts the progress line for `scenario`.
    pub fn start(
        scenario: &'static str,
        status: Arc<dyn Fn() -> String + Send + Sync>,
    ) -> Progress {
        let started = Instant::now();
        let tty = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let line = format!(
                    "[{scenario}] {:>4.0}s {}",
                    started.elapsed().as_secs_f64(),
                    status()
                );
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r\x1b[2K{line}");
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
            }
        });
        Progress { task }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}
