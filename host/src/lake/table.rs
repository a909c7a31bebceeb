//! The lake's two Delta tables (data and dead letters), opened through
//! delta-rs, and the exactly-once commit of one flush cycle.
//!
//! Each commit carries one `txn` action per Kafka partition it covers
//! (app id `weir-<pipeline>-<topic>-<partition>`, version = the last offset
//! included). A writer states, per partition, which `txn` version it resumed
//! from; the commit goes through only where the table still says so. delta-rs's
//! conflict checker fences the window between the snapshot read and the
//! commit: a commit that lost the race for a partition's `txn` fails with a
//! concurrent-transaction conflict, the lake re-reads the table, leaves the
//! fenced partitions out and commits the rest. A loser's files are in no
//! table version.
//!
//! Dead letters are committed first, data second. A crash between the two
//! leaves the dead-letter table ahead; the writer resumes after the data
//! table's version and skips dead letters up to the dead-letter table's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::Schema;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{
    CommitBuilder, CommitConflictError, CommitProperties, TransactionError,
};
use deltalake::kernel::{Action, Add, Remove, StructType, Transaction};
use deltalake::logstore::LogStoreRef;
use deltalake::protocol::{DeltaOperation, OutputMode, SaveMode};
use deltalake::table::config::TablePropertiesExt;
use deltalake::table::state::DeltaTableState;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, TableProperty};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use object_store::ObjectStore;
use serde_json::{Value, json};

use crate::objstore::{Location, StoreError};
use crate::pipeline::LakeConfig;

/// A lake operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The lake URL cannot be used, or a file cannot be written or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// delta-rs failed on one of the tables.
    #[error("delta table `{url}`: {source}")]
    Delta {
        /// the table's URL.
        url: String,
        /// delta-rs's error.
        #[source]
        source: Box<DeltaTableError>,
    },
    /// The table exists with a schema or layout weir cannot write.
    #[error("delta table `{url}`: {message}")]
    Schema {
        /// the table's URL.
        url: String,
        /// what differs, and what was expected.
        message: String,
    },
    /// A file could not be encoded.
    #[error("cannot encode `{path}` as Parquet: {reason}")]
    Encode {
        /// the file's path under its table.
        path: String,
        /// the encoder's error.
        reason: String,
    },
    /// A commit kept losing to concurrent writers.
    #[error(
        "delta table `{url}`: gave up after {attempts} commit attempts lost to concurrent writers"
    )]
    Contended {
        /// the table's URL.
        url: String,
        /// attempts made.
        attempts: usize,
    },
}

/// Which of the lake's two tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// cleaned events, partitioned by `lake.partition_by`.
    Data,
    /// rejected messages with their reasons.
    DeadLetters,
}

/// A Parquet file written under a table's directory, not yet committed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StagedFile {
    /// path relative to the table root (`event_date=2026-11-20/x.parquet`).
    pub path: String,
    /// the partition value, for data files.
    pub partition_value: Option<String>,
    /// rows in the file.
    pub rows: u64,
    /// size in bytes.
    pub bytes: u64,
}

/// What an existing table does with a schema that has columns it lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaChange {
    /// refuse it, naming the column (`plugin.allow_schema_change = false`).
    Refuse,
    /// add the new columns when they are nullable (old files read them
    /// as null); a changed type or a new non-nullable column is refused.
    AddNullableColumns,
}

impl SchemaChange {
    /// The policy `plugin.allow_schema_change` asks for.
    pub fn allowed(allow: bool) -> Self {
        if allow {
            SchemaChange::AddNullableColumns
        } else {
            SchemaChange::Refuse
        }
    }
}

/// The `txn` versions of one Kafka partition in the two tables: the last
/// offset each holds (`None`: nothing yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// last offset in the data table.
    pub data: Option<i64>,
    /// last offset in the dead-letter table.
    pub dead: Option<i64>,
}

impl Resume {
    /// The offset to consume from: right after the data table's.
    pub fn next_offset(&self) -> i64 {
        self.data.map_or(0, |v| v + 1)
    }
}

/// One Kafka partition's share of a flush cycle.
#[derive(Clone, Debug)]
pub struct PartitionFlush {
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// what the writer resumed from (and committed since): the commit goes
    /// through only if the tables still say this.
    pub expected: Resume,
    /// the last offset this flush covers.
    pub last_offset: i64,
    /// data files.
    pub data_files: Vec<StagedFile>,
    /// dead-letter files.
    pub dead_files: Vec<StagedFile>,
}

/// What became of one partition of a flush cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionOutcome {
    /// In the tables.
    Committed,
    /// Another writer committed this partition first; resume from here.
    Fenced(Resume),
}

/// The outcome of a flush cycle's commit.
#[derive(Clone, Debug)]
pub struct CommitReport {
    /// per partition, in the order given.
    pub outcomes: Vec<PartitionOutcome>,
    /// the data table's version after the commit (if it committed).
    pub data_version: Option<i64>,
    /// the dead-letter table's version after its commit (if any).
    pub dead_version: Option<i64>,
}

/// Provenance written into `commitInfo`.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// sha256 of the plugin that produced the data.
    pub plugin_digest: String,
    /// counts of the flush (read, kept, dropped, dead-lettered).
    pub counts: BTreeMap<&'static str, u64>,
}

/// One Delta table: where it is and delta-rs's handle on it.
#[derive(Clone, Debug)]
pub struct Table {
    location: Location,
    table: DeltaTable,
    /// `txn` versions known as of version `txns_at` of the log: kept up to
    /// date by reading only the commits after it, so checking a partition's
    /// version costs no replay of the log.
    txns: HashMap<String, Option<i64>>,
    txns_at: Option<i64>,
    /// a streaming commit whose snapshot is still being read (see
    /// [`Table::catch_up`]).
    settling: Option<Settling>,
}

/// The snapshot of a commit made, read in a task of its own: delta-rs reads
/// a new commit back after writing it (a listing and two reads, plus a
/// checkpoint every `checkpointInterval` commits), and none of that decides
/// whether the commit is in. A streaming commit returns once its log entry
/// is written; the next use of the snapshot waits for this.
#[derive(Clone)]
struct Settling {
    /// the version committed.
    version: i64,
    /// its snapshot, or `None` when reading it failed (the table is then
    /// read again from the log).
    snapshot: Shared<BoxFuture<'static, Option<DeltaTableState>>>,
}

impl std::fmt::Debug for Settling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settling")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Table {
    fn open(location: Location) -> Result<Self, LakeError> {
        let url = location.url().clone();
        let table = DeltaTableBuilder::from_url(url.clone())
            .and_then(|b| {
                b.with_storage_backend(location.store().clone(), url.clone())
                    .build()
            })
            .map_err(|source| LakeError::Delta {
                url: url.to_string(),
                source: Box::new(source),
            })?;
        Ok(Table {
            location,
            table,
            txns: HashMap::new(),
            txns_at: None,
            settling: None,
        })
    }

    /// Wait for the snapshot of the last streaming commit (if it is still
    /// being read) and take it as the table's; when reading it failed, read
    /// the log's tail instead. Until that succeeds, the commit stays
    /// pending (a wait cut short or a failed read is taken up again by the
    /// next call), so the table never answers from the snapshot before it.
    async fn catch_up(&mut self) -> Result<(), LakeError> {
        let Some(settling) = self.settling.clone() else {
            return Ok(());
        };
        match settling.snapshot.await {
            Some(state) => self.table.state = Some(state),
            None => self
                .table
                .update_incremental(Some(settling.version as u64))
                .await
                .map_err(|e| self.fail(e))?,
        }
        self.settling = None;
        Ok(())
    }

    /// The table's URL.
    pub fn url(&self) -> String {
        self.location.url().to_string()
    }

    /// Where the table is (to write and read its files).
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// delta-rs's table (loaded once [`Table::refresh`] found it).
    pub fn delta(&self) -> &DeltaTable {
        &self.table
    }

    /// The log store (commits, checkpoints).
    pub fn log_store(&self) -> LogStoreRef {
        self.table.log_store()
    }

    /// A delta-rs error of this table, naming it.
    pub(super) fn fail(&self, source: DeltaTableError) -> LakeError {
        LakeError::Delta {
            url: self.url(),
            source: Box::new(source),
        }
    }

    /// Read what is new in the log (checkpoint plus tail the first time,
    /// the tail after that). `false` when no table exists yet.
    pub async fn refresh(&mut self) -> Result<bool, LakeError> {
        self.catch_up().await?;
        if self.table.version().is_none() {
            // before the first load, ask whether there is a log at all (a
            // missing table is no error, and delta-rs would log it as one)
            let exists = self
                .table
                .verify_deltatable_existence()
                .await
                .map_err(|e| self.fail(e))?;
            if !exists {
                return Ok(false);
            }
        }
        match self.table.update_incremental(None).await {
            Ok(()) => Ok(true),
            Err(DeltaTableError::NotATable(_)) | Err(DeltaTableError::InvalidTableLocation(_)) => {
                Ok(false)
            }
            Err(e) if self.table.version().is_none() && is_missing(&e) => Ok(false),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The loaded version, or the last one committed through it (`None`
    /// before the table exists).
    pub fn version(&self) -> Option<i64> {
        match &self.settling {
            Some(s) => Some(s.version),
            None => self.table.version().map(|v| v as i64),
        }
    }

    /// The `txn` version of `app_id` in the loaded snapshot. The first
    /// question about an app id replays the log (checkpoint and tail); after
    /// that, only the commits added since are read.
    async fn txn_version(&mut self, app_id: &str) -> Result<Option<i64>, LakeError> {
        let Some(current) = self.version() else {
            return Ok(None);
        };
        match self.txns_at {
            Some(at) if at < current => {
                for version in at + 1..=current {
                    let entry = self
                        .log_store()
                        .read_commit_entry(version as u64)
                        .await
                        .map_err(|e| self.fail(e))?;
                    let Some(bytes) = entry else {
                        // cleaned up: start over from the snapshot
                        self.txns.clear();
                        break;
                    };
                    let actions = deltalake::logstore::get_actions(version as u64, &bytes)
                        .map_err(|e| self.fail(e))?;
                    for action in actions {
                        if let Action::Txn(txn) = action {
                            self.txns.insert(txn.app_id, Some(txn.version));
                        }
                    }
                }
            }
            Some(at) if at == current => {}
            _ => self.txns.clear(),
        }
        self.txns_at = Some(current);
        if let Some(known) = self.txns.get(app_id) {
            return Ok(*known);
        }
        self.catch_up().await?;
        let state = self.table.snapshot().map_err(|e| self.fail(e))?;
        let found = state
            .transaction_version(self.table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| self.fail(e))?;
        self.txns.insert(app_id.to_string(), found);
        Ok(found)
    }

    /// Create the table with `schema` unless it exists (another writer may
    /// create it at the same moment: then this one loads it).
    async fn ensure(
        &mut self,
        schema: &Schema,
        partition_by: Option<&str>,
        properties: &[(String, String)],
        name: &str,
        change: SchemaChange,
    ) -> Result<(), LakeError> {
        if self.refresh().await? {
            return match change {
                SchemaChange::Refuse => self.check_schema(schema),
                SchemaChange::AddNullableColumns => self.evolve(schema).await.map(|_| ()),
            };
        }
        let delta: StructType = schema.try_into_kernel().map_err(|e| LakeError::Schema {
            url: self.url(),
            message: format!("the schema cannot be a Delta schema: {e}"),
        })?;
        let mut create = self
            .table
            .clone()
            .create()
            .with_table_name(name)
            .with_columns(delta.fields().cloned())
            .with_save_mode(SaveMode::Ignore)
            .with_commit_properties(
                CommitProperties::default()
                    .with_metadata([("weir.version".to_string(), json!(crate::VERSION))]),
            );
        if let Some(column) = partition_by {
            create = create.with_partition_columns([column]);
        }
        create =
            create.with_configuration(properties.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
        match create.await {
            Ok(table) => self.table = table,
            Err(e) => {
                // lost a creation race: the winner's table is there now
                if !self.refresh().await? {
                    return Err(self.fail(e));
                }
            }
        }
        tracing::info!(table = %self.url(), version = ?self.version(), "delta table ready");
        self.check_schema(schema)
    }

    /// The table's schema must hold every column of `schema`, same Delta
    /// types (a millisecond timestamp is a Delta timestamp).
    pub fn check_schema(&self, schema: &Schema) -> Result<(), LakeError> {
        let (_, missing) = self.compare_schema(schema)?;
        match missing.first() {
            None => Ok(()),
            Some(field) => Err(LakeError::Schema {
                url: self.url(),
                message: format!(
                    "the table has no column `{}` (a new column needs plugin.allow_schema_change)",
                    field.name()
                ),
            }),
        }
    }

    /// Compare `schema` with the table's: an error for a column whose type
    /// differs (Delta cannot change a column's type in place), else the
    /// table's kernel schema and the columns the table lacks.
    fn compare_schema(
        &self,
        schema: &Schema,
    ) -> Result<(StructType, Vec<deltalake::kernel::StructField>), LakeError> {
        let state = self.table.snapshot().map_err(|e| self.fail(e))?;
        let table: StructType = state.schema().as_ref().clone();
        let declared: StructType = schema.try_into_kernel().map_err(|e| LakeError::Schema {
            url: self.url(),
            message: format!("the schema cannot be a Delta schema: {e}"),
        })?;
        let mut missing = Vec::new();
        for field in declared.fields() {
            match table.field(field.name()) {
                Some(existing) if existing.data_type() == field.data_type() => {}
                Some(existing) => {
                    return Err(LakeError::Schema {
                        url: self.url(),
                        message: format!(
                            "column `{}` is {} in the table, the plugin declares {}; Delta cannot change a column's type",
                            field.name(),
                            existing.data_type(),
                            field.data_type()
                        ),
                    });
                }
                None => missing.push(field.clone()),
            }
        }
        Ok((table, missing))
    }

    /// Evolve the table to accept `schema`: new columns must be nullable
    /// and are added through Delta metadata (old files read them as null);
    /// columns it drops must be nullable. Anything else is refused with the
    /// reason, and the table is left as it is.
    pub async fn evolve(&mut self, schema: &Schema) -> Result<Vec<String>, LakeError> {
        self.refresh().await?;
        let (table, missing) = self.compare_schema(schema)?;
        for field in table.fields() {
            if schema.field_with_name(field.name()).is_err() && !field.is_nullable() {
                return Err(LakeError::Schema {
                    url: self.url(),
                    message: format!(
                        "the new schema drops the non-nullable column `{}`",
                        field.name()
                    ),
                });
            }
        }
        if let Some(field) = missing.iter().find(|f| !f.is_nullable()) {
            return Err(LakeError::Schema {
                url: self.url(),
                message: format!(
                    "new column `{}` is not nullable: the table's existing rows have no value for it",
                    field.name()
                ),
            });
        }
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let names = missing.iter().map(|f| f.name().to_string()).collect();
        let evolved = self
            .table
            .clone()
            .add_columns()
            .with_fields(missing)
            .await
            .map_err(|e| self.fail(e))?;
        self.table = evolved;
        tracing::info!(table = %self.url(), columns = ?names, "table schema evolved");
        Ok(names)
    }

    /// The table's schema as Arrow.
    pub fn arrow_schema(&self) -> Result<Arc<Schema>, LakeError> {
        let state = self.table.snapshot().map_err(|e| self.fail(e))?;
        Ok(state.snapshot().arrow_schema())
    }

    /// Commit `actions` with `txns`, retried by delta-rs past writers that
    /// do not conflict. `Ok(None)`: a concurrent writer updated one of the
    /// `txn` app ids first.
    async fn commit(
        &mut self,
        actions: Vec<Action>,
        txns: Vec<Transaction>,
        metadata: Vec<(String, Value)>,
        epoch: i64,
        retries: usize,
    ) -> Result<Option<i64>, LakeError> {
        let operation = DeltaOperation::StreamingUpdate {
            output_mode: OutputMode::Append,
            query_id: "weir".to_string(),
            epoch_id: epoch,
        };
        self.commit_as(
            operation,
            actions,
            txns,
            metadata,
            retries,
            AfterCommit::ReadInBackground,
        )
        .await
    }

    /// Commit `actions` as `operation` (see [`Table::commit`]); `after`
    /// says whether the new snapshot is read before this returns.
    async fn commit_as(
        &mut self,
        operation: DeltaOperation,
        actions: Vec<Action>,
        txns: Vec<Transaction>,
        metadata: Vec<(String, Value)>,
        retries: usize,
        after: AfterCommit,
    ) -> Result<Option<i64>, LakeError> {
        // what this commit sets, to keep the `txn` cache without reading the
        // commit back (one GET per commit on an object store)
        let committed: Vec<(String, i64)> =
            txns.iter().map(|t| (t.app_id.clone(), t.version)).collect();
        self.catch_up().await?;
        let state = self.table.snapshot().map_err(|e| self.fail(e))?.clone();
        // delta-rs lists the whole `_delta_log` after every commit to expire
        // old entries: a request that grows with the log, on the commit's
        // path. Expire them when a checkpoint is written instead (as Spark
        // does), under the table's own `delta.enableExpiredLogCleanup`.
        let interval = state.table_config().checkpoint_interval().get();
        let checkpoint_due = (state.version() + 2).is_multiple_of(interval);
        let properties = CommitProperties::default()
            .with_metadata(metadata)
            .with_application_transactions(txns)
            .with_max_retries(retries)
            .with_cleanup_expired_logs((!checkpoint_due).then_some(false));
        let written = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(&state), self.table.log_store(), operation)
            .into_prepared_commit_future()
            .await;
        // the log entry is written once the prepared commit resolves; what
        // is left reads the new snapshot back (and writes a checkpoint when
        // one is due)
        let result = match written {
            Ok(prepared) => prepared.await,
            Err(e) => Err(e),
        };
        let result = match (result, after) {
            (Ok(post), AfterCommit::ReadInBackground) => {
                let version = post.version as i64;
                let url = self.url();
                let task = tokio::spawn(post.into_future());
                let snapshot = async move {
                    let read = match task.await {
                        Ok(read) => read.map_err(|e| e.to_string()),
                        Err(stopped) => Err(stopped.to_string()),
                    };
                    read.inspect_err(|error| {
                        tracing::debug!(table = %url, version, %error,
                            "reading a commit back failed; the log is read again");
                    })
                    .ok()
                    .map(|done| done.snapshot)
                };
                self.settling = Some(Settling {
                    version,
                    snapshot: snapshot.boxed().shared(),
                });
                Ok(version)
            }
            (Ok(post), AfterCommit::Wait) => post.await.map(|done| {
                self.table.state = Some(done.snapshot());
                done.version() as i64
            }),
            (Err(e), _) => Err(e),
        };
        match result {
            Ok(version) => {
                if self.txns_at == Some(version - 1) {
                    // no other writer committed in between: the cache moves
                    // by exactly what this commit set
                    for (app_id, v) in committed {
                        self.txns.insert(app_id, Some(v));
                    }
                    self.txns_at = Some(version);
                }
                Ok(Some(version))
            }
            Err(DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
            }) => Ok(None),
            Err(DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(attempts),
            }) => Err(LakeError::Contended {
                url: self.url(),
                attempts: attempts.max(0) as usize,
            }),
            Err(e) => Err(self.fail(e)),
        }
    }
}

/// Whether a commit returns before its snapshot is read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterCommit {
    /// read it before returning.
    Wait,
    /// read it in a task; the next use of the table waits for it.
    ReadInBackground,
}

/// Whether a load failed because nothing is there yet.
fn is_missing(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::ObjectStore {
            source: object_store::Error::NotFound { .. }
        }
    ) || e.to_string().contains("No files in log segment")
}

/// The lake of one pipeline: the data table and the dead-letter table.
#[derive(Clone, Debug)]
pub struct Lake {
    config: LakeConfig,
    pipeline: String,
    data: Table,
    dead: Table,
}

impl Lake {
    /// Open the lake of `config` (nothing is read or created yet).
    pub fn open(config: &LakeConfig, pipeline: &str) -> Result<Self, LakeError> {
        let location = Location::open(&config.url, &config.s3)?;
        Self::open_at(config, pipeline, location)
    }

    /// Open the lake at an already opened location (for example through an
    /// instrumented store).
    pub fn open_at(
        config: &LakeConfig,
        pipeline: &str,
        location: Location,
    ) -> Result<Self, LakeError> {
        let dead_location = match &config.dead_letters_url {
            Some(url) => Location::open(url, &config.s3)?.with_store(location.store().clone()),
            None => location.child("_dead_letters")?,
        };
        Ok(Lake {
            config: config.clone(),
            pipeline: pipeline.to_string(),
            data: Table::open(location)?,
            dead: Table::open(dead_location)?,
        })
    }

    /// The lake's configuration.
    pub fn config(&self) -> &LakeConfig {
        &self.config
    }

    /// The data table.
    pub fn data(&self) -> &Table {
        &self.data
    }

    /// The dead-letter table.
    pub fn dead_letters(&self) -> &Table {
        &self.dead
    }

    /// One of the two tables, mutably (to refresh it).
    pub fn table_mut(&mut self, kind: TableKind) -> &mut Table {
        match kind {
            TableKind::Data => &mut self.data,
            TableKind::DeadLetters => &mut self.dead,
        }
    }

    /// The lake URL.
    pub fn url(&self) -> String {
        self.data.url()
    }

    /// Create both tables unless they exist: the data table with the
    /// plugin's output schema, partitioned by `lake.partition_by`. An
    /// existing data table must take `data_schema` as it is, or with
    /// `change` evolve to it.
    pub async fn ensure_tables(
        &mut self,
        data_schema: &Schema,
        dead_schema: &Schema,
        change: SchemaChange,
    ) -> Result<(), LakeError> {
        let properties = vec![
            (
                TableProperty::CheckpointInterval.as_ref().to_string(),
                self.config.checkpoint_interval.to_string(),
            ),
            (
                TableProperty::AppendOnly.as_ref().to_string(),
                "false".to_string(),
            ),
        ];
        let name = self.pipeline.clone();
        let partition_by = self.config.partition_by.clone();
        self.data
            .ensure(data_schema, Some(&partition_by), &properties, &name, change)
            .await?;
        self.dead
            .ensure(
                dead_schema,
                None,
                &properties,
                &format!("{name}_dead_letters"),
                SchemaChange::Refuse,
            )
            .await
    }

    /// The `txn` app id of a Kafka partition.
    pub fn app_id(&self, topic: &str, partition: i32) -> String {
        format!("weir-{}-{topic}-{partition}", self.pipeline)
    }

    /// Read what is new in both tables' logs.
    pub async fn refresh(&mut self) -> Result<(), LakeError> {
        self.data.refresh().await?;
        self.dead.refresh().await?;
        Ok(())
    }

    /// Wait, at most `within`, for the snapshots of both tables' last
    /// streaming commits still being read back (before the runtime stops:
    /// a read cut off by the runtime's end reports a crash of delta-rs's
    /// executor). The commits are in the log whether or not this finishes.
    pub async fn finish_reads(&mut self, within: std::time::Duration) -> Result<(), LakeError> {
        let reads = async {
            self.data.catch_up().await?;
            self.dead.catch_up().await
        };
        match tokio::time::timeout(within, reads).await {
            Ok(done) => done,
            Err(_) => {
                tracing::warn!(
                    within_ms = within.as_millis() as u64,
                    "the lake's last commits are still being read back; stopping anyway"
                );
                Ok(())
            }
        }
    }

    /// Where a partition stands in the snapshots loaded (see [`Lake::refresh`]).
    pub async fn resume(&mut self, topic: &str, partition: i32) -> Result<Resume, LakeError> {
        let app_id = self.app_id(topic, partition);
        Ok(Resume {
            data: self.data.txn_version(&app_id).await?,
            dead: self.dead.txn_version(&app_id).await?,
        })
    }

    /// Commit one flush cycle: the dead letters of every partition in one
    /// commit, then the data of every partition in one commit. Partitions
    /// another writer committed first are left out and reported as fenced;
    /// their files are in no version.
    ///
    /// Once the dead letters are in, each partition's `expected.dead` moves
    /// to its last offset and its dead-letter files are cleared, so calling
    /// again after a failed data commit does not add them twice.
    pub async fn commit(
        &mut self,
        flush: &mut [PartitionFlush],
        provenance: &Provenance,
    ) -> Result<CommitReport, LakeError> {
        let mut outcomes = vec![PartitionOutcome::Committed; flush.len()];
        let retries = self.config.commit_retries;
        let now = chrono::Utc::now().timestamp_millis();
        let metadata = self.commit_metadata(provenance);
        let mut report = CommitReport {
            outcomes: Vec::new(),
            data_version: None,
            dead_version: None,
        };
        for kind in [TableKind::DeadLetters, TableKind::Data] {
            for attempt in 1.. {
                // the partitions still in, and whether the table agrees with
                // what each writer resumed from
                for (i, p) in flush.iter().enumerate() {
                    if outcomes[i] != PartitionOutcome::Committed {
                        continue;
                    }
                    let expected = match kind {
                        TableKind::Data => p.expected.data,
                        TableKind::DeadLetters => p.expected.dead,
                    };
                    let app_id = self.app_id(&p.topic, p.partition);
                    let table = self.table_mut(kind);
                    let found = table.txn_version(&app_id).await?;
                    if found != expected {
                        let url = table.url();
                        let now = self.resume(&p.topic, p.partition).await?;
                        tracing::warn!(
                            partition = %format!("{}/{}", p.topic, p.partition), table = %url,
                            expected = ?expected, found = ?found,
                            "another writer committed this partition first; its flush is dropped"
                        );
                        outcomes[i] = PartitionOutcome::Fenced(now);
                    }
                }
                let mut actions = Vec::new();
                let mut txns = Vec::new();
                for (i, p) in flush.iter().enumerate() {
                    if outcomes[i] != PartitionOutcome::Committed {
                        continue;
                    }
                    let files = match kind {
                        TableKind::Data => &p.data_files,
                        TableKind::DeadLetters => &p.dead_files,
                    };
                    // the dead-letter table moves only for partitions with dead letters
                    if kind == TableKind::DeadLetters && files.is_empty() {
                        continue;
                    }
                    txns.push(Transaction::new_with_last_update(
                        self.app_id(&p.topic, p.partition),
                        p.last_offset,
                        Some(now),
                    ));
                    for f in files {
                        actions.push(Action::Add(self.add_action(f, now)));
                    }
                }
                if txns.is_empty() {
                    break;
                }
                let table = self.table_mut(kind);
                let epoch = table.version().unwrap_or(0) + 1;
                match table
                    .commit(actions, txns, metadata.clone(), epoch, retries)
                    .await?
                {
                    Some(version) => {
                        match kind {
                            TableKind::Data => report.data_version = Some(version),
                            TableKind::DeadLetters => {
                                report.dead_version = Some(version);
                                for (i, p) in flush.iter_mut().enumerate() {
                                    if outcomes[i] == PartitionOutcome::Committed
                                        && !p.dead_files.is_empty()
                                    {
                                        p.expected.dead = Some(p.last_offset);
                                        p.dead_files.clear();
                                    }
                                }
                            }
                        }
                        break;
                    }
                    None if attempt < retries.max(1) => {
                        // lost a partition to a concurrent writer: re-read
                        // the table, fence what it took, commit the rest
                        table.refresh().await?;
                    }
                    None => {
                        return Err(LakeError::Contended {
                            url: table.url(),
                            attempts: attempt,
                        });
                    }
                }
            }
        }
        report.outcomes = outcomes;
        Ok(report)
    }

    /// Replace the active data files `old` of partition value `date` by
    /// `new` in one commit (a Delta `WRITE` overwriting that date), so a
    /// reader sees the old rows or the new, never both. A concurrent
    /// commit that added files to the date makes it fail (re-read and
    /// try again). The new table version.
    pub async fn replace_date(
        &mut self,
        date: &str,
        old: &[super::LakeFile],
        new: &[StagedFile],
        provenance: &Provenance,
    ) -> Result<i64, LakeError> {
        let now = chrono::Utc::now().timestamp_millis();
        let column = self.config.partition_by.clone();
        let mut actions: Vec<Action> = new
            .iter()
            .map(|f| Action::Add(self.add_action(f, now)))
            .collect();
        for f in old {
            actions.push(Action::Remove(Remove {
                path: f.path.clone(),
                data_change: true,
                deletion_timestamp: Some(now),
                extended_file_metadata: Some(true),
                partition_values: Some(HashMap::from([(
                    column.clone(),
                    f.partition_value
                        .clone()
                        .filter(|v| v != super::partition::NULL_PARTITION),
                )])),
                size: Some(f.bytes as i64),
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
            }));
        }
        let operation = DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: Some(vec![column.clone()]),
            predicate: Some(format!("{column} = '{}'", date.replace('\'', "''"))),
        };
        let metadata = self.commit_metadata(provenance);
        let retries = self.config.commit_retries;
        let url = self.data.url();
        self.data
            .commit_as(
                operation,
                actions,
                Vec::new(),
                metadata,
                retries,
                AfterCommit::Wait,
            )
            .await?
            .ok_or(LakeError::Contended { url, attempts: 1 })
    }

    /// `commitInfo` of weir's commits: who wrote them and with which plugin.
    fn commit_metadata(&self, provenance: &Provenance) -> Vec<(String, Value)> {
        let mut metadata = vec![
            ("weir.version".to_string(), json!(crate::VERSION)),
            ("weir.pipeline".to_string(), json!(self.pipeline)),
            (
                "weir.plugin_digest".to_string(),
                json!(provenance.plugin_digest),
            ),
        ];
        for (key, value) in &provenance.counts {
            metadata.push((format!("weir.{key}"), json!(value)));
        }
        metadata
    }

    fn add_action(&self, file: &StagedFile, now: i64) -> Add {
        let partition_values: HashMap<String, Option<String>> = match &file.partition_value {
            Some(value) => HashMap::from([(
                self.config.partition_by.clone(),
                (value != super::partition::NULL_PARTITION).then(|| value.clone()),
            )]),
            None => HashMap::new(),
        };
        Add {
            path: file.path.clone(),
            partition_values,
            size: file.bytes as i64,
            modification_time: now,
            data_change: true,
            stats: Some(json!({ "numRecords": file.rows }).to_string()),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        }
    }

    /// The object store under both tables (for instrumenting tests).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        self.data.location().store()
    }
}
