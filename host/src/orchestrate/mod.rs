//! The orchestrator: S3 event notifications and commit-log polling →
//! planned date partitions → the batch job, with checkpoints and leases
//! (DynamoDB or a local directory), retries and failure notices (Lambda).
//!
//! - [`config`]: the `[checkpoints]` and `[orchestrator]` sections;
//! - [`event`]: S3 notification JSON (direct or in SNS);
//! - [`planner`]: `_delta_log/` keys → commits, de-duplication, debouncing;
//! - [`checkpoint`], [`dynamo`], [`file_store`]: checkpoints and leases;
//! - [`notify`]: failure notices;
//! - [`run`]: leasing, running with retries, checkpointing;
//! - [`serve`]: `POST /events` and the work loop.

pub mod checkpoint;
pub use crate::pipeline::orchestrate as config;
pub mod dynamo;
pub mod event;
pub mod file_store;
pub mod notify;
pub mod planner;
pub mod run;
pub mod serve;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointStore, Status};
pub use config::{AwsConfig, CheckpointsConfig, NotifyConfig, OrchestratorConfig};
pub use event::{ObjectEvent, parse_notification};
pub use run::{Intake, OrchestrateError, Orchestrator, RunOutcome, open_store};
