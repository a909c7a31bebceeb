//! The streaming path: Kafka → declared schema → plugin → exactly-once lake.
//!
//! - [`source`]: the Kafka consumer, its settings and rebalance handling;
//! - [`broker`]: the real broker behind `brokers = "embedded"` (tansu);
//! - [`buffer`]: what one Kafka partition holds between two commits;
//! - [`core`]: flushing a partition (files, then one conditional commit);
//! - [`run`]: the consume loop, rolling, draining, shutdown, the summary;
//! - [`produce`]: `weir produce`;

pub mod broker;
mod buffer;
pub mod control;
mod core;
pub mod produce;
mod run;
pub mod source;

pub use run::{IngestError, IngestOptions, IngestSummary, ingest, load_plugin, read_plugin};
