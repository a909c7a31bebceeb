//! Table maintenance, all delta-rs's: compaction of a date's small files
//! (`OPTIMIZE`, a commit with `dataChange = false`, so no re-aggregation),
//! vacuum of files no version references, and the history.

use std::num::NonZeroU64;

use deltalake::operations::vacuum::VacuumMode;
use deltalake::{FilterOp, FilterValue};
use serde::Serialize;

use super::table::{Lake, LakeError, TableKind};

/// What `weir lake optimize` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OptimizeReport {
    /// the table.
    pub table: String,
    /// files written.
    pub files_added: u64,
    /// small files replaced.
    pub files_removed: u64,
    /// partitions compacted.
    pub partitions_optimized: u64,
    /// the table version after.
    pub version: Option<i64>,
}

/// What `weir lake vacuum` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VacuumReport {
    /// the table.
    pub table: String,
    /// whether nothing was deleted.
    pub dry_run: bool,
    /// files removed (or, dry, that would be).
    pub removed: Vec<String>,
}

impl Lake {
    /// Compact the data files of one date (or of every date) into files of
    /// about `lake.optimize_target_bytes`.
    pub async fn optimize(&mut self, date: Option<&str>) -> Result<OptimizeReport, LakeError> {
        let partition_by = self.config().partition_by.clone();
        let target =
            NonZeroU64::new(self.config().optimize_target_bytes.max(1)).unwrap_or(NonZeroU64::MIN);
        let table = self.table_mut(TableKind::Data);
        if !table.refresh().await? {
            return Ok(OptimizeReport {
                table: table.url(),
                ..OptimizeReport::default()
            });
        }
        let filters = match date {
            Some(d) => vec![(partition_by.as_str(), FilterOp::Eq, FilterValue::Scalar(d))],
            None => Vec::new(),
        };
        let url = table.url();
        let (optimized, metrics) = table
            .delta()
            .clone()
            .optimize()
            .with_filters(&filters)
            .with_target_size(target)
            .await
            .map_err(|e| table.fail(e))?;
        let version = optimized.version().map(|v| v as i64);
        table.refresh().await?;
        Ok(OptimizeReport {
            table: url.clone(),
            files_added: metrics.num_files_added,
            files_removed: metrics.num_files_removed,
            partitions_optimized: metrics.partitions_optimized,
            version,
        })
    }

    /// Remove files no table version references any more (replaced by
    /// compaction, or written by a flush that lost or crashed), once they
    /// are older than `retention`. Both tables.
    pub async fn vacuum(
        &mut self,
        retention: std::time::Duration,
        dry_run: bool,
    ) -> Result<Vec<VacuumReport>, LakeError> {
        let mut reports = Vec::new();
        for kind in [TableKind::Data, TableKind::DeadLetters] {
            let table = self.table_mut(kind);
            if !table.refresh().await? {
                continue;
            }
            let url = table.url();
            let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
            let (_, metrics) = table
                .delta()
                .clone()
                .vacuum()
                .with_mode(VacuumMode::Full)
                .with_retention_period(retention)
                .with_enforce_retention_duration(false)
                .with_dry_run(dry_run)
                .await
                .map_err(|e| table.fail(e))?;
            table.refresh().await?;
            reports.push(VacuumReport {
                table: url,
                dry_run,
                removed: metrics.files_deleted,
            });
        }
        Ok(reports)
    }
}
