//! The batch path: committed files of date partitions (from the commit
//! log) → the same plugin again → exact aggregates per group.
//!
//! - [`config`]: the `[aggregate]` section;
//! - [`plan`]: which committed files make up each date partition;
//! - [`kernel`]: de-duplication, grouping, statistics (`percentile_cont`);
//! - [`run`]: streaming the files, re-applying the plugin, parallel partitions.

pub use crate::pipeline::aggregate as config;
pub mod kernel;
pub mod plan;
pub mod run;

pub use config::{AggregateConfig, MetricSpec, Stat};
pub use kernel::{Aggregator, Resolved, percentile_cont};
pub use plan::{PartitionPlan, Selection, plan, plan_files, position, position_version};
pub use run::{
    Aggregated, BatchPlugin, Outcome, PartitionError, PartitionReport, Progress, Source,
    aggregate_partitions,
};
