//! Running the aggregation of date partitions: for each date, the embedded
//! engine ([`super::engine`]) runs `aggregate.sql` over the date's files
//! re-cleaned by the plugin, with every core; dates run one after the
//! other, and a failing date fails alone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use serde::Serialize;

use super::engine::{Engine, EventsTable, Tally};
use super::plan::PartitionPlan;
use crate::objstore::Location;
use crate::plugin::{LoadedPlugin, PluginEngine};

/// Why one date partition could not be aggregated.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The query failed: a file missing, unreadable or not Parquet, the
    /// plugin failing, or the SQL not fitting the rows.
    #[error("partition {date}: {message}")]
    Query {
        /// the date partition.
        date: String,
        /// what went wrong (DataFusion's message names the file).
        message: String,
    },
}

impl PartitionError {
    /// The date partition that failed.
    pub fn date(&self) -> &str {
        match self {
            PartitionError::Query { date, .. } => date,
        }
    }
}

/// What the aggregation of one partition read, excluded and produced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PartitionReport {
    /// the date partition.
    pub date: String,
    /// files read.
    pub files: usize,
    /// rows read from the files.
    pub rows_read: u64,
    /// of them, rows the plugin was re-applied to (the others were read as
    /// written: files of the plugin's own digest).
    pub rows_recleaned: u64,
    /// rows the re-applied plugin dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// rows the re-applied plugin rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// rows the plugin kept (the rows of `events`).
    pub rows_kept: u64,
    /// rows of `events` not counted as events (repeats of an event already
    /// counted, rows without an event key): the kept rows less the sum of
    /// the events column, when the output has one.
    pub duplicates: u64,
    /// bytes the engine spilled to disk while aggregating this partition.
    pub spilled_bytes: u64,
    /// aggregated rows produced (groups).
    pub groups: usize,
    /// wall time of the partition, in milliseconds.
    pub elapsed_ms: u64,
}

/// One aggregated partition: its plan, its rows and its report.
#[derive(Clone, Debug)]
pub struct Aggregated {
    /// what was read.
    pub plan: PartitionPlan,
    /// the aggregated rows, as the engine's batches.
    pub rows: Vec<RecordBatch>,
    /// counts.
    pub report: PartitionReport,
}

/// The result of one partition.
#[derive(Debug)]
pub enum Outcome {
    /// aggregated.
    Aggregated(Box<Aggregated>),
    /// the commit log names no files for the date.
    NoData(String),
    /// failed; the others are unaffected.
    Failed(PartitionError),
}

/// The plugin re-applied by the batch path.
#[derive(Clone)]
pub struct BatchPlugin {
    /// the engine (compile cache, limits).
    pub engine: Arc<PluginEngine>,
    /// the component.
    pub plugin: Arc<LoadedPlugin>,
    /// its configuration from the pipeline file.
    pub config: Vec<(String, String)>,
    /// read files it wrote itself as they are (their names carry its
    /// digest): the same compiled plugin produced them, and applying an
    /// idempotent plugin again is a no-op. Files of other digests (or of
    /// none, as compacted files) still go through it.
    pub skips_own_files: bool,
}

impl BatchPlugin {
    /// Whether the file at `path` is read as written: this plugin wrote it
    /// and [`BatchPlugin::skips_own_files`] is set.
    pub fn skips(&self, path: &str) -> bool {
        self.skips_own_files
            && super::plan::digest_of(path).is_some_and(|d| self.plugin.digest.starts_with(&d))
    }
}

impl std::fmt::Debug for BatchPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.plugin.label())
    }
}

/// Progress of a multi-partition run, reported after each partition.
#[derive(Clone, Debug)]
pub struct Progress {
    /// partitions finished so far.
    pub done: usize,
    /// partitions in the run.
    pub total: usize,
    /// files read so far.
    pub files: usize,
    /// rows read so far.
    pub rows: u64,
    /// the partition just finished.
    pub date: String,
}

/// What a run aggregates with: the engine, the lake, its schema, the SQL
/// and the plugin re-applied (if any).
#[derive(Clone, Debug)]
pub struct Job<'a> {
    /// the embedded engine.
    pub engine: &'a Engine,
    /// the data table's location.
    pub lake: &'a Location,
    /// the table's schema and partition column.
    pub source: &'a Source,
    /// the query over `events`.
    pub sql: &'a str,
    /// the column of the output counting events (for the report's duplicates).
    pub events_column: Option<&'a str>,
    /// the plugin re-applied to the lake's rows.
    pub plugin: Option<&'a BatchPlugin>,
}

/// Aggregate `plans`, one date after the other (each with every core),
/// reporting progress after each.
pub async fn aggregate_partitions(
    job: &Job<'_>,
    plans: Vec<PartitionPlan>,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Vec<Outcome> {
    let total = plans.len();
    let mut tally = Progress {
        done: 0,
        total,
        files: 0,
        rows: 0,
        date: String::new(),
    };
    let mut outcomes = Vec::with_capacity(total);
    for plan in plans {
        let date = plan.date.clone();
        let outcome = if plan.files.is_empty() {
            Outcome::NoData(date.clone())
        } else {
            match aggregate_one(job, plan).await {
                Ok(a) => Outcome::Aggregated(Box::new(a)),
                Err(e) => Outcome::Failed(e),
            }
        };
        tally.done += 1;
        tally.date = date;
        if let Outcome::Aggregated(a) = &outcome {
            tally.files += a.report.files;
            tally.rows += a.report.rows_read;
        }
        progress(&tally);
        outcomes.push(outcome);
    }
    outcomes
}

/// Aggregate one date partition.
async fn aggregate_one(job: &Job<'_>, plan: PartitionPlan) -> Result<Aggregated, PartitionError> {
    let started = Instant::now();
    let date = plan.date.clone();
    let events = job
        .source
        .events(job.lake, plan.files.clone(), job.plugin.cloned());
    let tally = events.tally.clone();
    let result = job
        .engine
        .run(job.sql, events)
        .await
        .map_err(|e| PartitionError::Query {
            date: date.clone(),
            message: e.to_string(),
        })?;
    // the batches as computed (a copy into one batch would double the
    // memory of a large date's rows)
    let rows = result.batches;
    let tally = tally.lock().expect("tally").clone();
    let events: i64 = job
        .events_column
        .map(|c| {
            rows.iter()
                .filter_map(|b| b.column_by_name(c))
                .filter_map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).ok())
                .filter_map(|c| {
                    arrow::compute::sum(c.as_any().downcast_ref::<arrow::array::Int64Array>()?)
                })
                .sum()
        })
        .unwrap_or(0);
    let report = PartitionReport {
        date,
        files: plan.files.len(),
        rows_read: tally.rows_read,
        rows_recleaned: tally.rows_recleaned,
        dropped: tally.dropped,
        rejected: tally.rejected,
        rows_kept: tally.rows_kept,
        duplicates: if job.events_column.is_some() {
            tally.rows_kept.saturating_sub(events.max(0) as u64)
        } else {
            0
        },
        spilled_bytes: result.spilled_bytes,
        groups: rows.iter().map(RecordBatch::num_rows).sum(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    Ok(Aggregated { plan, rows, report })
}

/// What the lake's files hold: the table's schema (the plugin's output for
/// the pipeline's input) and its partition column.
#[derive(Clone, Debug)]
pub struct Source {
    /// the data table's schema, partition column included.
    pub schema: arrow::datatypes::SchemaRef,
    /// the partition column (not stored in the files).
    pub partition_by: String,
}

impl Source {
    /// The relation `events` over `files` of `lake`, through `plugin` when
    /// given, with a fresh tally.
    pub fn events(
        &self,
        lake: &Location,
        files: Vec<crate::lake::LakeFile>,
        plugin: Option<BatchPlugin>,
    ) -> EventsTable {
        EventsTable {
            lake: Some(lake.clone()),
            schema: self.schema.clone(),
            partition_by: self.partition_by.clone(),
            files,
            plugin,
            tally: Arc::new(Mutex::new(Tally::default())),
        }
    }
}
