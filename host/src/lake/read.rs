//! Reading the lake through the Delta log, never by listing directories:
//! the active files of a date (partition pruning on the snapshot), the
//! dates a commit changed, and what changed since a version.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use deltalake::kernel::Action;
use deltalake::{FilterOp, FilterValue};
use futures::TryStreamExt;
use serde::Serialize;

use super::table::{LakeError, Table};

/// One active file of the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LakeFile {
    /// path relative to the table root.
    pub path: String,
    /// the partition value (`2026-11-20`), for a partitioned table.
    pub partition_value: Option<String>,
    /// rows, from the file's statistics.
    pub rows: u64,
    /// size in bytes.
    pub bytes: u64,
}

/// One commit of the table's history.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryEntry {
    /// table version.
    pub version: Option<i64>,
    /// commit time (ms since the epoch).
    pub timestamp: Option<i64>,
    /// the operation (`STREAMING UPDATE`, `OPTIMIZE`, `VACUUM END`, ...).
    pub operation: Option<String>,
    /// the writer's metadata (weir's: plugin digest, version, counts).
    pub info: BTreeMap<String, serde_json::Value>,
}

/// What changed in a range of versions: per date, the latest version
/// whose commit changed its data (`dataChange = true`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// the newest version read.
    pub version: Option<i64>,
    /// date → latest version that changed it.
    pub dates: BTreeMap<String, i64>,
    /// the log no longer holds every commit of the range (cleaned up):
    /// every date of the snapshot must be treated as changed.
    pub incomplete: bool,
}

impl Table {
    /// The active files, optionally of one partition value (pruned on the
    /// snapshot by partition value; nothing is listed).
    pub async fn files(
        &self,
        partition_by: &str,
        value: Option<&str>,
    ) -> Result<Vec<LakeFile>, LakeError> {
        if self.version().is_none() {
            return Ok(Vec::new());
        }
        let filters = match value {
            Some(v) => vec![(partition_by, FilterOp::Eq, FilterValue::Scalar(v))],
            None => Vec::new(),
        };
        let views: Vec<_> = self
            .delta()
            .get_active_add_actions_by_partitions(&filters)
            .try_collect()
            .await
            .map_err(|e| self.fail(e))?;
        let mut files: Vec<LakeFile> = views
            .into_iter()
            .map(|view| {
                let partition_value = view.partition_values_map().get(partition_by).map(|v| {
                    v.clone()
                        .unwrap_or_else(|| super::partition::NULL_PARTITION.to_string())
                });
                LakeFile {
                    path: view.path().to_string(),
                    partition_value,
                    rows: view.num_records().unwrap_or(0) as u64,
                    bytes: view.size().max(0) as u64,
                }
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// The partition values with at least one active file.
    pub async fn partition_values(
        &self,
        partition_by: &str,
    ) -> Result<BTreeSet<String>, LakeError> {
        Ok(self
            .files(partition_by, None)
            .await?
            .into_iter()
            .filter_map(|f| f.partition_value)
            .collect())
    }

    /// The dates whose data commit `version` changed (adds or removes with
    /// `dataChange = true`; compaction leaves data unchanged). `None` when
    /// the commit is not in the log.
    pub async fn commit_dates(
        &self,
        partition_by: &str,
        version: i64,
    ) -> Result<Option<BTreeSet<String>>, LakeError> {
        let fail = |e| self.fail(e);
        let Some(bytes) = self
            .log_store()
            .read_commit_entry(version as u64)
            .await
            .map_err(fail)?
        else {
            return Ok(None);
        };
        let actions = deltalake::logstore::get_actions(version as u64, &bytes).map_err(fail)?;
        let value = |values: &std::collections::HashMap<String, Option<String>>| {
            values.get(partition_by).map(|v| {
                v.clone()
                    .unwrap_or_else(|| super::partition::NULL_PARTITION.to_string())
            })
        };
        let mut dates = BTreeSet::new();
        for action in &actions {
            let changed = match action {
                Action::Add(add) if add.data_change => value(&add.partition_values),
                Action::Remove(remove) if remove.data_change => {
                    remove.partition_values.as_ref().and_then(&value)
                }
                _ => None,
            };
            dates.extend(changed);
        }
        Ok(Some(dates))
    }

    /// What changed after `since` up to the loaded version: reads only the
    /// commits in between (the tail), never the whole history.
    pub async fn changes_since(
        &self,
        partition_by: &str,
        since: Option<i64>,
    ) -> Result<Changes, LakeError> {
        let Some(current) = self.version() else {
            return Ok(Changes::default());
        };
        let mut changes = Changes {
            version: Some(current),
            ..Changes::default()
        };
        let from = since.map_or(0, |v| v + 1);
        for version in from..=current {
            match self.commit_dates(partition_by, version).await? {
                Some(dates) => {
                    for date in dates {
                        changes.dates.insert(date, version);
                    }
                }
                None => changes.incomplete = true,
            }
        }
        Ok(changes)
    }

    /// The table's history, newest first (at most `limit` commits).
    pub async fn history(&self, limit: Option<usize>) -> Result<Vec<HistoryEntry>, LakeError> {
        if self.version().is_none() {
            return Ok(Vec::new());
        }
        let infos: Vec<_> = self
            .delta()
            .history(limit)
            .try_collect()
            .await
            .map_err(|e| self.fail(e))?;
        // newest first, one per commit file from the loaded version down
        let current = self.version().unwrap_or(0);
        Ok(infos
            .into_iter()
            .enumerate()
            .map(|(i, info)| HistoryEntry {
                version: Some(current - i as i64),
                timestamp: info.timestamp,
                operation: info.operation.clone(),
                info: info
                    .info
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect())
    }
}

/// Bring a batch read from one data file to the table's schema: columns in
/// the table's order and types (a compacted file may store timestamps in
/// microseconds), the partition column filled from the file's partition
/// value (Delta files do not store it), columns the file predates as nulls.
pub fn conform(
    batch: &arrow::record_batch::RecordBatch,
    target: &arrow::datatypes::SchemaRef,
    partition_by: &str,
    partition_value: Option<&str>,
) -> Result<arrow::record_batch::RecordBatch, String> {
    use arrow::array::{ArrayRef, StringArray, new_null_array};
    use arrow::compute::cast;
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => column.clone(),
            Some(column) => cast(column, field.data_type())
                .map_err(|e| format!("column `{}`: {e}", field.name()))?,
            None if field.name() == partition_by => {
                let value = partition_value.filter(|v| *v != super::partition::NULL_PARTITION);
                let strings: ArrayRef = Arc::new(StringArray::from(vec![value; rows]));
                cast(&strings, field.data_type()).map_err(|e| {
                    format!("partition value `{value:?}` as {}: {e}", field.data_type())
                })?
            }
            None if field.is_nullable() => new_null_array(field.data_type(), rows),
            None => return Err(format!("the file has no column `{}`", field.name())),
        };
        columns.push(column);
    }
    arrow::record_batch::RecordBatch::try_new(target.clone(), columns).map_err(|e| e.to_string())
}
