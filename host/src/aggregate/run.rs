//! Running the aggregation of date partitions: each partition's committed
//! files are streamed row group by row group from the lake, re-run through
//! the pipeline's plugin and fed to the kernel. Partitions run in parallel
//! (one worker per core by default), each with its own plugin instance; a
//! failing partition fails alone.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
// deprecated in parquet 59 in favour of a hand-written AsyncFileReader; the
// batch path moves to DataFusion's Parquet scan (issue 13), which replaces it
#[allow(deprecated)]
use parquet::arrow::async_reader::ParquetObjectReader;
use serde::Serialize;

use super::config::AggregateConfig;
use super::kernel::{Aggregator, KernelCounts, Resolved};
use super::plan::PartitionPlan;
use crate::lake::{LakeFile, conform};
use crate::objstore::Location;
use crate::pipeline::DeclaredSchema;
use crate::plugin::{LoadedPlugin, PluginEngine, PluginRunner, Verdict};

/// Why one date partition could not be aggregated.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// A committed file is missing, unreadable or not Parquet.
    #[error("partition {date}: file {path}: {error}")]
    File {
        /// the date partition.
        date: String,
        /// the file, relative to the lake root.
        path: String,
        /// what went wrong.
        error: String,
    },
    /// More rows than `aggregate.max_partition_rows`.
    #[error(
        "partition {date}: too large: {rows} rows committed, aggregate.max_partition_rows is {limit}"
    )]
    TooLarge {
        /// the date partition.
        date: String,
        /// rows the commit log names.
        rows: u64,
        /// the configured bound.
        limit: u64,
    },
    /// The plugin or the aggregation does not fit the lake's rows.
    #[error("partition {date}: file {path}: {message}")]
    Schema {
        /// the date partition.
        date: String,
        /// the file whose rows did not fit.
        path: String,
        /// what does not fit.
        message: String,
    },
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
    /// rows the re-applied plugin dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// rows the re-applied plugin rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// rows skipped as repeats of an event already counted.
    pub duplicates: u64,
    /// rows skipped for a null event key.
    pub null_keys: u64,
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
    /// the aggregated rows.
    pub rows: RecordBatch,
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

/// Aggregate `plans` from `lake`, reporting progress after each partition.
/// Blocks the calling thread (not a runtime worker); file reads run on `rt`.
pub fn aggregate_partitions(
    lake: &Location,
    source: &Source,
    config: &AggregateConfig,
    plugin: Option<&BatchPlugin>,
    plans: Vec<PartitionPlan>,
    rt: &tokio::runtime::Handle,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Vec<Outcome> {
    let total = plans.len();
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, total.max(1));
    let queue = Mutex::new(plans.into_iter().enumerate().collect::<VecDeque<_>>());
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::with_capacity(total));
    let tally = Mutex::new(Progress {
        done: 0,
        total,
        files: 0,
        rows: 0,
        date: String::new(),
    });
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let Some((i, plan)) = queue.lock().expect("queue").pop_front() else {
                        break;
                    };
                    let date = plan.date.clone();
                    let outcome = if plan.files.is_empty() {
                        Outcome::NoData(date.clone())
                    } else {
                        match aggregate_one(lake, source, config, plugin, plan, rt) {
                            Ok(a) => Outcome::Aggregated(Box::new(a)),
                            Err(e) => Outcome::Failed(e),
                        }
                    };
                    let snapshot = {
                        let mut t = tally.lock().expect("tally");
                        t.done += 1;
                        t.date = date;
                        if let Outcome::Aggregated(a) = &outcome {
                            t.files += a.report.files;
                            t.rows += a.report.rows_read;
                        }
                        t.clone()
                    };
                    progress(&snapshot);
                    results.lock().expect("results").push((i, outcome));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, o)| o).collect()
}

/// Aggregate one partition.
fn aggregate_one(
    lake: &Location,
    source: &Source,
    config: &AggregateConfig,
    plugin: Option<&BatchPlugin>,
    plan: PartitionPlan,
    rt: &tokio::runtime::Handle,
) -> Result<Aggregated, PartitionError> {
    let started = Instant::now();
    let date = plan.date.clone();
    if plan.rows > config.max_partition_rows {
        return Err(PartitionError::TooLarge {
            date,
            rows: plan.rows,
            limit: config.max_partition_rows,
        });
    }
    let mut report = PartitionReport {
        date: date.clone(),
        ..Default::default()
    };
    let mut runner: Option<PluginRunner> = None;
    let mut aggregator: Option<Aggregator> = None;
    for file in &plan.files {
        let file_error = |error: String| PartitionError::File {
            date: date.clone(),
            path: file.path.clone(),
            error,
        };
        let schema_error = |message: String| PartitionError::Schema {
            date: date.clone(),
            path: file.path.clone(),
            message,
        };
        let mut stream = rt
            .block_on(open(lake, file, config.batch_rows))
            .map_err(&file_error)?;
        if aggregator.is_none() {
            let spec = Resolved::new(config, &source.schema).map_err(&schema_error)?;
            aggregator = Some(Aggregator::new(spec).map_err(&schema_error)?);
        }
        if let (Some(p), None) = (plugin, &runner) {
            runner = Some(start_plugin(p, &source.schema).map_err(&schema_error)?);
        }
        let aggregator = aggregator.as_mut().expect("set above");
        while let Some(batch) = rt.block_on(stream.next()) {
            let batch = batch.map_err(|e| file_error(e.to_string()))?;
            let batch = conform(
                &batch,
                &source.schema,
                &source.partition_by,
                file.partition_value.as_deref(),
            )
            .map_err(&schema_error)?;
            report.rows_read += batch.num_rows() as u64;
            match runner.as_mut() {
                Some(runner) => {
                    let processed = runner.process(&batch);
                    for e in &processed.excluded {
                        let bucket = match e.verdict {
                            Verdict::Drop => &mut report.dropped,
                            Verdict::Reject => &mut report.rejected,
                        };
                        crate::tally(bucket, &e.reason);
                    }
                    aggregator.push(&processed.batch).map_err(&schema_error)?;
                }
                None => aggregator.push(&batch).map_err(&schema_error)?,
            }
        }
        report.files += 1;
    }
    let aggregator = aggregator.expect("a partition with files has an aggregator");
    let KernelCounts {
        duplicates,
        null_keys,
        ..
    } = aggregator.counts();
    report.duplicates = duplicates;
    report.null_keys = null_keys;
    let rows = aggregator
        .finish()
        .map_err(|message| PartitionError::Schema {
            date: date.clone(),
            path: String::new(),
            message,
        })?;
    report.groups = rows.num_rows();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
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

/// Start streaming one committed file.
#[allow(deprecated)]
async fn open(
    lake: &Location,
    file: &LakeFile,
    batch_rows: usize,
) -> Result<parquet::arrow::async_reader::ParquetRecordBatchStream<ParquetObjectReader>, String> {
    let reader = ParquetObjectReader::new(lake.store().clone(), lake.key(&file.path))
        .with_file_size(file.bytes);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| e.to_string())?;
    builder
        .with_batch_size(batch_rows)
        .build()
        .map_err(|e| e.to_string())
}

/// Instantiate the plugin over the lake's own schema: by contract it
/// declares that same schema back.
fn start_plugin(
    plugin: &BatchPlugin,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<PluginRunner, String> {
    let declared = DeclaredSchema::from_arrow(schema).map_err(|e| e.to_string())?;
    let runner = PluginRunner::new(
        plugin.engine.clone(),
        plugin.plugin.clone(),
        &declared,
        &plugin.config,
    )
    .map_err(|e| e.to_string())?;
    if runner.output_schema() != &declared {
        return Err(format!(
            "plugin {} given the lake's schema declares a different output ({}); the batch path needs an idempotent plugin",
            plugin.plugin.label(),
            runner.output_schema()
        ));
    }
    Ok(runner)
}
