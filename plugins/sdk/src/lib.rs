//! The Rust SDK for weir preprocessing plugins (`weir:preprocess@0.1.0`).
//!
//! A plugin implements [`Plugin`] and exports it with [`export_plugin!`]:
//!
//! ```ignore
//! use weir_plugin_sdk::prelude::*;
//!
//! struct Identity;
//! impl Plugin for Identity {
//!     fn init(input: &Schema, _config: &mut Config) -> Result<(Self, Schema), String> {
//!         Ok((Identity, input.clone()))
//!     }
//!     fn process(&mut self, batch: Batch) -> Result<Output, String> {
//!         Ok(Output::keep_all(batch))
//!     }
//! }
//! export_plugin!(Identity);
//! ```
//!
//! The generated component-model bindings are hidden: plugin code sees the
//! columnar [`Batch`], typed [`FieldRef`] handles resolved once at `init`,
//! and an [`OutputBuilder`]. None of it needs Wasm, so a plugin's logic is
//! unit-tested natively with plain `cargo test` (see [`testing`]).

mod batch;
mod columnar;
mod config;
pub mod copy;
mod kind;
pub mod log;
mod output;
mod schema;
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __export;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings;

pub use batch::{Batch, Column, ColumnValues};
pub use columnar::{Answer, ColumnarOutput, Columns};
pub use config::Config;
pub use kind::{Bool, Date, F64, I64, Kind, Str, TimestampMs};
pub use output::{BatchBuilder, Exclusion, Output, OutputBuilder, Verdict};
pub use schema::{Field, FieldRef, FieldType, Schema};

/// The version of the WIT package this SDK builds against.
pub const WIT_VERSION: &str = "0.1.0";

/// A preprocessing plugin: negotiates its schema once, then processes batches.
pub trait Plugin: Sized + 'static {
    /// Called once per instance with the input schema and the configuration
    /// from the pipeline file. Resolve field handles here (never per event),
    /// read every configuration key you know (keys left unread are reported
    /// to the user as unknown), and answer with the output schema.
    fn init(input: &Schema, config: &mut Config) -> Result<(Self, Schema), String>;

    /// Clean and enrich one batch. Every input row must be either kept (one
    /// value pushed per output column) or excluded with a reason.
    fn process(&mut self, batch: Batch) -> Result<Output, String>;
}

/// Everything a plugin author usually needs.
pub mod prelude {
    pub use crate::{
        Batch, BatchBuilder, Bool, Columns, Config, Date, F64, Field, FieldRef, FieldType, I64,
        Output, OutputBuilder, Plugin, Schema, Str, TimestampMs, export_plugin,
    };
}

/// Export a [`Plugin`] implementation as the component's `plugin` interface.
///
/// On targets other than `wasm32` this expands to nothing, so the same crate
/// builds natively for unit tests and benchmarks.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct WeirPluginExport;
            impl $crate::__export::Guest for WeirPluginExport {
                fn init(
                    input: $crate::__export::WitSchema,
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<$crate::__export::WitSchema, ::std::string::String>
                {
                    $crate::__export::init::<$plugin>(input, config)
                }
                fn process(
                    input: $crate::__export::WitBatch,
                ) -> ::std::result::Result<$crate::__export::WitOutput, ::std::string::String>
                {
                    $crate::__export::process::<$plugin>(input)
                }
            }
    $crate::bindings::__export_world!(WeirPluginExport with_types_in $crate::bindings);
        };
    };
}
