//! `[aggregate]`: what the batch path computes per date partition, and how.
//!
//! The aggregation is SQL over the relation `events` (the plugin-cleaned
//! rows of the dates being aggregated); its rows are the warehouse table's.
//! Without `sql`, the shorthand below generates the query (see
//! [`AggregateConfig::query`]):
//!
//! ```toml
//! [aggregate]
//! group_by = ["event_date", "page_url"]
//! distinct = "event_id"          # de-duplicates rows; `events` counts its distinct values
//! memory_limit = "1GiB"          # past it the engine spills to spill_dir
//!
//! [[aggregate.metrics]]
//! column = "tti_ms"
//! name = "tti"                   # names the `tti_samples` column
//! stats = ["samples", "avg", "p50", "p75", "p95"]
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The aggregation of one pipeline.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// the query over `events` producing the warehouse table's rows. It
    /// must output the lake's partition column (a load replaces whole date
    /// partitions). Write SQL that DataFusion, PostgreSQL and Redshift all
    /// accept (`ROW_NUMBER() OVER (...) = 1` rather than `DISTINCT ON`) and
    /// the same text runs in every engine. Without it, the query is
    /// generated from `group_by`, `distinct` and `metrics`.
    pub sql: Option<String>,
    /// shorthand: group-by columns of the lake's rows; must include the
    /// lake's partition column (`event_date`).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// shorthand: a column identifying an event: rows repeating a value
    /// already seen in the same date partition are duplicates (a message
    /// delivered twice) and count once. Rows where it is null are left out.
    pub distinct: Option<String>,
    /// shorthand: name of the output column counting distinct events per group.
    #[serde(default = "default_events_column")]
    pub events_column: String,
    /// shorthand: the metric columns and their statistics.
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
    /// where the query runs: `embedded` (DataFusion in weir, the default)
    /// or `warehouse` (PostgreSQL: the cleaned rows of the dates are copied
    /// into a temporary table `events` and the same SQL runs inside the
    /// warehouse, in the load's transaction; for days that outgrow the host).
    #[serde(default)]
    pub engine: AggregateEngine,
    /// memory the engine's queries may hold (`"512MiB"`, `"2GB"`, bytes);
    /// past it, sorts and aggregations spill to `spill_dir`. No limit when
    /// absent. A big date is never refused: it spills.
    pub memory_limit: Option<String>,
    /// directory of spill files (the system's temporary directory when absent).
    pub spill_dir: Option<PathBuf>,
    /// partitions (threads) per query; 0 means one per CPU core.
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

/// Where the aggregation's SQL runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggregateEngine {
    /// DataFusion inside weir.
    #[default]
    Embedded,
    /// the warehouse itself.
    Warehouse,
}

fn default_events_column() -> String {
    "events".into()
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
    /// percentiles by t-digest (`approx_percentile_cont`, DataFusion only)
    /// instead of exact ones: bounded memory per group, a small error.
    #[serde(default)]
    pub approximate: bool,
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
        if let Some(limit) = &self.memory_limit {
            parse_bytes(limit).map_err(|m| ("aggregate.memory_limit".to_string(), m))?;
        }
        if self.batch_rows == 0 {
            return Err((
                "aggregate.batch_rows".into(),
                "expected a positive number".into(),
            ));
        }
        if let Some(sql) = &self.sql {
            if sql.trim().is_empty() {
                return Err(("aggregate.sql".into(), "expected a query".into()));
            }
            return Ok(());
        }
        if self.group_by.is_empty() {
            return Err((
                "aggregate.group_by".into(),
                "expected at least one column (or aggregate.sql)".into(),
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
        if self.distinct.is_none() {
            return Err((
                "aggregate.distinct".into(),
                "expected the column identifying an event (or aggregate.sql)".into(),
            ));
        }
        if self.metrics.is_empty() {
            return Err((
                "aggregate.metrics".into(),
                "expected at least one metric (or aggregate.sql)".into(),
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
        Ok(())
    }

    /// `memory_limit` in bytes.
    pub fn memory_limit_bytes(&self) -> Option<u64> {
        self.memory_limit
            .as_deref()
            .and_then(|l| parse_bytes(l).ok())
    }

    /// The column of the output counting events, when the shorthand is used.
    pub fn events_output(&self) -> Option<&str> {
        self.sql.is_none().then_some(self.events_column.as_str())
    }

    /// The query: `sql` as written, or the one the shorthand stands for.
    /// The shorthand's query keeps one row per (partition, `distinct`)
    /// value (`GROUP BY` with `MIN` of the other columns) and computes each statistic with
    /// `COUNT`, `AVG`, `MIN`, `MAX` and `percentile_cont(p) WITHIN GROUP
    /// (ORDER BY c)` (`approx_percentile_cont` for approximate metrics),
    /// values as DOUBLE PRECISION. `int_columns` names the integer metric
    /// columns (their values are cast).
    pub fn query(&self, partition_by: &str, int_columns: &[&str]) -> String {
        if let Some(sql) = &self.sql {
            return sql.clone();
        }
        let distinct = self.distinct.as_deref().unwrap_or("event_id");
        let keys = self.group_by.join(", ");
        let mut select = vec![keys.clone(), format!("COUNT(*) AS {}", self.events_column)];
        for m in &self.metrics {
            let c = &m.column;
            let value = if int_columns.contains(&c.as_str()) {
                format!("CAST({c} AS DOUBLE PRECISION)")
            } else {
                c.clone()
            };
            for s in &m.stats {
                let out = m.output_column(s);
                let expr = match Stat::parse(s) {
                    Ok(Stat::Samples) => format!("COUNT({c})"),
                    Ok(Stat::Avg) => format!("AVG({value})"),
                    Ok(Stat::Min) => format!("MIN({value})"),
                    Ok(Stat::Max) => format!("MAX({value})"),
                    Ok(Stat::Percentile(p)) => {
                        let function = if m.approximate {
                            "approx_percentile_cont"
                        } else {
                            "percentile_cont"
                        };
                        format!("{function}({p}) WITHIN GROUP (ORDER BY {value})")
                    }
                    Err(_) => continue,
                };
                select.push(format!("{expr} AS {out}"));
            }
        }
        // one row per (partition, event): a hash aggregation (a sort of
        // every row, as ROW_NUMBER() needs, costs twice the time); repeats
        // of an event are deliveries of the same message, so MIN keeps
        // its values
        let mut carried: Vec<&str> = self
            .group_by
            .iter()
            .map(String::as_str)
            .filter(|c| *c != partition_by && *c != distinct)
            .collect();
        for m in &self.metrics {
            if !carried.contains(&m.column.as_str()) && m.column != distinct {
                carried.push(&m.column);
            }
        }
        let inner: Vec<String> = [partition_by.to_string(), distinct.to_string()]
            .into_iter()
            .chain(carried.iter().map(|c| format!("MIN({c}) AS {c}")))
            .collect();
        format!(
            "SELECT {select}\nFROM (\n  SELECT {inner}\n  FROM events\n  WHERE {distinct} IS NOT NULL\n  GROUP BY {partition_by}, {distinct}\n) deduplicated\nGROUP BY {keys}",
            select = select.join(",\n  "),
            inner = inner.join(", "),
        )
    }
}

/// Bytes in `"512MiB"`, `"2GB"`, `"1g"` or `"1073741824"` (binary and
/// decimal units, case-insensitive).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a size such as 512MiB or 2GB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ));
        }
    };
    Ok((number * scale as f64) as u64)
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
            approximate: false,
        };
        let names: Vec<String> = m.stats.iter().map(|s| m.output_column(s)).collect();
        assert_eq!(names, ["tti_samples", "avg_tti_ms", "p50_tti_ms"]);
    }

    #[test]
    fn the_shorthand_generates_portable_sql() {
        let config: AggregateConfig = toml::from_str(
            r#"
            group_by = ["event_date", "page_url"]
            distinct = "event_id"
            [[metrics]]
            column = "tti_ms"
            name = "tti"
            stats = ["samples", "avg", "p95"]
            [[metrics]]
            column = "bytes"
            stats = ["max"]
            approximate = true
            "#,
        )
        .unwrap();
        assert_eq!(config.validate("event_date"), Ok(()));
        let sql = config.query("event_date", &["bytes"]);
        assert_eq!(
            sql,
            "SELECT event_date, page_url,\n  COUNT(*) AS events,\n  COUNT(tti_ms) AS tti_samples,\n  \
             AVG(tti_ms) AS avg_tti_ms,\n  percentile_cont(0.95) WITHIN GROUP (ORDER BY tti_ms) AS p95_tti_ms,\n  \
             MAX(CAST(bytes AS DOUBLE PRECISION)) AS max_bytes\nFROM (\n  \
             SELECT event_date, event_id, MIN(page_url) AS page_url, MIN(tti_ms) AS tti_ms, MIN(bytes) AS bytes\n  \
             FROM events\n  WHERE event_id IS NOT NULL\n  GROUP BY event_date, event_id\n) deduplicated\n\
             GROUP BY event_date, page_url"
        );
        let mut own = config.clone();
        own.sql = Some("SELECT 1".into());
        assert_eq!(own.query("event_date", &[]), "SELECT 1");
        assert_eq!(own.events_output(), None);
        assert_eq!(config.events_output(), Some("events"));
    }

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
