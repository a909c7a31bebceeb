//! Which files make up each date partition: read from the data table's
//! Delta snapshot with partition pruning (never from a listing, so files no
//! version references stay invisible).

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::Serialize;

use crate::lake::{LakeError, LakeFile, Table};

/// Which date partitions to aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// exactly these dates.
    Dates(Vec<NaiveDate>),
    /// every date from the first to the last, inclusive.
    Range(NaiveDate, NaiveDate),
    /// every date the table holds.
    All,
}

impl Selection {
    /// The dates asked for (`None` for all).
    fn dates(&self) -> Option<BTreeSet<String>> {
        match self {
            Selection::Dates(d) => Some(d.iter().map(|d| d.to_string()).collect()),
            Selection::Range(from, to) => Some(
                from.iter_days()
                    .take_while(|d| d <= to)
                    .map(|d| d.to_string())
                    .collect(),
            ),
            Selection::All => None,
        }
    }
}

/// The committed data of one date partition at one table version.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PartitionPlan {
    /// the partition value (`2026-11-20`).
    pub date: String,
    /// the date's active data files.
    pub files: Vec<LakeFile>,
    /// the table version the files were read at.
    pub version: Option<i64>,
    /// plugin digests (8-character prefixes, from the file names) that
    /// produced the files; compacted files name none.
    pub lake_digests: BTreeSet<String>,
    /// rows in the files, from their statistics.
    pub rows: u64,
}

impl PartitionPlan {
    /// The date as a calendar date.
    pub fn day(&self) -> Option<NaiveDate> {
        self.date.parse().ok()
    }

    /// The position loaded: `v<table version>`.
    pub fn position(&self) -> String {
        position(self.version.unwrap_or(-1))
    }
}

/// A table version written as a position (`v12`).
pub fn position(version: i64) -> String {
    format!("v{version}")
}

/// The table version of a position written by [`position`].
pub fn position_version(position: &str) -> Option<i64> {
    position.strip_prefix('v')?.parse().ok()
}

/// The digest prefix in a weir file name
/// (`<topic>-p<p>-o<first>-<last>-<digest8>-<token>.parquet`).
pub(crate) fn digest_of(path: &str) -> Option<String> {
    let name = path.rsplit('/').next()?.strip_suffix(".parquet")?;
    let mut parts = name.rsplit('-');
    let _token = parts.next()?;
    let digest = parts.next()?;
    (digest.len() == 8 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digest.to_string())
}

/// Group `files` (active files of one table version) by date, keeping the
/// selected dates; a selected date without files gets an empty plan
/// ("no data").
pub fn plan_files(
    files: Vec<LakeFile>,
    version: Option<i64>,
    selection: &Selection,
) -> BTreeMap<String, PartitionPlan> {
    let wanted = selection.dates();
    let mut plans: BTreeMap<String, PartitionPlan> = BTreeMap::new();
    for date in wanted.iter().flatten() {
        plans.insert(
            date.clone(),
            PartitionPlan {
                date: date.clone(),
                version,
                ..Default::default()
            },
        );
    }
    for file in files {
        let Some(date) = file.partition_value.clone() else {
            continue;
        };
        if wanted.as_ref().is_some_and(|w| !w.contains(&date)) {
            continue;
        }
        let plan = plans.entry(date.clone()).or_insert_with(|| PartitionPlan {
            date,
            version,
            ..Default::default()
        });
        plan.rows += file.rows;
        plan.lake_digests.extend(digest_of(&file.path));
        plan.files.push(file);
    }
    plans
}

/// Plan `selection` from the data table as loaded: one pruned read of the
/// snapshot per selected date (every file for [`Selection::All`]).
pub async fn plan(
    table: &Table,
    partition_by: &str,
    selection: &Selection,
) -> Result<BTreeMap<String, PartitionPlan>, LakeError> {
    let version = table.version();
    let files = match selection.dates() {
        None => table.files(partition_by, None).await?,
        Some(dates) => {
            let mut files = Vec::new();
            for date in &dates {
                files.extend(table.files(partition_by, Some(date)).await?);
            }
            files
        }
    };
    Ok(plan_files(files, version, selection))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, date: &str, rows: u64) -> LakeFile {
        LakeFile {
            path: path.into(),
            partition_value: Some(date.into()),
            rows,
            bytes: 1,
        }
    }

    #[test]
    fn files_grouped_by_date_with_empty_dates_kept() {
        let files = vec![
            file(
                "event_date=2026-11-20/t-p0-o1-2-abcdef12-0123456789ab.parquet",
                "2026-11-20",
                5,
            ),
            file("event_date=2026-11-21/b.parquet", "2026-11-21", 3),
            file("event_date=2026-11-20/part-0001.parquet", "2026-11-20", 2),
        ];
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let plans = plan_files(
            files.clone(),
            Some(7),
            &Selection::Range(d("2026-11-20"), d("2026-11-22")),
        );
        assert_eq!(plans.len(), 3);
        assert_eq!(plans["2026-11-20"].rows, 7);
        assert_eq!(plans["2026-11-20"].position(), "v7");
        assert_eq!(
            plans["2026-11-20"].lake_digests.iter().collect::<Vec<_>>(),
            ["abcdef12"]
        );
        assert!(plans["2026-11-22"].files.is_empty());
        let all = plan_files(files, Some(7), &Selection::All);
        assert_eq!(all.keys().collect::<Vec<_>>(), ["2026-11-20", "2026-11-21"]);
        assert_eq!(position_version("v12"), Some(12));
        assert_eq!(position_version("3:abc"), None);
    }
}
