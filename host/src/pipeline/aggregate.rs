//! `[aggregate]`: what the batch path computes per date partition.
//!
//! ```toml
//! [aggregate]
//! group_by = ["event_date", "page_url"]
//! distinct = "event_id"          # de-duplicates rows; `events` counts its distinct values
//! max_partition_rows = 10000000  # memory bound, see `max_partition_rows`
//!
//! [[aggregate.metrics]]
//! column = "tti_ms"
//! name = "tti"                   # names the `tti_samples` column
//! stats = ["samples", "avg", "p50", "p75", "p95"]
//! ```

use serde::{Deserialize, Serialize};

/// The aggregation of one pipeline.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// group-by columns of the lake's rows; must include the lake's
    /// partition column (`event_date`), which is what a load replaces.
    pub group_by: Vec<String>,
    /// a column identifying an event: rows repeating a value already seen
    /// in the same date partition are duplicates (a message delivered
    /// twice) and are skipped, so the event and its metrics count once.
    /// Rows where it is null are skipped and counted as such.
    pub distinct: String,
    /// name of the output column counting distinct events per group.
    #[serde(default = "default_events_column")]
    pub events_column: String,
    /// the metric columns and their statistics.
    pub metrics: Vec<MetricSpec>,
    /// largest date partition (rows, as recorded in the commit log) that
    /// is aggregated. Percentiles are exact, so every metric value of a
    /// partition is held in memory: about 40 bytes per row plus the
    /// distinct key and 8 bytes per metric value, i.e. roughly 1 GiB at
    /// the default of 10 million rows for the web-vitals schema. A larger
    /// partition fails with "too large" instead of switching algorithms.
    #[serde(default = "default_max_partition_rows")]
    pub max_partition_rows: u64,
    /// date partitions aggregated at once (each holds its own plugin
    /// instance and memory); 0 means one per CPU core.
    #[serde(default)]
    pub workers: usize,
    /// rows per record batch read from Parquet and handed to the plugin.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// re-apply the pipeline's plugin to the lake's rows (the contract
    /// makes it idempotent; rows it now drops or rejects are reported).
    #[serde(default = "default_true")]
    pub reapply_plugin: bool,
}

fn default_events_column() -> String {
    "events".into()
}
fn default_max_partition_rows() -> u64 {
    10_000_000
}
fn default_batch_rows() -> usize {
    8192
}
fn default_true() -> bool {
    true
}

/// One metric column and the statistics wanted for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// the lake column (int64 or float64); nulls are not samples.
    pub column: String,
    /// short name for the samples column (`{name}_samples`); defaults to
    /// the column name.
    pub name: Option<String>,
    /// any of `samples`, `avg`, `min`, `max`, `pNN` (0 ≤ NN ≤ 100, a
    /// percentile computed like PostgreSQL's `percentile_cont`). The
    /// output column is `{name}_samples` for samples, else `{stat}_{column}`.
    pub stats: Vec<String>,
}

/// One statistic of a metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stat {
    /// non-null values after de-duplication.
    Samples,
    /// arithmetic mean.
    Avg,
    /// smallest value.
    Min,
    /// largest value.
    Max,
    /// continuous percentile, the fraction in 0..=1.
    Percentile(f64),
}

impl Stat {
    /// Parse `samples`, `avg`, `min`, `max` or `pNN`.
    pub fn parse(text: &str) -> Result<Stat, String> {
        match text {
            "samples" => Ok(Stat::Samples),
            "avg" => Ok(Stat::Avg),
            "min" => Ok(Stat::Min),
            "max" => Ok(Stat::Max),
            _ => text
                .strip_prefix('p')
                .and_then(|n| n.parse::<u8>().ok())
                .filter(|n| *n <= 100)
                .map(|n| Stat::Percentile(f64::from(n) / 100.0))
                .ok_or_else(|| {
                    format!(
                        "unknown statistic `{text}`: expected samples, avg, min, max or p0..p100"
                    )
                }),
        }
    }
}

impl MetricSpec {
    /// The output column of one statistic.
    pub fn output_column(&self, stat_text: &str) -> String {
        if stat_text == "samples" {
            format!("{}_samples", self.name.as_deref().unwrap_or(&self.column))
        } else {
            format!("{stat_text}_{}", self.column)
        }
    }
}

impl AggregateConfig {
    /// Check what can be checked without the lake's schema; the dotted key
    /// and the message of the first problem.
    pub fn validate(&self, partition_by: &str) -> Result<(), (String, String)> {
        if self.group_by.is_empty() {
            return Err((
                "aggregate.group_by".into(),
                "expected at least one column".into(),
            ));
        }
        if !self.group_by.iter().any(|c| c == partition_by) {
            return Err((
                "aggregate.group_by".into(),
                format!(
                    "must include the lake's partition column `{partition_by}` (a load replaces whole date partitions)"
                ),
            ));
        }
        if self.metrics.is_empty() {
            return Err((
                "aggregate.metrics".into(),
                "expected at least one metric".into(),
            ));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            if m.stats.is_empty() {
                return Err((
                    format!("aggregate.metrics[{i}].stats"),
                    "expected at least one statistic".into(),
                ));
            }
            for s in &m.stats {
                Stat::parse(s).map_err(|e| (format!("aggregate.metrics[{i}].stats"), e))?;
            }
        }
        if self.batch_rows == 0 {
            return Err((
                "aggregate.batch_rows".into(),
                "expected a positive number".into(),
            ));
        }
        Ok(())
    }

    /// Every output column name in order: group-by columns, the events
    /// column, then each metric's statistics.
    pub fn output_columns(&self) -> Vec<String> {
        let mut out = self.group_by.clone();
        out.push(self.events_column.clone());
        for m in &self.metrics {
            out.extend(m.stats.iter().map(|s| m.output_column(s)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_parse_and_name_columns() {
        assert_eq!(Stat::parse("p75"), Ok(Stat::Percentile(0.75)));
        assert_eq!(Stat::parse("p100"), Ok(Stat::Percentile(1.0)));
        assert!(Stat::parse("p101").is_err());
        assert!(Stat::parse("median").is_err());
        let m = MetricSpec {
            column: "tti_ms".into(),
            name: Some("tti".into()),
            stats: vec!["samples".into(), "avg".into(), "p50".into()],
        };
        let names: Vec<String> = m.stats.iter().map(|s| m.output_column(s)).collect();
        assert_eq!(names, ["tti_samples", "avg_tti_ms", "p50_tti_ms"]);
    }
}
