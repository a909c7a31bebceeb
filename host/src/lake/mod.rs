//! The lake: two Delta Lake tables written through delta-rs, so every engine
//! that reads Delta (Spark, Athena/Glue, Trino, DuckDB, Polars, pandas via
//! `deltalake`) sees exactly the committed rows.
//!
//! Layout under the lake URL:
//!
//! ```text
//! _delta_log/                                   the data table's log (commits, checkpoints)
//! <partition_by>=<value>/<topic>-p<partition>-o<first>-<last>-<digest8>.parquet
//! _dead_letters/_delta_log/                     the dead-letter table (its own log)
//! _dead_letters/<topic>-p<partition>-o<first>-<last>.parquet
//! ```
//!
//! A file counts once a Delta commit adds it. One commit per flush cycle of
//! a host carries a `txn` action per Kafka partition (version = the last
//! offset included); a host resumes each partition from those versions.

mod dead_letters;
mod maintain;
mod parquet_file;
mod partition;
mod read;
mod table;

pub use dead_letters::{DeadLetter, dead_letter_schema, dead_letters_batch};
pub use maintain::{OptimizeReport, VacuumReport};
pub use parquet_file::{FileMetadata, ParquetEncoder, ParquetOptions, encode_parquet};
pub use partition::{NULL_PARTITION, partition_value, split_by_partition};
pub use read::{Changes, HistoryEntry, LakeFile, conform};
pub use table::{
    CommitReport, Lake, LakeError, PartitionFlush, PartitionOutcome, Provenance, Resume,
    SchemaChange, StagedFile, Table, TableKind,
};
