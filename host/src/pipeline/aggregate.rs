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
    /// re-apply it also to files whose names carry its own digest. By
    /// default those are read as written: the same compiled plugin produced
    /// them, and applying it again is a no-op. Set it when the plugin's
    /// `[plugin.config]` changed since they were written (or re-clean the
    /// dates once with `weir reprocess`).
    #[serde(default)]
    pub reapply_own_files: bool,
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
        match &self.sql {
            Some(sql) => sql.clone(),
            None => {
                let s = self.shorthand(partition_by, int_columns);
                let select: Vec<String> = s.outputs.iter().map(|o| o.select()).collect();
                format!(
                    "SELECT {keys},\n  {select}\nFROM (\n  {dedup}\n) deduplicated\nGROUP BY {keys}",
                    keys = s.keys,
                    select = select.join(",\n  "),
                    dedup = s.deduplicate.replace('\n', "\n  "),
                )
            }
        }
    }

    /// The aggregation as statements for a warehouse where the sort-based
    /// aggregates of one statement must share one `ORDER BY` (Redshift's
    /// rule for `PERCENTILE_CONT`, `MEDIAN`, `LISTAGG`). With percentiles
    /// of more than one column, the shorthand becomes: the de-duplicated
    /// rows in a temporary table, one temporary table of percentiles per
    /// column (one `ORDER BY` each), and a query joining them to the other
    /// statistics on the group keys (`nullable_keys` are joined null-safe).
    /// Otherwise, and for `sql` as written, it is [`Self::query`] alone.
    pub fn statements(
        &self,
        partition_by: &str,
        int_columns: &[&str],
        nullable_keys: &[&str],
    ) -> AggregationSql {
        let single = AggregationSql {
            setup: Vec::new(),
            select: self.query(partition_by, int_columns),
        };
        if self.sql.is_some() {
            return single;
        }
        let s = self.shorthand(partition_by, int_columns);
        let mut orders: Vec<&str> = Vec::new();
        for o in &s.outputs {
            if let Some(order) = o.sorted_by.as_deref()
                && !orders.contains(&order)
            {
                orders.push(order);
            }
        }
        if orders.len() <= 1 {
            return single;
        }
        let keys = &s.keys;
        let mut setup = vec![format!(
            "CREATE TEMP TABLE weir_deduplicated AS\n{}",
            s.deduplicate
        )];
        let mut joins = Vec::new();
        for (i, order) in orders.iter().enumerate() {
            let table = format!("weir_percentiles_{}", i + 1);
            let alias = format!("p{}", i + 1);
            let select: Vec<String> = s
                .outputs
                .iter()
                .filter(|o| o.sorted_by.as_deref() == Some(*order))
                .map(|o| o.select())
                .collect();
            setup.push(format!(
                "CREATE TEMP TABLE {table} AS\nSELECT {keys}, {}\nFROM weir_deduplicated\nGROUP BY {keys}",
                select.join(", ")
            ));
            let on: Vec<String> = self
                .group_by
                .iter()
                .map(|k| {
                    if nullable_keys.contains(&k.as_str()) {
                        format!("(d.{k} = {alias}.{k} OR (d.{k} IS NULL AND {alias}.{k} IS NULL))")
                    } else {
                        format!("d.{k} = {alias}.{k}")
                    }
                })
                .collect();
            joins.push(format!("LEFT JOIN {table} {alias} ON {}", on.join(" AND ")));
        }
        let direct: Vec<String> = s
            .outputs
            .iter()
            .filter(|o| o.sorted_by.is_none())
            .map(|o| o.select())
            .collect();
        let columns: Vec<String> = self
            .group_by
            .iter()
            .map(|k| format!("d.{k}"))
            .chain(s.outputs.iter().map(|o| match &o.sorted_by {
                None => format!("d.{}", o.name),
                Some(order) => {
                    let i = orders.iter().position(|x| x == order).unwrap_or(0);
                    format!("p{}.{}", i + 1, o.name)
                }
            }))
            .collect();
        AggregationSql {
            setup,
            select: format!(
                "SELECT {}\nFROM (\n  SELECT {keys}, {}\n  FROM weir_deduplicated\n  GROUP BY {keys}\n) d\n{}",
                columns.join(", "),
                direct.join(", "),
                joins.join("\n")
            ),
        }
    }

    /// The parts of the shorthand's query.
    fn shorthand(&self, partition_by: &str, int_columns: &[&str]) -> Shorthand {
        let distinct = self.distinct.as_deref().unwrap_or("event_id");
        let mut outputs = vec![Output {
            expr: "COUNT(*)".into(),
            name: self.events_column.clone(),
            sorted_by: None,
        }];
        for m in &self.metrics {
            let c = &m.column;
            let value = if int_columns.contains(&c.as_str()) {
                format!("CAST({c} AS DOUBLE PRECISION)")
            } else {
                c.clone()
            };
            for s in &m.stats {
                let (expr, sorted_by) = match Stat::parse(s) {
                    Ok(Stat::Samples) => (format!("COUNT({c})"), None),
                    Ok(Stat::Avg) => (format!("AVG({value})"), None),
                    Ok(Stat::Min) => (format!("MIN({value})"), None),
                    Ok(Stat::Max) => (format!("MAX({value})"), None),
                    Ok(Stat::Percentile(p)) if m.approximate => (
                        format!("approx_percentile_cont({p}) WITHIN GROUP (ORDER BY {value})"),
                        None,
                    ),
                    Ok(Stat::Percentile(p)) => (
                        format!("percentile_cont({p}) WITHIN GROUP (ORDER BY {value})"),
                        Some(value.clone()),
                    ),
                    Err(_) => continue,
                };
                outputs.push(Output {
                    expr,
                    name: m.output_column(s),
                    sorted_by,
                });
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
        Shorthand {
            keys: self.group_by.join(", "),
            outputs,
            deduplicate: format!(
                "SELECT {}\nFROM events\nWHERE {distinct} IS NOT NULL\nGROUP BY {partition_by}, {distinct}",
                inner.join(", ")
            ),
        }
    }
}

/// An aggregation as SQL statements: `setup` runs first (each creates a
/// temporary table), then `select` produces the warehouse table's rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregationSql {
    /// statements run before `select`, in order.
    pub setup: Vec<String>,
    /// the query producing the rows.
    pub select: String,
}

/// The shorthand's query in parts.
struct Shorthand {
    /// the group-by columns, comma-separated.
    keys: String,
    /// the statistics, in output order.
    outputs: Vec<Output>,
    /// the query keeping one row per (partition, event).
    deduplicate: String,
}

/// One statistic of the shorthand's query.
struct Output {
    /// the aggregate expression.
    expr: String,
    /// its output column.
    name: String,
    /// the `ORDER BY` value of a sort-based aggregate (exact percentiles).
    sorted_by: Option<String>,
}

impl Output {
    fn select(&self) -> String {
        format!("{} AS {}", self.expr, self.name)
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
    fn percentiles_of_two_columns_split_into_one_order_by_per_statement() {
        let config: AggregateConfig = toml::from_str(
            r#"
            group_by = ["event_date", "country"]
            distinct = "event_id"
            [[metrics]]
            column = "tti_ms"
            stats = ["samples", "p50", "p95"]
            [[metrics]]
            column = "bytes"
            stats = ["avg", "p75"]
            "#,
        )
        .unwrap();
        let split = config.statements("event_date", &["bytes"], &["country"]);
        assert_eq!(
            split.setup,
            [
                "CREATE TEMP TABLE weir_deduplicated AS\n\
                 SELECT event_date, event_id, MIN(country) AS country, MIN(tti_ms) AS tti_ms, MIN(bytes) AS bytes\n\
                 FROM events\nWHERE event_id IS NOT NULL\nGROUP BY event_date, event_id",
                "CREATE TEMP TABLE weir_percentiles_1 AS\n\
                 SELECT event_date, country, percentile_cont(0.5) WITHIN GROUP (ORDER BY tti_ms) AS p50_tti_ms, \
                 percentile_cont(0.95) WITHIN GROUP (ORDER BY tti_ms) AS p95_tti_ms\n\
                 FROM weir_deduplicated\nGROUP BY event_date, country",
                "CREATE TEMP TABLE weir_percentiles_2 AS\n\
                 SELECT event_date, country, percentile_cont(0.75) WITHIN GROUP (ORDER BY CAST(bytes AS DOUBLE PRECISION)) AS p75_bytes\n\
                 FROM weir_deduplicated\nGROUP BY event_date, country",
            ]
        );
        assert_eq!(
            split.select,
            "SELECT d.event_date, d.country, d.events, d.tti_ms_samples, p1.p50_tti_ms, p1.p95_tti_ms, d.avg_bytes, p2.p75_bytes\n\
             FROM (\n  SELECT event_date, country, COUNT(*) AS events, COUNT(tti_ms) AS tti_ms_samples, \
             AVG(CAST(bytes AS DOUBLE PRECISION)) AS avg_bytes\n  FROM weir_deduplicated\n  GROUP BY event_date, country\n) d\n\
             LEFT JOIN weir_percentiles_1 p1 ON d.event_date = p1.event_date AND \
             (d.country = p1.country OR (d.country IS NULL AND p1.country IS NULL))\n\
             LEFT JOIN weir_percentiles_2 p2 ON d.event_date = p2.event_date AND \
             (d.country = p2.country OR (d.country IS NULL AND p2.country IS NULL))"
        );
        // one column's percentiles share one ORDER BY: one statement
        let mut one = config.clone();
        one.metrics.truncate(1);
        let single = one.statements("event_date", &[], &[]);
        assert!(single.setup.is_empty());
        assert_eq!(single.select, one.query("event_date", &[]));
        // the query as written runs as written
        one.sql = Some("SELECT 1".into());
        assert_eq!(
            one.statements("event_date", &[], &[]),
            AggregationSql {
                setup: Vec::new(),
                select: "SELECT 1".into()
            }
        );
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
