//! Pipeline definitions: the declared event schema and one struct per
//! section of the pipeline file, each validating itself (the stages'
//! sections live here too, so that the ground floor imports no stage).

pub mod aggregate;
pub mod config;
pub mod orchestrate;
pub mod requirements;
pub mod schema;
pub mod warehouse;

pub use config::{
    ConfigError, IngestConfig, LakeConfig, Pipeline, PipelineConfig, S3Config, SourceConfig,
};
pub use schema::{DeclaredSchema, FieldSpec, FieldType, SchemaError};
