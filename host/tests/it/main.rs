//! weir's integration tests: one binary, a module per concern.
//!
//! The plugins under test are the components built by the README's test
//! command (`scripts/test.sh`) into `$CARGO_TARGET_DIR/wasm32-wasip2/release`.

mod support;

mod batch;
mod conformance;
mod decode_cli;
mod delta;
mod hostile;
mod ingest;
mod lake_s3;
mod orchestrate;
mod plugin_cases;
mod service;
