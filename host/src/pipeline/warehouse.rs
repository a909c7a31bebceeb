//! `[warehouse]`: where aggregates are loaded.
//!
//! ```toml
//! [warehouse]
//! url = "sqlite://../.weir/warehouse.db"   # or postgres://user@host/db, redshift://user:pw@host:5439/db
//! table = "page_metrics_daily"
//! ```

use serde::{Deserialize, Serialize};

/// The warehouse of one pipeline.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    /// `postgres://user[:password]@host[:port]/database[?sslmode=require]`,
    /// `redshift://user:password@host:5439/database` (always TLS, verified
    /// against the system's roots), or `sqlite:///abs/path.db` /
    /// `sqlite://relative/path.db` (relative to the pipeline file).
    pub url: String,
    /// the table of aggregated rows; created if missing.
    pub table: String,
    /// the load-audit table; created if missing.
    #[serde(default = "default_audit_table")]
    pub audit_table: String,
    /// how rows travel: `auto` (default: `stream` for PostgreSQL, `insert`
    /// for Redshift and SQLite), `stream` (PostgreSQL's binary `COPY ...
    /// FROM STDIN`), `insert` (parameterised multi-row INSERTs), or `copy`
    /// (Redshift: rows written as Parquet to `copy.staging_url`, then `COPY
    /// ... FORMAT AS PARQUET` into a staging table swapped in within the
    /// transaction).
    #[serde(default)]
    pub load: LoadMethod,
    /// settings of the `copy` load method.
    pub copy: Option<CopyConfig>,
    /// seconds to wait for a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

fn default_audit_table() -> String {
    "weir_load_audit".into()
}
fn default_connect_timeout() -> u64 {
    10
}

/// How rows reach the warehouse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMethod {
    /// `stream` for PostgreSQL, `insert` elsewhere.
    #[default]
    Auto,
    /// PostgreSQL's binary `COPY FROM STDIN`.
    Stream,
    /// parameterised INSERTs.
    Insert,
    /// Parquet on S3 and `COPY` (Redshift).
    Copy,
}

/// `[warehouse.copy]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyConfig {
    /// where staging Parquet files are written (`s3://bucket/prefix`); the
    /// lake's `[lake.s3]` settings are used to write them.
    pub staging_url: String,
    /// the IAM role Redshift assumes to read them.
    pub iam_role: String,
    /// region of the staging bucket, when it differs from the cluster's.
    pub region: Option<String>,
}
