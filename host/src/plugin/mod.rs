//! The plugin runtime: wasmtime with the component model, running
//! `weir:preprocess` components in a sandbox.
//!
//! - [`PluginEngine`] compiles components (cached by sha256, in memory and on
//!   disk) and checks which WIT version they were built against;
//! - [`PluginRunner`] owns one instance, negotiates the schema with `init`,
//!   and runs batches through `process`, isolating poison events when a call
//!   traps, times out or runs out of memory;
//! - [`Limits`] bounds memory, CPU time per call, stack and captured output.

mod bindings;
pub mod check;
mod convert;
mod deadline;
pub mod diff;
mod engine;
mod error;
mod limits;
mod runner;
mod sandbox;

pub use engine::{ACCEPTED_VERSIONS, LoadedPlugin, PluginEngine, digest_of};
pub use error::{CallFailure, FailureKind, PluginError};
pub use limits::Limits;
pub use runner::{Excluded, PluginRunner, Processed, Verdict};
