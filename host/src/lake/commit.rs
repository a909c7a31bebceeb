//! Commit records: the truth of what the lake holds.

use serde::{Deserialize, Serialize};

/// What a committed file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// cleaned events.
    Data,
    /// rejected messages with their reasons.
    DeadLetters,
}

/// One file named by a commit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedFile {
    /// path relative to the lake root.
    pub path: String,
    /// data or dead letters.
    pub kind: FileKind,
    /// the partition value (e.g. `2026-11-24`) for data files.
    pub partition_value: Option<String>,
    /// rows in the file.
    pub rows: u64,
    /// size in bytes.
    pub bytes: u64,
}

/// One flush of one Kafka partition: offsets, files, provenance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// record format version.
    pub version: u32,
    /// pipeline name.
    pub pipeline: String,
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// chain key: 0 for the first record, else the previous record's
    /// `next_offset`. Two writers of the same range race for this key.
    pub chain_offset: i64,
    /// first Kafka offset covered.
    pub first_offset: i64,
    /// last Kafka offset covered.
    pub last_offset: i64,
    /// offset to resume from (`last_offset + 1`).
    pub next_offset: i64,
    /// files written by this flush.
    pub files: Vec<CommittedFile>,
    /// sha256 of the plugin that produced the data.
    pub plugin_digest: String,
    /// weir version.
    pub weir_version: String,
    /// when the record was written (RFC 3339).
    pub committed_at: String,
    /// messages read in the range.
    pub read: u64,
    /// events kept.
    pub kept: u64,
    /// events dropped by the plugin.
    pub dropped: u64,
    /// messages dead-lettered.
    pub dead_lettered: u64,
}

impl CommitRecord {
    /// Prefix of every commit record.
    pub const PREFIX: &'static str = "_commits/";

    /// Prefix of one partition's records.
    pub fn partition_prefix(topic: &str, partition: i32) -> String {
        format!("{}{topic}/{partition:05}/", Self::PREFIX)
    }

    /// Key of the partition's "latest commit" hint: the key of its newest
    /// record, so finding it lists only records written after the hint.
    pub fn latest_hint(topic: &str, partition: i32) -> String {
        format!("{}_latest", Self::partition_prefix(topic, partition))
    }

    /// This record's key relative to the lake root.
    pub fn key(&self) -> String {
        format!(
            "{}{:020}.json",
            Self::partition_prefix(&self.topic, self.partition),
            self.chain_offset
        )
    }
}
