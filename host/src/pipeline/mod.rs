//! Pipeline definitions: the declared event schema (and, as the pipeline file
//! grows, source, lake and warehouse settings).

pub mod config;
pub mod schema;

pub use config::{
    ConfigError, IngestConfig, LakeConfig, Pipeline, PipelineConfig, S3Config, SourceConfig,
};
pub use schema::{DeclaredSchema, FieldSpec, FieldType, SchemaError};
