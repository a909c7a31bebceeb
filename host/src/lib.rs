//! weir: a log-pipeline host.
//!
//! Kafka in, user-defined cleaning and enrichment as sandboxed WebAssembly
//! components, a Delta Lake table partitioned by event date, batch aggregation
//! into a warehouse. One folder per stage:
//!
//! - [`pipeline`]: the pipeline definition file and the declared event schema;
//! - [`aws`]: the settings and SDK configuration of every AWS client;
//! - [`decode`]: JSON events into Arrow by the declared schema;
//! - [`objstore`]: one parsed location (local or S3) for every URL weir reads or writes;
//! - [`telemetry`]: the Prometheus metrics every stage counts into;
//! - [`plugin`]: the wasmtime engine, the `weir:preprocess` bindings, limits,
//!   poison-event isolation;
//! - [`ingest`]: Kafka consumption, decoding, batching, the commit protocol;
//! - [`lake`]: the Delta tables (data, dead letters): commits with Kafka `txn`
//!   versions, snapshot reads, optimize and vacuum;
//! - [`aggregate`]: the batch path (same plugin again, exact aggregates);
//! - [`warehouse`]: loading aggregates into PostgreSQL, Redshift or SQLite;
//! - [`orchestrate`]: S3 events and polling → leased, retried, checkpointed batch runs;
//! - [`serve`]: `weir run`, metrics, health, plugin hot swap;
//! - [`demo`]: the whole pipeline on embedded defaults, in one command;
//! - [`tools`]: synthetic events and the benchmarks (`weir generate`, `weir bench`);
//! - [`batch`]: the whole batch job, plan to load, shared by CLI and orchestrator.

pub mod aggregate;
pub mod aws;
pub mod batch;
pub mod decode;
pub mod demo;
pub mod ingest;
pub mod lake;
pub mod objstore;
pub mod orchestrate;
pub mod pipeline;
pub mod plugin;
pub mod serve;
pub mod telemetry;
pub mod tools;
pub mod warehouse;

/// Count one more `key` in a per-reason tally, allocating the key only the
/// first time it is seen (reasons repeat for every event they apply to).
pub(crate) fn tally(counts: &mut std::collections::BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_string(), 1);
        }
    }
}

/// The weir version, recorded in every file it writes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
