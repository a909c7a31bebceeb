//! Which files make up each date partition: read from the commit log
//! (never from a listing, so uncommitted files stay invisible).

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::lake::{CommitRecord, CommittedFile, FileKind};

/// Which date partitions to aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// exactly these dates.
    Dates(Vec<NaiveDate>),
    /// every date from the first to the last, inclusive.
    Range(NaiveDate, NaiveDate),
    /// every date the commit log names.
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

/// The committed data of one date partition.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PartitionPlan {
    /// the partition value (`2026-11-20`).
    pub date: String,
    /// committed data files, in commit order per Kafka partition.
    pub files: Vec<CommittedFile>,
    /// the commit records contributing files.
    pub commits: Vec<CommitRef>,
    /// plugin digests that produced the files.
    pub lake_digests: BTreeSet<String>,
    /// rows in the files, as the commit records say.
    pub rows: u64,
}

impl PartitionPlan {
    /// The date as a calendar date.
    pub fn day(&self) -> Option<NaiveDate> {
        self.date.parse().ok()
    }

    /// The commit position: how many commit records feed the date and a
    /// digest of which. The same position means nothing new to load.
    pub fn position(&self) -> String {
        let mut ids: Vec<String> = self.commits.iter().map(ToString::to_string).collect();
        ids.sort();
        let digest = Sha256::digest(ids.join("\n").as_bytes());
        format!("{}:{}", ids.len(), &hex::encode(digest)[..16])
    }
}

/// One commit record's identity, written `topic/partition/chain_offset`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CommitRef {
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// the record's chain key.
    pub chain_offset: i64,
}

impl CommitRef {
    /// The identity of `record`.
    pub fn of(record: &CommitRecord) -> Self {
        CommitRef {
            topic: record.topic.clone(),
            partition: record.partition,
            chain_offset: record.chain_offset,
        }
    }
}

impl std::fmt::Display for CommitRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.chain_offset)
    }
}

impl Serialize for CommitRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Group the data files of `records` by date, keeping the selected dates;
/// a selected date without files gets an empty plan ("no data").
pub fn plan(records: &[CommitRecord], selection: &Selection) -> BTreeMap<String, PartitionPlan> {
    let wanted = selection.dates();
    let mut plans: BTreeMap<String, PartitionPlan> = BTreeMap::new();
    for date in wanted.iter().flatten() {
        plans.insert(
            date.clone(),
            PartitionPlan {
                date: date.clone(),
                ..Default::default()
            },
        );
    }
    for record in records {
        let id = CommitRef::of(record);
        for file in &record.files {
            if file.kind != FileKind::Data {
                continue;
            }
            let Some(date) = &file.partition_value else {
                continue;
            };
            if wanted.as_ref().is_some_and(|w| !w.contains(date)) {
                continue;
            }
            let plan = plans.entry(date.clone()).or_insert_with(|| PartitionPlan {
                date: date.clone(),
                ..Default::default()
            });
            plan.files.push(file.clone());
            plan.rows += file.rows;
            plan.lake_digests.insert(record.plugin_digest.clone());
            if plan.commits.last() != Some(&id) {
                plan.commits.push(id.clone());
            }
        }
    }
    plans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, chain: i64, files: &[(&str, &str, u64)]) -> CommitRecord {
        CommitRecord {
            version: 1,
            pipeline: "p".into(),
            topic: "t".into(),
            partition,
            chain_offset: chain,
            first_offset: chain,
            last_offset: chain + 9,
            next_offset: chain + 10,
            files: files
                .iter()
                .map(|(path, date, rows)| CommittedFile {
                    path: (*path).into(),
                    kind: if date.is_empty() {
                        FileKind::DeadLetters
                    } else {
                        FileKind::Data
                    },
                    partition_value: (!date.is_empty()).then(|| (*date).to_string()),
                    rows: *rows,
                    bytes: 1,
                })
                .collect(),
            plugin_digest: "d1".into(),
            weir_version: "0".into(),
            committed_at: String::new(),
            read: 0,
            kept: 0,
            dropped: 0,
            dead_lettered: 0,
        }
    }

    #[test]
    fn files_grouped_by_date_with_empty_dates_kept() {
        let records = [
            record(
                0,
                0,
                &[("a", "2026-11-20", 5), ("b", "2026-11-21", 3), ("x", "", 1)],
            ),
            record(1, 0, &[("c", "2026-11-20", 2)]),
        ];
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let plans = plan(
            &records,
            &Selection::Range(d("2026-11-20"), d("2026-11-22")),
        );
        assert_eq!(plans.len(), 3);
        assert_eq!(plans["2026-11-20"].rows, 7);
        let ids: Vec<String> = plans["2026-11-20"]
            .commits
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ids, ["t/0/0", "t/1/0"]);
        assert!(plans["2026-11-22"].files.is_empty());
        let all = plan(&records, &Selection::All);
        assert_eq!(all.keys().collect::<Vec<_>>(), ["2026-11-20", "2026-11-21"]);
    }
}
