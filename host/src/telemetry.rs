//! Prometheus metrics of one weir process, rendered in the text exposition
//! format at `GET /metrics`. Counters of the streaming path advance when a
//! commit record is written (so they match the exit summary); the plugin
//! digest in use is the `digest` label of `weir_plugin_info`.

/// `println!` that never panics: a closed stdout (`weir ... | head`) is
/// not an error of weir's.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics: a closed stderr pipe must not turn an
/// exit code into 101 (a panic).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Every metric of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// messages read (committed).
    pub events_read: AtomicU64,
    /// events kept (committed).
    pub events_kept: AtomicU64,
    /// events dropped by the plugin (committed).
    pub events_dropped: AtomicU64,
    /// messages dead-lettered (committed).
    pub events_dead_lettered: AtomicU64,
    /// bytes of files written.
    pub bytes_written: AtomicU64,
    /// files written.
    pub files_written: AtomicU64,
    /// commit records written.
    pub commits: AtomicU64,
    /// flushes lost to another host's commit.
    pub commit_conflicts: AtomicU64,
    /// events dropped by the plugin, by reason (as processed).
    pub dropped_by_reason: Mutex<BTreeMap<String, u64>>,
    /// consumer lag per `topic/partition`.
    pub consumer_lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// encode + write of a flush's files.
    pub flush_seconds: Histogram,
    /// the create-only commit put.
    pub commit_seconds: Histogram,
    /// one plugin call (a batch).
    pub plugin_batch_seconds: Histogram,
    /// digest of the plugin in use.
    pub plugin_digest: Mutex<String>,
    /// plugin versions switched to.
    pub plugin_swaps: AtomicU64,
    /// plugin versions refused.
    pub plugin_swaps_refused: AtomicU64,
    /// orchestrator runs (attempts).
    pub orchestrator_runs: AtomicU64,
    /// orchestrator partitions failed after every attempt.
    pub orchestrator_failures: AtomicU64,
    /// 1 while consumption is paused because the lake is unreachable.
    pub ingest_paused: AtomicU64,
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Events of one plugin call dropped, by reason (one lock per batch).
    pub fn dropped<'a>(&self, reasons: impl IntoIterator<Item = &'a str>) {
        let mut counts = self.dropped_by_reason.lock().expect("metrics");
        for reason in reasons {
            crate::tally(&mut counts, reason);
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "weir_events_read_total",
            "Kafka messages read (counted at commit).",
            load(&self.events_read),
        );
        counter(
            &mut out,
            "weir_events_kept_total",
            "Events kept and written to the lake.",
            load(&self.events_kept),
        );
        counter(
            &mut out,
            "weir_events_dropped_total",
            "Events the plugin dropped (counted at commit).",
            load(&self.events_dropped),
        );
        counter(
            &mut out,
            "weir_events_dead_lettered_total",
            "Messages written to the dead letters.",
            load(&self.events_dead_lettered),
        );
        counter(
            &mut out,
            "weir_bytes_written_total",
            "Bytes of Parquet written to the lake.",
            load(&self.bytes_written),
        );
        counter(
            &mut out,
            "weir_files_written_total",
            "Files written to the lake.",
            load(&self.files_written),
        );
        counter(
            &mut out,
            "weir_commits_total",
            "Commit records written.",
            load(&self.commits),
        );
        counter(
            &mut out,
            "weir_commit_conflicts_total",
            "Flushes abandoned because another host committed the range.",
            load(&self.commit_conflicts),
        );
        let _ = writeln!(
            out,
            "# HELP weir_events_dropped_by_reason_total Events the plugin dropped, by reason.\n# TYPE weir_events_dropped_by_reason_total counter"
        );
        for (reason, n) in self.dropped_by_reason.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "weir_events_dropped_by_reason_total{{reason=\"{}\"}} {n}",
                escape(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP weir_consumer_lag Messages behind the partition's end offset.\n# TYPE weir_consumer_lag gauge"
        );
        for ((topic, partition), lag) in self.consumer_lag.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "weir_consumer_lag{{topic=\"{}\",partition=\"{partition}\"}} {lag}",
                escape(topic)
            );
        }
        self.flush_seconds.render(
            &mut out,
            "weir_flush_seconds",
            "Encoding and writing one flush's files.",
        );
        self.commit_seconds.render(
            &mut out,
            "weir_commit_seconds",
            "Writing one commit record.",
        );
        self.plugin_batch_seconds.render(
            &mut out,
            "weir_plugin_batch_seconds",
            "One plugin call over a batch.",
        );
        let digest = self.plugin_digest.lock().expect("metrics").clone();
        let _ = writeln!(
            out,
            "# HELP weir_plugin_info The plugin in use.\n# TYPE weir_plugin_info gauge\nweir_plugin_info{{digest=\"{}\"}} 1",
            escape(&digest)
        );
        counter(
            &mut out,
            "weir_plugin_swaps_total",
            "Plugin versions switched to.",
            load(&self.plugin_swaps),
        );
        counter(
            &mut out,
            "weir_plugin_swaps_refused_total",
            "Plugin versions refused.",
            load(&self.plugin_swaps_refused),
        );
        counter(
            &mut out,
            "weir_orchestrator_runs_total",
            "Aggregation attempts by the orchestrator.",
            load(&self.orchestrator_runs),
        );
        counter(
            &mut out,
            "weir_orchestrator_failures_total",
            "Partitions failed after every attempt.",
            load(&self.orchestrator_failures),
        );
        let _ = writeln!(
            out,
            "# HELP weir_ingest_paused 1 while consumption is paused (lake unreachable).\n# TYPE weir_ingest_paused gauge\nweir_ingest_paused {}",
            load(&self.ingest_paused)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_labels_and_histograms() {
        let m = Metrics::default();
        m.events_read.fetch_add(3, Ordering::Relaxed);
        m.dropped(["bot \"x\""]);
        m.flush_seconds.observe(Duration::from_millis(30));
        *m.plugin_digest.lock().unwrap() = "abc".into();
        let text = m.render();
        assert!(text.contains("weir_events_read_total 3\n"));
        assert!(text.contains("weir_events_dropped_by_reason_total{reason=\"bot \\\"x\\\"\"} 1"));
        assert!(text.contains("weir_flush_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("weir_flush_seconds_bucket{le=\"0.025\"} 0"));
        assert!(text.contains("weir_plugin_info{digest=\"abc\"} 1"));
    }
}
