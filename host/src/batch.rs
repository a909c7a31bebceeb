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
    self, AggregateConfig, AggregateEngine, BatchPlugin, Engine, EngineOptions, Outcome,
    PartitionReport, Progress, Selection,
};
use crate::lake::{Lake, LakeError};
use crate::pipeline::aggregate::AggregationSql;
use crate::pipeline::{DeclaredSchema, Pipeline};
use crate::plugin::{PluginEngine, PluginError, PluginRunner};
use crate::warehouse::{AuditRow, LoadRequest, PushdownRows, TableSpec, Warehouse, WarehouseError};

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
    /// The plugin's file or object cannot be read from here.
    #[error("plugin {location}: cannot be read: {message}")]
    PluginUnreadable {
        /// where the pipeline says the plugin is.
        location: String,
        /// why it cannot be read.
        message: String,
    },
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

/// A date's cleaned rows on their way into PostgreSQL.
type CleanedRows =
    futures::stream::Map<datafusion::execution::SendableRecordBatchStream, ErrorText>;
type ErrorText = fn(
    datafusion::common::Result<arrow::record_batch::RecordBatch>,
) -> Result<arrow::record_batch::RecordBatch, String>;

/// A pushed-down load, staged (see [`BatchJob::stage_pushdown`]).
struct Pushdown {
    load_id: String,
    digest: String,
    /// the temporary table `events`.
    staging: TableSpec,
    /// so far: the dates without data.
    summary: BatchSummary,
    request: LoadRequest,
    rows: PushdownRows<CleanedRows>,
    /// Redshift: each date's manifest.
    manifests: Vec<crate::warehouse::redshift::StagedDate>,
    /// the dates with data, with what their streams counted.
    dates: Vec<(
        NaiveDate,
        PartitionPlan,
        Arc<std::sync::Mutex<aggregate::Tally>>,
    )>,
    /// the dates whose rows are deleted (`--replace-empty`).
    empty: Vec<NaiveDate>,
}

/// What a pushed-down load would run (`weir aggregate --explain`).
#[derive(Clone, Debug, Serialize)]
pub struct PushdownPlan {
    /// the statements, in order, inside the load's transaction (after the
    /// table lock; the dates' rows are deleted before the aggregation's).
    pub statements: Vec<String>,
    /// Redshift: each date's manifest and where its files came from.
    pub staged: Vec<crate::warehouse::redshift::StagedDate>,
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
    /// the embedded engine the queries run on.
    engine: Engine,
    /// the query over `events`.
    sql: String,
    /// the aggregation as the warehouse runs it (`aggregate.engine =
    /// "warehouse"`): the query, or Redshift's split statements.
    pushdown: AggregationSql,
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
        let aggregate = aggregate_config(pipeline)?;
        let warehouse_config = pipeline
            .config
            .warehouse
            .clone()
            .ok_or_else(|| config_error("no [warehouse] section: nowhere to load".into()))?;
        let lake = Lake::open(&pipeline.config.lake, &pipeline.config.name)?;
        let warehouse = Warehouse::open(&warehouse_config, &pipeline.config.lake)?;
        let (mut plugin, output) = probe_plugin(pipeline).await?;
        let schema = output.arrow().clone();
        plugin.skips_own_files = !aggregate.reapply_own_files;
        let query = Query::plan(pipeline, &aggregate, &schema)
            .await
            .map_err(&config_error)?;
        let table = TableSpec::new(
            &warehouse_config.table,
            &query.output,
            &pipeline.config.lake.partition_by,
        )
        .map_err(|m| config_error(format!("[warehouse]: {m}")))?;
        let pushdown = if warehouse.is_redshift() {
            query.split
        } else {
            AggregationSql {
                setup: Vec::new(),
                select: query.sql.clone(),
            }
        };
        Ok(BatchJob {
            pipeline: pipeline.clone(),
            aggregate,
            lake: tokio::sync::Mutex::new(lake),
            warehouse,
            plugin: std::sync::Mutex::new(plugin),
            table,
            source: aggregate::Source {
                schema,
                partition_by: pipeline.config.lake.partition_by.clone(),
            },
            engine: query.engine,
            pushdown,
            sql: query.sql,
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
        if self.aggregate.engine == AggregateEngine::Warehouse {
            return self.run_in_warehouse(plans, options, progress).await;
        }
        let started = Instant::now();
        let location = self.lake.lock().await.data().location().clone();
        let batch_plugin = self.current_plugin();
        let digest = batch_plugin.plugin.digest.clone();
        let job = aggregate::Job {
            engine: &self.engine,
            lake: &location,
            source: &self.source,
            sql: &self.sql,
            events_column: self.aggregate.events_output(),
            plugin: self.aggregate.reapply_plugin.then_some(&batch_plugin),
        };
        let outcomes = aggregate::aggregate_partitions(&job, plans, &*progress).await;
        let load_id = new_load_id();
        let mut summary = self.empty_summary(&load_id, &digest);
        let mut request = self.new_request();
        for outcome in outcomes {
            match outcome {
                Outcome::Aggregated(a) => {
                    let day: NaiveDate = a.plan.date.parse().map_err(|_| BatchError::Config {
                        file: self.pipeline.file.display().to_string(),
                        message: format!("partition value `{}` is not a date", a.plan.date),
                    })?;
                    let report = a.report.clone();
                    request.dates.push(day);
                    request
                        .audit
                        .push(self.audit_row(day, &a.plan, &report, &digest));
                    summary.rows_loaded += report.groups;
                    summary.rows_read += report.rows_read;
                    summary.files += report.files;
                    request.rows.extend(a.rows);
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
                            request.audit.push(self.empty_audit_row(day));
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
                    let date = e.date().to_string();
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

impl BatchJob {
    /// The audit row of one aggregated date.
    fn audit_row(
        &self,
        day: NaiveDate,
        plan: &PartitionPlan,
        report: &PartitionReport,
        digest: &str,
    ) -> AuditRow {
        let excluded: u64 = report
            .dropped
            .values()
            .chain(report.rejected.values())
            .sum();
        AuditRow {
            partition_date: day,
            pipeline: self.pipeline.config.name.clone(),
            plugin_digest: if self.aggregate.reapply_plugin {
                digest.to_string()
            } else {
                String::new()
            },
            lake_plugin_digests: plan
                .lake_digests
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(","),
            commits: plan.position(),
            files: report.files as i64,
            rows_read: report.rows_read as i64,
            rows_excluded: excluded as i64,
            duplicates: report.duplicates as i64,
            rows_loaded: report.groups as i64,
        }
    }

    /// The audit row of a date replaced by nothing (`--replace-empty`).
    fn empty_audit_row(&self, day: NaiveDate) -> AuditRow {
        AuditRow {
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
        }
    }

    /// `aggregate.engine = "warehouse"`: the selected dates' cleaned rows
    /// reach the warehouse's temporary table `events` and the aggregation
    /// runs there, in the transaction that replaces the dates and writes
    /// the audit rows. The rows never sit in this host's memory:
    /// - PostgreSQL: they are streamed (files → plugin) by binary `COPY`;
    /// - Redshift: each date's manifest on S3 names the snapshot's files
    ///   when the running plugin wrote them all (the lake on S3), else
    ///   Parquet files of the re-cleaned rows weir stages first; `COPY ...
    ///   FORMAT AS PARQUET MANIFEST` loads them.
    ///
    /// One failing date fails the whole load (it is one transaction);
    /// nothing changes then.
    async fn run_in_warehouse(
        self: &Arc<Self>,
        plans: Vec<PartitionPlan>,
        options: &BatchOptions,
        progress: Arc<dyn Fn(&Progress) + Send + Sync>,
    ) -> Result<BatchSummary, BatchError> {
        let started = Instant::now();
        let Pushdown {
            load_id,
            digest,
            staging,
            mut summary,
            request,
            rows,
            manifests: _,
            dates,
            empty,
        } = self.stage_pushdown(plans, options).await?;
        if request.dates.is_empty() {
            summary.elapsed_ms = started.elapsed().as_millis() as u64;
            return Ok(summary);
        }
        let report =
            |plan: &PartitionPlan, tally: &aggregate::Tally, loaded: i64| PartitionReport {
                date: plan.date.clone(),
                files: plan.files.len(),
                rows_read: tally.rows_read,
                rows_recleaned: tally.rows_recleaned,
                dropped: tally.dropped.clone(),
                rejected: tally.rejected.clone(),
                rows_kept: tally.rows_kept,
                duplicates: 0,
                spilled_bytes: 0,
                groups: loaded.max(0) as usize,
                elapsed_ms: 0,
            };
        let mut loaded_rows = std::collections::BTreeMap::new();
        let loading = Instant::now();
        self.warehouse
            .load_pushdown(
                &request,
                &load_id,
                &staging,
                rows,
                &self.pushdown,
                |loaded| {
                    loaded_rows = loaded.clone();
                    let mut audit: Vec<AuditRow> = dates
                        .iter()
                        .map(|(day, plan, tally)| {
                            let tally = tally.lock().expect("tally");
                            let n = loaded.get(day).copied().unwrap_or(0);
                            self.audit_row(*day, plan, &report(plan, &tally, n), &digest)
                        })
                        .collect();
                    audit.extend(empty.iter().map(|d| self.empty_audit_row(*d)));
                    audit
                },
            )
            .await?;
        summary.load_ms = loading.elapsed().as_millis() as u64;
        let total = dates.len();
        for (i, (day, plan, tally)) in dates.into_iter().enumerate() {
            let tally = tally.lock().expect("tally").clone();
            let n = loaded_rows.get(&day).copied().unwrap_or(0);
            let r = report(&plan, &tally, n);
            summary.rows_loaded += r.groups;
            summary.rows_read += r.rows_read;
            summary.files += r.files;
            progress(&Progress {
                done: i + 1,
                total,
                files: summary.files,
                rows: summary.rows_read,
                date: plan.date.clone(),
            });
            summary.partitions.push(PartitionSummary {
                date: plan.date.clone(),
                status: PartitionStatus::Loaded,
                report: Some(r),
                version: plan.version,
                error: None,
            });
        }
        tracing::info!(load_id, dates = request.dates.len(), rows = summary.rows_loaded, warehouse = %summary.warehouse, "aggregated inside the warehouse and loaded");
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }

    /// Everything a pushed-down load needs before it reaches the
    /// warehouse: the dates' cleaned rows as streams (PostgreSQL) or staged
    /// on S3 with the statements that copy them (Redshift), the request and
    /// the summary of the dates without data.
    async fn stage_pushdown(
        self: &Arc<Self>,
        plans: Vec<PartitionPlan>,
        options: &BatchOptions,
    ) -> Result<Pushdown, BatchError> {
        let file = self.pipeline.file.display().to_string();
        let config_error = |message: String| BatchError::Config {
            file: file.clone(),
            message,
        };
        if !self.warehouse.runs_queries() {
            return Err(config_error(format!(
                "aggregate.engine = \"warehouse\" runs the query inside PostgreSQL or Redshift; {} cannot (use the embedded engine)",
                self.warehouse.target()
            )));
        }
        let location = self.lake.lock().await.data().location().clone();
        let batch_plugin = self.current_plugin();
        let digest = batch_plugin.plugin.digest.clone();
        let load_id = new_load_id();
        let partition_by = &self.source.partition_by;
        let staging = TableSpec::new("events", &self.source.schema, partition_by)
            .map_err(|m| config_error(format!("the lake's rows cannot be staged: {m}")))?;
        let stager = match (self.warehouse.is_redshift(), &self.warehouse.config().copy) {
            (false, _) => None,
            (true, Some(copy)) => Some((
                copy,
                crate::warehouse::redshift::Stager::open(
                    copy,
                    &self.pipeline.config.lake.s3,
                    &self.table.name,
                    &load_id,
                )?,
            )),
            (true, None) => {
                return Err(config_error(
                    "aggregate.engine = \"warehouse\" with Redshift stages the rows on S3: it needs [warehouse.copy] (staging_url, iam_role)".into(),
                ));
            }
        };
        let mut summary = self.empty_summary(&load_id, &digest);
        let mut request = self.new_request();
        let mut streams: Vec<CleanedRows> = Vec::new();
        let mut manifests = Vec::new();
        let mut dates = Vec::new();
        let mut empty = Vec::new();
        for plan in plans {
            let Some(day) = plan.day() else {
                return Err(config_error(format!(
                    "partition value `{}` is not a date",
                    plan.date
                )));
            };
            if plan.files.is_empty() {
                if options.replace_empty {
                    request.dates.push(day);
                    empty.push(day);
                }
                summary.partitions.push(PartitionSummary {
                    date: plan.date.clone(),
                    status: if options.replace_empty {
                        PartitionStatus::ReplacedEmpty
                    } else {
                        PartitionStatus::NoData
                    },
                    report: None,
                    version: None,
                    error: None,
                });
                continue;
            }
            let events = self.source.events(
                &location,
                plan.files.clone(),
                self.aggregate.reapply_plugin.then(|| batch_plugin.clone()),
            );
            let tally = events.tally.clone();
            match &stager {
                None => {
                    let stream = self
                        .engine
                        .stream("SELECT * FROM events", events)
                        .await
                        .map_err(|e| config_error(aggregate::describe_sql_error(&e)))?;
                    streams.push(futures::StreamExt::map(stream, error_text as ErrorText));
                }
                Some((_, stager)) => {
                    manifests.push(
                        self.stage_for_redshift(stager, day, &plan, &location, events)
                            .await?,
                    );
                }
            }
            request.dates.push(day);
            dates.push((day, plan, tally));
        }
        let rows = match stager {
            Some((copy, _)) => PushdownRows::Staged(crate::warehouse::redshift::fill_statements(
                copy, &staging, &manifests,
            )),
            None => PushdownRows::Streams(streams),
        };
        Ok(Pushdown {
            load_id,
            digest,
            staging,
            summary,
            request,
            rows,
            manifests,
            dates,
            empty,
        })
    }

    /// `weir aggregate --explain` (`aggregate.engine = "warehouse"`): stage
    /// the selected dates as a load would (for Redshift: write the
    /// manifests, and the re-cleaned files where the snapshot's cannot be
    /// copied as written) and return the statements the load would run in
    /// the warehouse, without running them.
    pub async fn explain_pushdown(
        self: &Arc<Self>,
        options: &BatchOptions,
    ) -> Result<PushdownPlan, BatchError> {
        if self.aggregate.engine != AggregateEngine::Warehouse {
            return Err(BatchError::Config {
                file: self.pipeline.file.display().to_string(),
                message: "--explain shows what runs in the warehouse: it needs aggregate.engine = \"warehouse\"".into(),
            });
        }
        let plans = self.plan(&options.selection).await?;
        let staged = self.stage_pushdown(plans, options).await?;
        let mut statements = match staged.rows {
            PushdownRows::Staged(statements) => statements,
            PushdownRows::Streams(_) => vec![
                staged.staging.temp_create_sql(),
                "COPY \"events\" FROM STDIN (FORMAT binary)".into(),
            ],
        };
        statements.extend(self.pushdown.setup.iter().cloned());
        statements.push(self.table.insert_select_sql(&self.pushdown.select));
        Ok(PushdownPlan {
            statements,
            staged: staged.manifests,
        })
    }

    /// Stage one date for Redshift's `COPY`: a manifest of the snapshot's
    /// files when the running plugin wrote every one of them and the lake
    /// is on S3 (nothing is read; the tally counts their rows as kept),
    /// else Parquet files of `events` (the rows re-cleaned) written under
    /// the stager's prefix, a few hundred thousand rows each.
    async fn stage_for_redshift(
        &self,
        stager: &crate::warehouse::redshift::Stager,
        day: NaiveDate,
        plan: &PartitionPlan,
        location: &crate::objstore::Location,
        events: aggregate::EventsTable,
    ) -> Result<crate::warehouse::redshift::StagedDate, BatchError> {
        use crate::warehouse::redshift::{ManifestEntry, StagedFrom};
        let lake_url = location.url().as_str().trim_end_matches('/').to_string();
        let as_written = events
            .plugin
            .as_ref()
            .is_none_or(|p| plan.files.iter().all(|f| p.skips(&f.path)));
        if as_written && lake_url.starts_with("s3://") {
            let entries: Vec<ManifestEntry> = plan
                .files
                .iter()
                .map(|f| ManifestEntry {
                    url: format!("{lake_url}/{}", f.path),
                    bytes: f.bytes,
                })
                .collect();
            {
                let mut tally = events.tally.lock().expect("tally");
                tally.rows_read = plan.rows;
                tally.rows_kept = plan.rows;
            }
            return Ok(stager
                .put_manifest(day, StagedFrom::Snapshot, &entries)
                .await?);
        }
        const PART_ROWS: usize = 262_144;
        let entries: Vec<ManifestEntry> = self
            .write_files(
                day,
                events,
                PART_ROWS,
                stager.store(),
                |_| crate::lake::FileMetadata::default(),
                |n, _| stager.part_path(day, n),
            )
            .await?
            .iter()
            .map(|f| stager.entry(&f.path, f.bytes))
            .collect();
        Ok(stager
            .put_manifest(day, StagedFrom::Recleaned, &entries)
            .await?)
    }

    /// Write the rows of `events` (one date, re-cleaned) to `store` in the
    /// lake's file layout (every column but the partition column, which
    /// Delta keeps in the log): Parquet files of about `rows_per_file` rows,
    /// the `n`th encoded on a blocking thread with `meta(n)` and put at
    /// `path(n, meta)`. Only one file's rows are held at a time.
    async fn write_files(
        &self,
        day: NaiveDate,
        events: aggregate::EventsTable,
        rows_per_file: usize,
        store: &crate::objstore::Location,
        meta: impl Fn(usize) -> crate::lake::FileMetadata,
        path: impl Fn(usize, &crate::lake::FileMetadata) -> String,
    ) -> Result<Vec<crate::lake::StagedFile>, BatchError> {
        use futures::StreamExt;
        let fail = |message: String| BatchError::Config {
            file: self.pipeline.file.display().to_string(),
            message: format!("{day}: {message}"),
        };
        let partition = self
            .source
            .schema
            .index_of(&self.source.partition_by)
            .map_err(|e| fail(e.to_string()))?;
        let stored: Vec<usize> = (0..self.source.schema.fields().len())
            .filter(|i| *i != partition)
            .collect();
        let mut stream = self
            .engine
            .stream("SELECT * FROM events", events)
            .await
            .map_err(|e| fail(aggregate::describe_sql_error(&e)))?;
        // shared with the encoding threads, one clone for the whole day
        let lake = Arc::new(self.pipeline.config.lake.clone());
        let mut written = Vec::new();
        let mut pending = Vec::new();
        let mut pending_rows = 0;
        loop {
            let next = stream.next().await;
            let done = next.is_none();
            if let Some(batch) = next {
                let batch = batch.map_err(|e| fail(e.to_string()))?;
                if batch.num_rows() > 0 {
                    pending_rows += batch.num_rows();
                    pending.push(batch.project(&stored).map_err(|e| fail(e.to_string()))?);
                }
            }
            if pending_rows > 0 && (done || pending_rows >= rows_per_file) {
                let batches = std::mem::take(&mut pending);
                let rows = std::mem::take(&mut pending_rows) as u64;
                let lake = Arc::clone(&lake);
                let file_meta = meta(written.len());
                let path = path(written.len(), &file_meta);
                let bytes = tokio::task::spawn_blocking(move || {
                    crate::lake::encode_parquet(&batches, (&*lake).into(), &file_meta)
                })
                .await
                .map_err(|e| BatchError::Worker(e.to_string()))?
                .map_err(|e| fail(format!("encoding a file: {e}")))?;
                let size = bytes.len() as u64;
                store
                    .put(&path, bytes)
                    .await
                    .map_err(|e| fail(format!("writing {path}: {e}")))?;
                written.push(crate::lake::StagedFile {
                    path,
                    partition_value: Some(day.to_string()),
                    rows,
                    bytes: size,
                });
            }
            if done {
                return Ok(written);
            }
        }
    }

    /// A load of the aggregate table with nothing in it yet.
    fn new_request(&self) -> LoadRequest {
        LoadRequest {
            table: self.table.clone(),
            audit_table: self.warehouse.config().audit_table.clone(),
            dates: Vec::new(),
            rows: Vec::new(),
            audit: Vec::new(),
        }
    }

    /// A summary with nothing in it yet.
    fn empty_summary(&self, load_id: &str, digest: &str) -> BatchSummary {
        BatchSummary {
            load_id: load_id.to_string(),
            pipeline: self.pipeline.config.name.clone(),
            warehouse: self.warehouse.target(),
            table: self.table.name.clone(),
            plugin_digest: digest.to_string(),
            partitions: Vec::new(),
            rows_loaded: 0,
            rows_read: 0,
            files: 0,
            elapsed_ms: 0,
            load_ms: 0,
        }
    }
}

/// What `weir reprocess` did to one date.
#[derive(Clone, Debug, Serialize)]
pub struct ReprocessReport {
    /// the date.
    pub date: String,
    /// digest of the plugin that re-cleaned it.
    pub plugin_digest: String,
    /// digests (8-character prefixes) of the plugins that had written it.
    pub previous_digests: Vec<String>,
    /// files replaced.
    pub files_removed: usize,
    /// files written.
    pub files_added: usize,
    /// rows read from the old files.
    pub rows_read: u64,
    /// rows the plugin kept (the new files' rows).
    pub rows_written: u64,
    /// the data table's version that holds the new files.
    pub version: i64,
    /// the date re-aggregated and loaded.
    pub load: BatchSummary,
}

/// Rows per file `weir reprocess` writes.
const REPROCESS_FILE_ROWS: usize = 1_000_000;

impl BatchJob {
    /// `weir reprocess`: re-clean one date's files with the running plugin
    /// version, replace them in one Delta commit (readers see the old rows
    /// or the new, never both), then aggregate and load the date again.
    pub async fn reprocess(
        self: &Arc<Self>,
        day: NaiveDate,
        progress: Arc<dyn Fn(&Progress) + Send + Sync>,
    ) -> Result<ReprocessReport, BatchError> {
        let file = self.pipeline.file.display().to_string();
        let config_error = |message: String| BatchError::Config {
            file: file.clone(),
            message,
        };
        let plan = self
            .plan(&Selection::Dates(vec![day]))
            .await?
            .into_iter()
            .next()
            .filter(|p| !p.files.is_empty())
            .ok_or_else(|| config_error(format!("{day}: the lake holds no data for this date")))?;
        // re-cleaning applies the running version to every file, its own included
        let batch_plugin = BatchPlugin {
            skips_own_files: false,
            ..self.current_plugin()
        };
        let digest = batch_plugin.plugin.digest.clone();
        let location = self.lake.lock().await.data().location().clone();
        let lake_config = self.pipeline.config.lake.clone();
        let events = self
            .source
            .events(&location, plan.files.clone(), Some(batch_plugin.clone()));
        let tally = events.tally.clone();
        let staged = self
            .write_files(
                day,
                events,
                REPROCESS_FILE_ROWS,
                &location,
                |n| crate::lake::FileMetadata {
                    plugin_digest: digest.clone(),
                    topic: "reprocessed".into(),
                    partition: 0,
                    first_offset: n as i64,
                    last_offset: n as i64,
                    writer_token: crate::lake::FileMetadata::new_token(),
                },
                |_, meta| meta.data_path(&lake_config.partition_by, &plan.date),
            )
            .await?;
        let written: u64 = staged.iter().map(|f| f.rows).sum();
        let tally = tally.lock().expect("tally").clone();
        let provenance = crate::lake::Provenance {
            plugin_digest: digest.clone(),
            counts: [("read", tally.rows_read), ("kept", tally.rows_kept)]
                .into_iter()
                .collect(),
        };
        let version = self
            .lake
            .lock()
            .await
            .replace_date(&plan.date, &plan.files, &staged, &provenance)
            .await?;
        tracing::info!(date = %plan.date, version, removed = plan.files.len(), added = staged.len(), plugin = %digest, "date re-cleaned");
        let load = self
            .run(
                &BatchOptions {
                    selection: Selection::Dates(vec![day]),
                    replace_empty: true,
                },
                progress,
            )
            .await?;
        Ok(ReprocessReport {
            date: plan.date.clone(),
            plugin_digest: digest,
            previous_digests: plan.lake_digests.iter().cloned().collect(),
            files_removed: plan.files.len(),
            files_added: staged.len(),
            rows_read: tally.rows_read,
            rows_written: written,
            version,
            load,
        })
    }
}

/// A stream error as the warehouse reports it.
fn error_text(
    r: datafusion::common::Result<arrow::record_batch::RecordBatch>,
) -> Result<arrow::record_batch::RecordBatch, String> {
    r.map_err(|e| e.to_string())
}

/// A new load's id: the time and this process.
fn new_load_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    )
}

/// The aggregation of a pipeline, planned: its SQL, the engine it runs
/// on, and the rows it produces (the warehouse table's columns).
pub struct Query {
    /// the query over `events`.
    pub sql: String,
    /// the same aggregation as statements Redshift accepts (one `ORDER BY`
    /// per statement for its sort-based aggregates).
    pub split: AggregationSql,
    /// the embedded engine.
    pub engine: Engine,
    /// the schema of its rows.
    pub output: arrow::datatypes::SchemaRef,
}

impl Query {
    /// Plan the pipeline's aggregation over `schema` (the lake's): a wrong
    /// column or type is reported with where it is in the query.
    pub async fn plan(
        pipeline: &Pipeline,
        aggregate: &AggregateConfig,
        schema: &arrow::datatypes::SchemaRef,
    ) -> Result<Query, String> {
        let partition_by = &pipeline.config.lake.partition_by;
        let int_columns: Vec<&str> = schema
            .fields()
            .iter()
            .filter(|f| f.data_type() == &arrow::datatypes::DataType::Int64)
            .map(|f| f.name().as_str())
            .collect();
        let sql = aggregate.query(partition_by, &int_columns);
        let nullable: Vec<&str> = schema
            .fields()
            .iter()
            .filter(|f| f.is_nullable())
            .map(|f| f.name().as_str())
            .collect();
        let split = aggregate.statements(partition_by, &int_columns, &nullable);
        let engine = Engine::new(EngineOptions::from_config(Some(aggregate)))
            .map_err(|e| format!("[aggregate]: {e}"))?;
        let output = engine.plan(&sql, schema.clone()).await.map_err(|e| {
            format!(
                "aggregate.sql: {}\n--- the query ---\n{sql}",
                aggregate::describe_sql_error(&e)
            )
        })?;
        if output.index_of(partition_by).is_err() {
            return Err(format!(
                "aggregate.sql: the query's rows have no column `{partition_by}` (lake.partition_by): a load replaces whole dates"
            ));
        }
        Ok(Query {
            sql,
            split,
            engine,
            output,
        })
    }

    /// `weir validate`: plan the pipeline's aggregation over the plugin's
    /// `output` (from [`plugin_output`]; nothing is read or written).
    pub async fn check(pipeline: &Pipeline, output: &DeclaredSchema) -> Result<Query, BatchError> {
        let aggregate = aggregate_config(pipeline)?;
        Query::plan(pipeline, &aggregate, output.arrow())
            .await
            .map_err(|message| BatchError::Config {
                file: pipeline.file.display().to_string(),
                message,
            })
    }
}

/// `weir validate`: load the pipeline's plugin, initialise it with the
/// pipeline's schema and configuration, and answer its output schema.
pub async fn plugin_output(pipeline: &Pipeline) -> Result<DeclaredSchema, BatchError> {
    Ok(probe_plugin(pipeline).await?.1)
}

/// `weir query`: run `sql` over the lake's rows of the selected dates, as
/// two relations: `lake` (the rows as stored) and `events` (the plugin
/// applied to them, as the aggregation sees them).
pub async fn query_lake(
    pipeline: &Pipeline,
    sql: &str,
    selection: &Selection,
) -> Result<aggregate::QueryResult, BatchError> {
    let config_error = |message: String| BatchError::Config {
        file: pipeline.file.display().to_string(),
        message,
    };
    let mut lake = Lake::open(&pipeline.config.lake, &pipeline.config.name)?;
    let partition_by = pipeline.config.lake.partition_by.clone();
    let table = lake.table_mut(crate::lake::TableKind::Data);
    if !table.refresh().await? {
        return Err(config_error(format!(
            "the lake {} has no table yet (nothing ingested)",
            table.url()
        )));
    }
    let files: Vec<crate::lake::LakeFile> = aggregate::plan(table, &partition_by, selection)
        .await?
        .into_values()
        .flat_map(|p| p.files)
        .collect();
    let (plugin, output) = probe_plugin(pipeline).await?;
    let schema = output.arrow().clone();
    let engine = Engine::new(EngineOptions::from_config(
        pipeline.config.aggregate.as_ref(),
    ))
    .map_err(|e| config_error(e.to_string()))?;
    let location = table.location().clone();
    let source = aggregate::Source {
        schema,
        partition_by,
    };
    let relation = |plugin: Option<BatchPlugin>| source.events(&location, files.clone(), plugin);
    engine
        .run_over(
            sql,
            Some(&location),
            vec![("lake", relation(None)), ("events", relation(Some(plugin)))],
        )
        .await
        .map_err(|e| config_error(aggregate::describe_sql_error(&e)))
}

/// The pipeline's `[aggregate]` section, which the batch path needs.
fn aggregate_config(pipeline: &Pipeline) -> Result<AggregateConfig, BatchError> {
    pipeline
        .config
        .aggregate
        .clone()
        .ok_or_else(|| BatchError::Config {
            file: pipeline.file.display().to_string(),
            message: "no [aggregate] section: nothing to compute".into(),
        })
}

/// Load the pipeline's plugin and instantiate it once: the plugin and its
/// output for the pipeline's input (the lake's schema).
async fn probe_plugin(pipeline: &Pipeline) -> Result<(BatchPlugin, DeclaredSchema), BatchError> {
    let engine = PluginEngine::new(pipeline.config.plugin.limits.clone())?;
    let loaded = load_plugin(pipeline, &engine).await?;
    let config = pipeline.plugin_config();
    let plugin = BatchPlugin {
        engine,
        plugin: loaded,
        config,
        // re-cleaning (weir reprocess, weir query's `events`) applies it to
        // every file; the aggregation skips its own unless configured not to
        skips_own_files: false,
    };
    let probe = plugin.clone();
    let schema = pipeline.schema.clone();
    let output = tokio::task::spawn_blocking(move || {
        PluginRunner::new(probe.engine, probe.plugin, &schema, &probe.config)
            .map(|r| r.output_schema().clone())
    })
    .await
    .expect("plugin probe")?;
    Ok((plugin, output))
}

/// Load the plugin a pipeline names, off the async threads.
async fn load_plugin(
    pipeline: &Pipeline,
    engine: &Arc<PluginEngine>,
) -> Result<Arc<crate::plugin::LoadedPlugin>, BatchError> {
    let location = pipeline.plugin_location();
    let pipeline = pipeline.clone();
    let engine = engine.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || crate::ingest::load_plugin(&pipeline, &engine, &handle))
        .await
        .expect("plugin loader")
        .map_err(|e| match e {
            crate::ingest::IngestError::Plugin(PluginError::Read { path, error }) => {
                BatchError::PluginUnreadable {
                    location: path.display().to_string(),
                    message: error.to_string(),
                }
            }
            crate::ingest::IngestError::Plugin(p) => BatchError::Plugin(p),
            crate::ingest::IngestError::Store(e) => BatchError::PluginUnreadable {
                location: location.clone(),
                message: e.to_string(),
            },
            crate::ingest::IngestError::Lake(l) => BatchError::Lake(l),
            other => BatchError::Config {
                file: String::new(),
                message: other.to_string(),
            },
        })
}
