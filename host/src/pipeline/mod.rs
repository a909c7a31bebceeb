//! Pipeline definitions: the declared event schema (and, as the pipeline file
//! grows, source, lake and warehouse settings).

pub mod schema;

pub use schema::{DeclaredSchema, FieldSpec, FieldType, SchemaError};
