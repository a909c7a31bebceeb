//! The lake: Parquet files on an object store (a local directory or S3),
//! Hive-style partitions, dead letters, and the commit log that decides
//! which files exist for readers.
//!
//! Layout under the lake URL:
//!
//! ```text
//! data/<partition_by>=<value>/<topic>-p<partition>-o<first>-<last>-<digest8>.parquet
//! _dead_letters/topic=<topic>/partition=<p>/<topic>-p<p>-o<first>-<last>.parquet
//! _commits/<topic>/<partition>/<chain key, 20 digits>.json
//! ```
//!
//! A data file is visible only once a commit record names it. Commit
//! records are created with a create-only conditional put; the record's key
//! is the offset right after the previous record of the same partition, so
//! two writers that both believe they own a partition race for the same key
//! and exactly one wins.

mod commit;
mod dead_letters;
mod parquet_file;
mod partition;
mod store;
mod vacuum;

pub use commit::{CommitRecord, CommittedFile, FileKind};
pub use dead_letters::{DeadLetter, dead_letter_schema, dead_letters_batch};
pub use parquet_file::{FileMetadata, encode_parquet};
pub use partition::{partition_value, split_by_partition};
pub use store::{CommitOutcome, Lake, LakeError};
pub use vacuum::VacuumReport;
