//! The batch job as one call, shared by `weir aggregate` and the
//! orchestrator: plan date partitions from the data table's Delta snapshot,
//! aggregate them
//! (re-applying the plugin), and load every partition that succeeded into
//! the warehouse in one transaction, with its audit rows.

use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use serde::Serialize;

use crate::aggregate::PartitionPlan;
use crate::aggregate::{
    self, AggregateConfig, BatchPlugin, Outcome, PartitionReport, Progress, Resolved, Selection,
};
use crate::lake::{Lake, LakeError};
use crate::pipeline::Pipeline;
use crate::plugin::{PluginEngine, PluginError, PluginRunner};
use crate::warehouse::{AuditRow, LoadRequest, TableSpec, Warehouse, WarehouseError};

/// Why the batch job could not run or load.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The pipeline lacks or misconfigures a section.
    #[error("{file}: {message}")]
    Config {
        /// the pipeline file.
        file: String,
        /// what is wrong.
        message: String,
    },
    /// The lake's tables cannot be read.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// The plugin cannot be loaded.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The warehouse refused or failed the load.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// An aggregation worker panicked (a bug); the run failed and nothing was loaded.
    #[error("aggregation worker failed: {0}")]
    Worker(String),
}

/// How the batch job runs.
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// the date partitions.
    pub selection: Selection,
    /// delete the warehouse rows of selected dates that have no data.
    pub replace_empty: bool,
}

/// What happened to one date partition.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionStatus {
    /// aggregated and loaded.
    Loaded,
    /// no committed files; warehouse rows left as they are.
    NoData,
    /// no committed files; warehouse rows deleted (`--replace-empty`).
    ReplacedEmpty,
    /// aggregation failed; warehouse rows left as they are.
    Failed,
}

/// One partition in the summary.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionSummary {
    /// the date.
    pub date: String,
    /// what happened.
    pub status: PartitionStatus,
    /// counts, when aggregated.
    pub report: Option<PartitionReport>,
    /// the data table's version the date was read at.
    pub version: Option<i64>,
    /// the error, when failed.
    pub error: Option<String>,
}

/// The outcome of a batch run.
#[derive(Clone, Debug, Serialize)]
pub struct BatchSummary {
    /// names this load in the audit table.
    pub load_id: String,
    /// pipeline name.
    pub pipeline: String,
    /// the warehouse and table.
    pub warehouse: String,
    /// the table loaded.
    pub table: String,
    /// digest of the plugin re-applied.
    pub plugin_digest: String,
    /// per partition.
    pub partitions: Vec<PartitionSummary>,
    /// aggregate rows written.
    pub rows_loaded: usize,
    /// rows read from the lake.
    pub rows_read: u64,
    /// files read.
    pub files: usize,
    /// wall time, in milliseconds.
    pub elapsed_ms: u64,
    /// of which the warehouse load, in milliseconds.
    pub load_ms: u64,
}

impl BatchSummary {
    /// Partitions that failed.
    pub fn failed(&self) -> usize {
        self.partitions
            .iter()
            .filter(|p| matches!(p.status, PartitionStatus::Failed))
            .count()
    }
}

/// The pieces of a pipeline the batch job needs, opened once.
pub struct BatchJob {
    pipeline: Pipeline,
    aggregate: AggregateConfig,
    lake: tokio::sync::Mutex<Lake>,
    warehouse: Warehouse,
    plugin: std::sync::Mutex<BatchPlugin>,
    table: TableSpec,
    source: aggregate::Source,
}

impl std::fmt::Debug for BatchJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchJob")
            .field("pipeline", &self.pipeline.config.name)
            .finish()
    }
}

impl BatchJob {
    /// Open the lake, the warehouse and the plugin of `pipeline`; checks
    /// that the aggregation fits the plugin's output schema.
    pub async fn open(pipeline: &Pipeline) -> Result<Self, BatchError> {
        let file = pipeline.file.display().to_string();
        let config_error = |message: String| BatchError::Config {
            file: file.clone(),
            message,
        };
        let aggregate = pipeline
            .config
            .aggregate
            .clone()
            .ok_or_else(|| config_error("no [aggregate] section: nothing to compute".into()))?;
        let warehouse_config = pipeline
            .config
            .warehouse
            .clone()
            .ok_or_else(|| config_error("no [warehouse] section: nowhere to load".into()))?;
        let lake = Lake::open(&pipeline.config.lake, &pipeline.config.name)?;
        let warehouse = Warehouse::open(&warehouse_config, &pipeline.config.lake)?;
        let engine = PluginEngine::new(pipeline.config.plugin.limits.clone())?;
        let loaded = load_plugin(pipeline, &engine).await?;
        let config = pipeline.plugin_config();
        // the plugin's output for the pipeline's input is the lake's schema
        let probe = {
            let engine = engine.clone();
            let loaded = loaded.clone();
            let schema = pipeline.schema.clone();
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                PluginRunner::new(engine, loaded, &schema, &config)
                    .map(|r| r.output_schema().clone())
            })
            .await
            .expect("plugin probe")?
        };
        let resolved = Resolved::new(&aggregate, probe.arrow())
            .map_err(|m| config_error(format!("[aggregate]: {m}")))?;
        let table = TableSpec::new(
            &warehouse_config.table,
            resolved.output_schema(),
            &pipeline.config.lake.partition_by,
        )
        .map_err(|m| config_error(format!("[warehouse]: {m}")))?;
        Ok(BatchJob {
            pipeline: pipeline.clone(),
            aggregate,
            lake: tokio::sync::Mutex::new(lake),
            warehouse,
            plugin: std::sync::Mutex::new(BatchPlugin {
                engine,
                plugin: loaded,
                config,
            }),
            table,
            source: aggregate::Source {
                schema: probe.arrow().clone(),
                partition_by: pipeline.config.lake.partition_by.clone(),
            },
        })
    }

    /// The warehouse.
    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    /// The lake (locked: reading what is new in its log needs it mutably).
    pub async fn lake(&self) -> tokio::sync::MutexGuard<'_, Lake> {
        self.lake.lock().await
    }

    /// Read what is new in the data table's log, and plan `selection` from
    /// that snapshot.
    pub async fn plan(&self, selection: &Selection) -> Result<Vec<PartitionPlan>, BatchError> {
        let mut lake = self.lake.lock().await;
        let table = lake.table_mut(crate::lake::TableKind::Data);
        table.refresh().await?;
        let plans =
            aggregate::plan(table, &self.pipeline.config.lake.partition_by, selection).await?;
        Ok(plans.into_values().collect())
    }

    /// Digest of the plugin the batch path runs.
    pub fn plugin_digest(&self) -> String {
        self.current_plugin().plugin.digest.clone()
    }

    fn current_plugin(&self) -> BatchPlugin {
        self.plugin.lock().expect("batch plugin").clone()
    }

    /// The engine the batch path instantiates plugins with.
    pub fn engine(&self) -> Arc<PluginEngine> {
        self.current_plugin().engine
    }

    /// Run later batches with another plugin version (after a hot swap);
    /// runs in progress keep theirs. A component is bound to the engine
    /// that compiled it, so the two travel together.
    pub fn set_plugin(&self, engine: Arc<PluginEngine>, plugin: Arc<crate::plugin::LoadedPlugin>) {
        let mut current = self.plugin.lock().expect("batch plugin");
        current.engine = engine;
        current.plugin = plugin;
    }

    /// Plan, aggregate and load. Partitions that fail are reported and
    /// left out of the load; the others load in one transaction. Errors
    /// only when the table cannot be read or the load fails.
    pub async fn run(
        self: &Arc<Self>,
        options: &BatchOptions,
        progress: Arc<dyn Fn(&Progress) + Send + Sync>,
    ) -> Result<BatchSummary, BatchError> {
        let plans = self.plan(&options.selection).await?;
        self.run_on(plans, options, progress).await
    }

    /// [`BatchJob::run`] over plans already made (the orchestrator plans
    /// once to know the position it loads).
    pub async fn run_on(
        self: &Arc<Self>,
        plans: Vec<PartitionPlan>,
        options: &BatchOptions,
        progress: Arc<dyn Fn(&Progress) + Send + Sync>,
    ) -> Result<BatchSummary, BatchError> {
        let started = Instant::now();
        let location = self.lake.lock().await.data().location().clone();
        let job = self.clone();
        let rt = tokio::runtime::Handle::current();
        let batch_plugin = self.current_plugin();
        let digest = batch_plugin.plugin.digest.clone();
        let outcomes = tokio::task::spawn_blocking(move || {
            let plugin = job.aggregate.reapply_plugin.then_some(&batch_plugin);
            aggregate::aggregate_partitions(
                &location,
                &job.source,
                &job.aggregate,
                plugin,
                plans,
                &rt,
                &*progress,
            )
        })
        .await
        .map_err(|e| BatchError::Worker(e.to_string()))?;
        let load_id = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            std::process::id()
        );
        let mut summary = BatchSummary {
            load_id: load_id.clone(),
            pipeline: self.pipeline.config.name.clone(),
            warehouse: self.warehouse.target(),
            table: self.table.name.clone(),
            plugin_digest: digest.clone(),
            partitions: Vec::new(),
            rows_loaded: 0,
            rows_read: 0,
            files: 0,
            elapsed_ms: 0,
            load_ms: 0,
        };
        let mut request = LoadRequest {
            table: self.table.clone(),
            audit_table: self.warehouse.config().audit_table.clone(),
            dates: Vec::new(),
            rows: Vec::new(),
            audit: Vec::new(),
        };
        for outcome in outcomes {
            match outcome {
                Outcome::Aggregated(a) => {
                    let day: NaiveDate = a.plan.date.parse().map_err(|_| BatchError::Config {
                        file: self.pipeline.file.display().to_string(),
                        message: format!("partition value `{}` is not a date", a.plan.date),
                    })?;
                    let report = a.report.clone();
                    let excluded: u64 = report
                        .dropped
                        .values()
                        .chain(report.rejected.values())
                        .sum();
                    request.dates.push(day);
                    request.audit.push(AuditRow {
                        partition_date: day,
                        pipeline: self.pipeline.config.name.clone(),
                        plugin_digest: if self.aggregate.reapply_plugin {
                            digest.clone()
                        } else {
                            String::new()
                        },
                        lake_plugin_digests: a
                            .plan
                            .lake_digests
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(","),
                        commits: a.plan.position(),
                        files: report.files as i64,
                        rows_read: report.rows_read as i64,
                        rows_excluded: excluded as i64,
                        duplicates: report.duplicates as i64,
                        rows_loaded: report.groups as i64,
                    });
                    summary.rows_loaded += a.rows.num_rows();
                    summary.rows_read += report.rows_read;
                    summary.files += report.files;
                    request.rows.push(a.rows);
                    summary.partitions.push(PartitionSummary {
                        date: a.plan.date,
                        status: PartitionStatus::Loaded,
                        report: Some(report),
                        version: a.plan.version,
                        error: None,
                    });
                }
                Outcome::NoData(date) => {
                    let day = date.parse::<NaiveDate>().ok();
                    let status = match (options.replace_empty, day) {
                        (true, Some(day)) => {
                            request.dates.push(day);
                            request.audit.push(AuditRow {
                                partition_date: day,
                                pipeline: self.pipeline.config.name.clone(),
                                plugin_digest: String::new(),
                                lake_plugin_digests: String::new(),
                                commits: String::new(),
                                files: 0,
                                rows_read: 0,
                                rows_excluded: 0,
                                duplicates: 0,
                                rows_loaded: 0,
                            });
                            PartitionStatus::ReplacedEmpty
                        }
                        _ => PartitionStatus::NoData,
                    };
                    summary.partitions.push(PartitionSummary {
                        date,
                        status,
                        report: None,
                        version: None,
                        error: None,
                    });
                }
                Outcome::Failed(e) => {
                    tracing::error!(error = %e, "partition failed; its warehouse rows are left as they are");
                    let date = match &e {
                        aggregate::PartitionError::File { date, .. }
                        | aggregate::PartitionError::TooLarge { date, .. }
                        | aggregate::PartitionError::Schema { date, .. } => date.clone(),
                    };
                    summary.partitions.push(PartitionSummary {
                        date,
                        status: PartitionStatus::Failed,
                        report: None,
                        version: None,
                        error: Some(e.to_string()),
                    });
                }
            }
        }
        if !request.dates.is_empty() {
            let loading = Instant::now();
            self.warehouse.load(&request, &load_id).await?;
            summary.load_ms = loading.elapsed().as_millis() as u64;
            tracing::info!(load_id, dates = request.dates.len(), rows = summary.rows_loaded, warehouse = %summary.warehouse, "loaded");
        }
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }
}

/// Load the plugin a pipeline names, off the async threads.
async fn load_plugin(
    pipeline: &Pipeline,
    engine: &Arc<PluginEngine>,
) -> Result<Arc<crate::plugin::LoadedPlugin>, BatchError> {
    let pipeline = pipeline.clone();
    let engine = engine.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || crate::ingest::load_plugin(&pipeline, &engine, &handle))
        .await
        .expect("plugin loader")
        .map_err(|e| match e {
            crate::ingest::IngestError::Plugin(p) => BatchError::Plugin(p),
            crate::ingest::IngestError::Lake(l) => BatchError::Lake(l),
            other => BatchError::Config {
                file: String::new(),
                message: other.to_string(),
            },
        })
}
