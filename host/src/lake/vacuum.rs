//! `weir lake vacuum`: remove files no commit record names (left by
//! crashed or fenced writers), once they are older than a grace period.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

use super::commit::CommitRecord;
use super::store::{Lake, LakeError};

/// What vacuum found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VacuumReport {
    /// files named by a commit record.
    pub committed: usize,
    /// uncommitted files removed.
    pub removed: Vec<String>,
    /// uncommitted files younger than the grace period, kept for now.
    pub kept_young: usize,
}

impl Lake {
    /// Remove uncommitted data and dead-letter files older than `grace`.
    pub async fn vacuum(&self, grace: Duration, dry_run: bool) -> Result<VacuumReport, LakeError> {
        let committed: HashSet<String> = self
            .commits()
            .await?
            .into_iter()
            .flat_map(|c| c.files.into_iter().map(|f| f.path))
            .collect();
        let mut report = VacuumReport {
            committed: committed.len(),
            ..VacuumReport::default()
        };
        let now = chrono::Utc::now();
        for prefix in ["data/", "_dead_letters/"] {
            for meta in self.listing(prefix).await? {
                let relative = self.relative(&meta.location);
                if committed.contains(&relative) || relative.starts_with(CommitRecord::PREFIX) {
                    continue;
                }
                let age = (now - meta.last_modified).to_std().unwrap_or_default();
                if age < grace {
                    report.kept_young += 1;
                    continue;
                }
                if !dry_run {
                    self.delete(&meta.location).await?;
                }
                report.removed.push(relative);
            }
        }
        Ok(report)
    }
}
