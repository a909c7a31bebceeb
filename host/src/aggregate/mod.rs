//! The batch path: the committed files of date partitions (from the Delta
//! snapshot) → the same plugin again → `aggregate.sql` on DataFusion.
//!
//! - [`config`]: the `[aggregate]` section (the SQL, or its shorthand);
//! - [`plan`]: which committed files make up each date partition;
//! - [`engine`]: DataFusion with the relation `events` (files → plugin);
//! - [`percentile`]: an exact `percentile_cont`, as the warehouses compute it;
//! - [`run`]: one query per date, with every core.

pub use crate::pipeline::aggregate as config;
pub mod engine;
pub mod percentile;
pub mod plan;
pub mod run;

pub use config::{AggregateConfig, AggregateEngine, MetricSpec, Stat};
pub use engine::{Engine, EngineOptions, EventsTable, QueryResult, Tally};
pub use plan::{PartitionPlan, Selection, plan, plan_files, position, position_version};
pub use run::{
    Aggregated, BatchPlugin, Job, Outcome, PartitionError, PartitionReport, Progress, Source,
    aggregate_partitions,
};

/// A DataFusion error as a user reads it: the message, and where in the
/// query it points (line and column) when DataFusion knows.
pub fn describe_sql_error(error: &datafusion::common::DataFusionError) -> String {
    let mut text = error.to_string();
    if let Some(diagnostic) = error.diagnostic()
        && let Some(span) = diagnostic.span
    {
        text.push_str(&format!(
            " (at line {}, column {})",
            span.start.line, span.start.column
        ));
    }
    text
}
