//! weir: a log-pipeline host.
//!
//! Kafka in, user-defined cleaning and enrichment as sandboxed WebAssembly
//! components, a Parquet lake partitioned by event date, batch aggregation
//! into a warehouse. One folder per stage:
//!
//! - [`pipeline`]: the pipeline definition file and the declared event schema;
//! - [`plugin`]: the wasmtime engine, the `weir:preprocess` bindings, limits,
//!   poison-event isolation;
//! - [`ingest`]: decoding JSON events into Arrow by the declared schema.

pub mod generate;
pub mod ingest;
pub mod lake;
pub mod pipeline;
pub mod plugin;

/// The weir version, recorded in every file it writes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
