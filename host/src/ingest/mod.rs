//! The streaming path: Kafka → declared schema → plugin → exactly-once lake.
//!
//! - [`source`]: the Kafka consumer, its settings and rebalance handling;
//! - [`broker`]: the real broker behind `brokers = "embedded"` (tansu);
//! - [`buffer`]: what one Kafka partition holds between two commits;
//! - [`writer`]: a worker's partitions and plugin instance, Kafka-free
//!   (decode, plugin, Parquet files);
//! - [`worker`]: the partition-parallel workers and their commands;
//! - [`core`]: the coordinator: routing, flush cycles (files staged by the
//!   workers, then one conditional commit), rebalances;
//! - [`cycle`]: a staged cycle's uploads and commit, as a task on the
//!   runtime, with retries;
//! - [`run`]: the consume loop, rolling, draining, shutdown, the summary;
//! - [`file`]: the same workers fed from a file of JSON lines;
//! - [`produce`]: `weir produce`;

pub mod broker;
mod buffer;
pub mod control;
mod core;
mod cycle;
mod file;
mod files;
pub mod produce;
mod run;
pub mod source;
mod worker;
mod writer;

pub(crate) use file::for_each_line;
pub use file::ingest_file;
pub use run::{IngestError, IngestOptions, IngestSummary, ingest, load_plugin, read_plugin};
pub use worker::WorkerGone;
