//! The embedded engine: Apache DataFusion runs `aggregate.sql` over the
//! relation `events`, the plugin-cleaned rows of one date.
//!
//! - [`EventsTable`] is a DataFusion `TableProvider` over the date's active
//!   files (named by the Delta snapshot): a Parquet scan split into one
//!   stream per core, the partition column filled from the log's partition
//!   values, and each stream through its own plugin instance
//!   ([`EventsExec`]);
//! - [`Engine`] holds the runtime every query shares: a memory pool of
//!   `aggregate.memory_limit` that spills to `aggregate.spill_dir` when it
//!   runs out, and `aggregate.workers` partitions per query.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use object_store::ObjectMeta;

use super::run::BatchPlugin;
use crate::lake::LakeFile;
use crate::objstore::Location;
use crate::pipeline::DeclaredSchema;
use crate::plugin::{PluginRunner, Verdict};

type DfResult<T> = datafusion::common::Result<T>;

/// How the embedded engine runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// partitions (threads) per query.
    pub partitions: usize,
    /// rows per record batch.
    pub batch_rows: usize,
    /// bytes the queries may hold before they spill (`None`: unbounded).
    pub memory_limit: Option<usize>,
    /// where spill files go (`None`: the system's temporary directory).
    pub spill_dir: Option<PathBuf>,
}

impl EngineOptions {
    /// The options `[aggregate]` asks for (DataFusion's defaults without one):
    /// `workers` partitions (0: one per core), `batch_rows`, `memory_limit`,
    /// `spill_dir`.
    pub fn from_config(config: Option<&super::AggregateConfig>) -> Self {
        let workers = config.map_or(0, |a| a.workers);
        EngineOptions {
            partitions: match workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            batch_rows: config.map_or(8192, |a| a.batch_rows),
            memory_limit: config
                .and_then(|a| a.memory_limit_bytes())
                .map(|b| b as usize),
            spill_dir: config.and_then(|a| a.spill_dir.clone()),
        }
    }
}

/// The runtime the queries of a batch job share: memory pool, spill files.
#[derive(Clone)]
pub struct Engine {
    options: EngineOptions,
    runtime: Arc<RuntimeEnv>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("options", &self.options)
            .finish()
    }
}

impl Engine {
    /// A runtime with `options`' memory pool and spill directory.
    pub fn new(options: EngineOptions) -> DfResult<Self> {
        let mut builder = RuntimeEnvBuilder::new();
        if let Some(limit) = options.memory_limit {
            builder = builder.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
        }
        if let Some(dir) = &options.spill_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                DataFusionError::Execution(format!(
                    "aggregate.spill_dir {}: cannot create it: {e}",
                    dir.display()
                ))
            })?;
            builder = builder.with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![dir.clone()])),
            );
        }
        Ok(Engine {
            options,
            runtime: builder.build_arc()?,
        })
    }

    /// A session whose `lake` store is registered (when given).
    fn session(&self, lake: Option<&Location>) -> DfResult<SessionContext> {
        let mut config = SessionConfig::new()
            .with_target_partitions(self.options.partitions.max(1))
            .with_batch_size(self.options.batch_rows.max(1));
        // spans in the parsed query, so an error can say where it points
        config.options_mut().sql_parser.collect_spans = true;
        // what each sort sets aside for merging its spills must fit the
        // pool several times over (DataFusion's 10 MB fits a large pool only)
        if let Some(limit) = self.options.memory_limit {
            let share = limit / (4 * self.options.partitions.max(1));
            let execution = &mut config.options_mut().execution;
            execution.sort_spill_reservation_bytes =
                execution.sort_spill_reservation_bytes.min(share);
        }
        let ctx = SessionContext::new_with_config_rt(config, self.runtime.clone());
        // exact percentiles, as PostgreSQL, Redshift and DuckDB compute them
        ctx.register_udaf(super::percentile::PercentileCont::udaf());
        // several percentiles of one value share one copy of the values
        ctx.add_optimizer_rule(Arc::new(super::percentile::SharePercentiles));
        if let Some(lake) = lake {
            ctx.register_object_store(store_url(lake)?.as_ref(), lake.store().clone());
        }
        Ok(ctx)
    }

    /// Run `sql` with `events` as the relation `events`.
    pub async fn run(&self, sql: &str, events: EventsTable) -> DfResult<QueryResult> {
        let lake = events.lake.clone();
        self.run_over(sql, lake.as_ref(), vec![("events", events)])
            .await
    }

    /// Run `sql` over the named relations (files of `lake`).
    pub async fn run_over(
        &self,
        sql: &str,
        lake: Option<&Location>,
        tables: Vec<(&str, EventsTable)>,
    ) -> DfResult<QueryResult> {
        let frame = self.frame(sql, lake, tables).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let task = frame.task_ctx();
        let plan = frame.create_physical_plan().await?;
        let batches = datafusion::physical_plan::collect(plan.clone(), Arc::new(task)).await?;
        let mut spilled_bytes = 0;
        let mut spills = 0;
        let mut nodes = vec![plan];
        while let Some(node) = nodes.pop() {
            if let Some(metrics) = node.metrics() {
                spilled_bytes += metrics.spilled_bytes().unwrap_or(0) as u64;
                spills += metrics.spill_count().unwrap_or(0) as u64;
            }
            nodes.extend(node.children().into_iter().cloned());
        }
        if spills > 0 {
            tracing::info!(
                spills,
                spilled_bytes,
                "the query spilled to disk (aggregate.memory_limit reached)"
            );
        }
        Ok(QueryResult {
            schema,
            batches,
            spilled_bytes,
        })
    }

    /// Stream the rows of `sql` over `events` as they are computed (nothing
    /// is collected).
    pub async fn stream(
        &self,
        sql: &str,
        events: EventsTable,
    ) -> DfResult<SendableRecordBatchStream> {
        let lake = events.lake.clone();
        self.frame(sql, lake.as_ref(), vec![("events", events)])
            .await?
            .execute_stream()
            .await
    }

    /// `sql` planned in a session with the named relations (files of `lake`).
    async fn frame(
        &self,
        sql: &str,
        lake: Option<&Location>,
        tables: Vec<(&str, EventsTable)>,
    ) -> DfResult<datafusion::dataframe::DataFrame> {
        let ctx = self.session(lake)?;
        for (name, table) in tables {
            ctx.register_table(name, Arc::new(table))?;
        }
        ctx.sql(sql).await
    }

    /// The schema `sql` produces over `events` of `schema`, without reading
    /// anything (a wrong column or type is reported here).
    pub async fn plan(&self, sql: &str, schema: SchemaRef) -> DfResult<SchemaRef> {
        let empty = EventsTable {
            lake: None,
            schema,
            partition_by: String::new(),
            files: Vec::new(),
            plugin: None,
            tally: Arc::default(),
        };
        let frame = self.frame(sql, None, vec![("events", empty)]).await?;
        Ok(Arc::new(frame.schema().as_arrow().clone()))
    }
}

/// What a query produced.
#[derive(Debug)]
pub struct QueryResult {
    /// the rows' schema.
    pub schema: SchemaRef,
    /// the rows.
    pub batches: Vec<RecordBatch>,
    /// bytes spilled to disk while running it.
    pub spilled_bytes: u64,
}

/// The object store URL DataFusion resolves the lake's keys against
/// (`file://` or `s3://bucket`).
fn store_url(lake: &Location) -> DfResult<ObjectStoreUrl> {
    let url = lake.url();
    ObjectStoreUrl::parse(format!(
        "{}://{}",
        url.scheme(),
        url.host_str().unwrap_or_default()
    ))
}

/// What the plugin kept and excluded, summed over a query's streams.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// rows read from the files.
    pub rows_read: u64,
    /// of them, rows that went through the plugin (the others were read
    /// as written: files of the plugin's own digest).
    pub rows_recleaned: u64,
    /// rows the plugin kept (the rows of `events`).
    pub rows_kept: u64,
    /// rows the plugin dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// rows the plugin rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
}

/// The relation `events`: the rows of some date's files, re-cleaned by the
/// plugin when one is given.
pub struct EventsTable {
    /// the lake (the files' store and keys; `None` when there are no files).
    pub lake: Option<Location>,
    /// the table's schema, partition column included (the plugin's input
    /// and output).
    pub schema: SchemaRef,
    /// the partition column (not stored in the files).
    pub partition_by: String,
    /// the files, with their partition values.
    pub files: Vec<LakeFile>,
    /// the plugin re-applied to the rows, if any (files it skips are read
    /// as written: see [`BatchPlugin::skips_own_files`]).
    pub plugin: Option<BatchPlugin>,
    /// where the streams count what they read, kept and excluded.
    pub tally: Arc<Mutex<Tally>>,
}

impl fmt::Debug for EventsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsTable")
            .field("files", &self.files.len())
            .field("plugin", &self.plugin)
            .finish()
    }
}

#[async_trait]
impl TableProvider for EventsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // the plugin takes whole rows: for files it re-cleans every column
        // is read, and the projection applies to its output; files read as
        // written are read in the projection's columns only
        let partition = self.schema.index_of(&self.partition_by).ok();
        let file_fields: Vec<Arc<Field>> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != partition)
            .map(|(_, f)| f.clone())
            .collect();
        let file_schema = Arc::new(Schema::new(file_fields));
        let partition_fields: Vec<Arc<Field>> = partition
            .map(|i| Arc::new(self.schema.field(i).clone().with_nullable(true)))
            .into_iter()
            .collect();
        let partition_type = partition.map(|i| self.schema.field(i).data_type().clone());
        let lake = match (&self.lake, self.files.is_empty()) {
            (Some(lake), _) => Some(lake),
            (None, true) => None,
            (None, false) => {
                return Err(DataFusionError::Internal(
                    "events: files without a lake".into(),
                ));
            }
        };
        // files the running plugin wrote are read as they are (applying an
        // idempotent plugin again is a no-op); the others go through it
        let (fresh, stale): (Vec<&LakeFile>, Vec<&LakeFile>) = self
            .files
            .iter()
            .partition(|f| self.plugin.as_ref().is_some_and(|p| p.skips(&f.path)));
        let mut parts = Vec::new();
        for (files, plugin) in [(fresh, None), (stale, self.plugin.clone())] {
            if files.is_empty() {
                continue;
            }
            let Some(lake) = lake else { break };
            let mut scanned = Vec::with_capacity(files.len());
            for file in files {
                let meta = ObjectMeta {
                    location: lake.key(&file.path),
                    last_modified: chrono::DateTime::<chrono::Utc>::MIN_UTC,
                    size: file.bytes,
                    e_tag: None,
                    version: None,
                };
                let mut pf = PartitionedFile::new_from_meta(meta);
                if let Some(ty) = &partition_type {
                    let value = match &file.partition_value {
                        None => ScalarValue::try_from(ty)?,
                        Some(v) => ScalarValue::try_from_string(v.clone(), ty)?,
                    };
                    pf = pf.with_partition_values(vec![value]);
                }
                scanned.push(pf);
            }
            // files spread over the partitions by size; DataFusion splits
            // large ones by byte range (repartition_file_scans)
            let groups = spread(scanned, state.config().target_partitions());
            let source = ParquetSource::new(
                TableSchema::builder(file_schema.clone())
                    .with_table_partition_cols(partition_fields.clone())
                    .build(),
            );
            let config = FileScanConfigBuilder::new(store_url(lake)?, Arc::new(source))
                .with_file_groups(groups);
            let (config, table, projection) = match (&plugin, projection) {
                (None, Some(columns)) => {
                    // scan indices: the file's columns, then the partition column
                    let scan: Vec<usize> = columns
                        .iter()
                        .map(|&i| match partition {
                            Some(p) if i == p => file_schema.fields().len(),
                            Some(p) if i > p => i - 1,
                            _ => i,
                        })
                        .collect();
                    (
                        config.with_projection_indices(Some(scan))?,
                        Arc::new(self.schema.project(columns)?),
                        None,
                    )
                }
                (_, projection) => (config, self.schema.clone(), projection.cloned()),
            };
            parts.push(Arc::new(EventsExec::new(
                DataSourceExec::from_data_source(config.build()),
                table,
                projection,
                plugin,
                self.tally.clone(),
            )?) as Arc<dyn ExecutionPlan>);
        }
        match parts.len() {
            0 => Ok(Arc::new(EventsExec::new(
                Arc::new(datafusion::physical_plan::empty::EmptyExec::new(
                    self.schema.clone(),
                )),
                self.schema.clone(),
                projection.cloned(),
                None,
                self.tally.clone(),
            )?)),
            1 => Ok(parts.swap_remove(0)),
            _ => datafusion::physical_plan::union::UnionExec::try_new(parts),
        }
    }
}
/// `files` in `n` groups of about equal bytes (largest first).
fn spread(mut files: Vec<PartitionedFile>, n: usize) -> Vec<FileGroup> {
    let n = n.clamp(1, files.len().max(1));
    files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for file in files {
        let smallest = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("n >= 1");
        smallest.0 += file.object_meta.size;
        smallest.1.push(file);
    }
    groups
        .into_iter()
        .filter(|(_, g)| !g.is_empty())
        .map(|(_, g)| FileGroup::new(g))
        .collect()
}

/// Brings scanned rows to the table's column order and runs each input
/// stream through its own plugin instance (on a blocking thread), then
/// projects. Rows the plugin drops or rejects are counted in the tally.
#[derive(Debug)]
pub struct EventsExec {
    input: Arc<dyn ExecutionPlan>,
    /// the rows' schema: the table's (the plugin's input and output), or
    /// without a plugin the projected columns the scan reads.
    table: SchemaRef,
    /// for each of its columns, its index in the input.
    order: Vec<usize>,
    projection: Option<Vec<usize>>,
    plugin: Option<BatchPlugin>,
    tally: Arc<Mutex<Tally>>,
    properties: Arc<PlanProperties>,
}

impl EventsExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        table: SchemaRef,
        projection: Option<Vec<usize>>,
        plugin: Option<BatchPlugin>,
        tally: Arc<Mutex<Tally>>,
    ) -> DfResult<Self> {
        let scanned = input.schema();
        let order = table
            .fields()
            .iter()
            .map(|f| scanned.index_of(f.name()))
            .collect::<Result<Vec<_>, _>>()?;
        let output = match &projection {
            Some(p) => Arc::new(table.project(p)?),
            None => table.clone(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(output),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(EventsExec {
            input,
            table,
            order,
            projection,
            plugin,
            tally,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for EventsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.plugin {
            Some(p) => write!(f, "EventsExec: plugin={}", p.plugin.label()),
            None => write!(f, "EventsExec: no plugin"),
        }
    }
}

impl ExecutionPlan for EventsExec {
    fn name(&self) -> &'static str {
        "EventsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "EventsExec takes one input, got {}",
                children.len()
            )));
        }
        Ok(Arc::new(EventsExec::new(
            children.swap_remove(0),
            self.table.clone(),
            self.projection.clone(),
            self.plugin.clone(),
            self.tally.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let state = Stream {
            input,
            runner: None,
            plugin: self.plugin.clone(),
            table: self.table.clone(),
            order: self.order.clone(),
            projection: self.projection.clone(),
            tally: self.tally.clone(),
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            let batch = match state.input.next().await? {
                Ok(batch) => batch,
                Err(e) => return Some((Err(e), state)),
            };
            let result = state.process(batch).await;
            Some((result, state))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.properties.eq_properties.schema().clone(),
            stream,
        )))
    }
}

/// One partition's stream through its plugin instance.
struct Stream {
    input: SendableRecordBatchStream,
    runner: Option<PluginRunner>,
    plugin: Option<BatchPlugin>,
    table: SchemaRef,
    order: Vec<usize>,
    projection: Option<Vec<usize>>,
    tally: Arc<Mutex<Tally>>,
}

impl Stream {
    async fn process(&mut self, batch: RecordBatch) -> DfResult<RecordBatch> {
        let rows = batch.num_rows() as u64;
        // (a projection may keep no column: the row count is carried)
        let batch = RecordBatch::try_new_with_options(
            self.table.clone(),
            batch.project(&self.order)?.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?;
        let (kept, dropped, rejected) = match &self.plugin {
            None => (batch, Vec::new(), Vec::new()),
            Some(plugin) => {
                let runner = self.runner.take();
                let plugin = plugin.clone();
                let table = self.table.clone();
                let (runner, processed) = tokio::task::spawn_blocking(move || {
                    let mut runner = match runner {
                        Some(r) => r,
                        None => start_plugin(&plugin, &table)?,
                    };
                    let processed = runner.process(&batch);
                    Ok::<_, String>((runner, processed))
                })
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .map_err(DataFusionError::Execution)?;
                self.runner = Some(runner);
                let mut dropped = Vec::new();
                let mut rejected = Vec::new();
                for e in processed.excluded {
                    match e.verdict {
                        Verdict::Drop => dropped.push(e.reason),
                        Verdict::Reject => rejected.push(e.reason),
                    }
                }
                (processed.batch, dropped, rejected)
            }
        };
        {
            let mut t = self.tally.lock().expect("tally");
            t.rows_read += rows;
            if self.plugin.is_some() {
                t.rows_recleaned += rows;
            }
            t.rows_kept += kept.num_rows() as u64;
            for reason in dropped {
                crate::tally(&mut t.dropped, &reason);
            }
            for reason in rejected {
                crate::tally(&mut t.rejected, &reason);
            }
        }
        match &self.projection {
            Some(p) => Ok(kept.project(p)?),
            None => Ok(kept),
        }
    }
}

/// Instantiate the plugin over the table's own schema: by contract it
/// declares that same schema back.
pub(super) fn start_plugin(
    plugin: &BatchPlugin,
    schema: &SchemaRef,
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
