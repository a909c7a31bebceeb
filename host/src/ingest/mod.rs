//! The ingest stage: JSON events decoded by the declared schema into Arrow.

pub mod decode;

pub use decode::{DecodeError, JsonDecoder};
