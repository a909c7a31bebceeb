//! Loading aggregates into a warehouse, chosen by `warehouse.url`:
//! PostgreSQL or Amazon Redshift (`tokio-postgres`), or SQLite (embedded).
//!
//! Every backend replaces exactly the loaded date partitions in one
//! transaction and writes one load-audit row per date in it, so a load can
//! be repeated and a failed load leaves the previous rows in place.
//!
//! - [`config`]: the `[warehouse]` section;
//! - [`table`]: table description, DDL, audit rows, values;
//! - [`postgres`], [`sqlite`]: the backends;
//! - [`copy`]: Redshift's Parquet-on-S3 `COPY` path;
//! - [`redshift`]: the aggregation pushed down to Redshift (manifests of
//!   the lake's files, or of re-cleaned ones, copied into `events`).

pub use crate::pipeline::warehouse as config;
pub mod copy;
pub mod postgres;
pub mod redshift;
pub mod sqlite;
pub mod table;

use std::path::PathBuf;
use std::time::Duration;

pub use config::{CopyConfig, LoadMethod, WarehouseConfig};
pub use table::{AuditRow, LoadRequest, SqlType, TableSpec, Value};

use crate::pipeline::LakeConfig;
use crate::pipeline::aggregate::AggregationSql;
use postgres::{Flavor, PgWarehouse};
use sqlite::SqliteWarehouse;
use table::{quote, quote_name};

/// How the cleaned rows of a pushed-down load reach the warehouse's
/// temporary table `events`.
pub enum PushdownRows<S> {
    /// PostgreSQL: streamed by binary `COPY ... FROM STDIN`.
    Streams(Vec<S>),
    /// Redshift: statements copying each date's manifest of Parquet files
    /// on S3 ([`redshift::fill_statements`]).
    Staged(Vec<String>),
}

/// Why a warehouse operation failed; each names the server (host and
/// database, or file) and the table.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// The configuration cannot be used.
    #[error("{0}")]
    Config(String),
    /// No connection.
    #[error("warehouse {target}, table {table}: cannot connect: {error}")]
    Connect {
        /// server and database.
        target: String,
        /// the table.
        table: String,
        /// the client's error.
        error: String,
    },
    /// The load failed and was rolled back.
    #[error(
        "warehouse {target}, table {table}: load failed and was rolled back (previous rows intact): {error}"
    )]
    Load {
        /// server and database.
        target: String,
        /// the table.
        table: String,
        /// the client's error.
        error: String,
    },
    /// A read query failed.
    #[error("warehouse {target}, table {table}: query failed: {error}")]
    Query {
        /// server and database.
        target: String,
        /// the table.
        table: String,
        /// the client's error.
        error: String,
    },
    /// The staging file of a COPY load could not be written.
    #[error("warehouse staging {url}: {error}")]
    Staging {
        /// the staging URL.
        url: String,
        /// what went wrong.
        error: String,
    },
}

/// Rows read back from the warehouse.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Shown {
    /// column names.
    pub columns: Vec<String>,
    /// rows of values.
    pub rows: Vec<Vec<Value>>,
}

/// A warehouse of one pipeline.
#[derive(Debug)]
pub struct Warehouse {
    backend: Backend,
    config: WarehouseConfig,
    lake: LakeConfig,
}

#[derive(Debug)]
enum Backend {
    Pg(Box<PgWarehouse>),
    Sqlite(SqliteWarehouse),
}

impl Warehouse {
    /// Open the warehouse `config` names (relative SQLite paths were
    /// resolved against the pipeline file when it was loaded). Connects lazily.
    pub fn open(config: &WarehouseConfig, lake: &LakeConfig) -> Result<Self, WarehouseError> {
        let timeout = Duration::from_secs(config.connect_timeout_secs.max(1));
        let url = config.url.as_str();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Pg(Box::new(PgWarehouse::new(url, Flavor::Postgres, timeout)?))
        } else if url.starts_with("redshift://") {
            Backend::Pg(Box::new(PgWarehouse::new(url, Flavor::Redshift, timeout)?))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Backend::Sqlite(SqliteWarehouse::new(PathBuf::from(path), timeout))
        } else {
            return Err(WarehouseError::Config(format!(
                "warehouse.url `{url}`: expected postgres://, redshift:// or sqlite://"
            )));
        };
        if config.load == LoadMethod::Stream && !url.starts_with("postgres") {
            return Err(WarehouseError::Config(
                "warehouse.load = \"stream\" is PostgreSQL's COPY FROM STDIN: it needs a postgres:// url".into(),
            ));
        }
        if config.load == LoadMethod::Copy
            && (config.copy.is_none() || !matches!(backend, Backend::Pg(_)))
        {
            return Err(WarehouseError::Config(
                "warehouse.load = \"copy\" needs [warehouse.copy] and a postgres:// or redshift:// url".into(),
            ));
        }
        Ok(Warehouse {
            backend,
            config: config.clone(),
            lake: lake.clone(),
        })
    }

    /// "postgres host H:P database D" or "sqlite PATH".
    pub fn target(&self) -> String {
        match &self.backend {
            Backend::Pg(p) => p.target().to_string(),
            Backend::Sqlite(s) => s.target(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WarehouseConfig {
        &self.config
    }

    /// Replace the request's dates with its rows and audit rows, in one
    /// transaction. `load_id` names the load in the audit table.
    pub async fn load(&self, request: &LoadRequest, load_id: &str) -> Result<(), WarehouseError> {
        match &self.backend {
            Backend::Pg(pg) => {
                let copy = match (&self.config.load, &self.config.copy) {
                    (LoadMethod::Copy, Some(c)) => Some(
                        copy::stage(c, &self.lake, &request.table.name, load_id, &request.rows)
                            .await?,
                    ),
                    _ => None,
                };
                pg.load(request, load_id, copy.as_ref(), self.config.load)
                    .await
            }
            Backend::Sqlite(s) => tokio::task::block_in_place(|| s.load(request, load_id)),
        }
    }

    /// Whether the aggregation can run inside this warehouse
    /// (`aggregate.engine = "warehouse"`): PostgreSQL and Redshift.
    pub fn runs_queries(&self) -> bool {
        matches!(&self.backend, Backend::Pg(_))
    }

    /// Whether this is Redshift (its rows are staged on S3; its sort-based
    /// aggregates share one `ORDER BY` per statement).
    pub fn is_redshift(&self) -> bool {
        matches!(&self.backend, Backend::Pg(pg) if pg.flavor() == Flavor::Redshift)
    }

    /// Replace the request's dates with what `sql` computes inside the
    /// warehouse over the cleaned rows (`rows`: streamed into PostgreSQL,
    /// staged on S3 for Redshift) in the temporary table `staging`, with
    /// audit rows, in one transaction.
    pub async fn load_pushdown<S>(
        &self,
        request: &LoadRequest,
        load_id: &str,
        staging: &TableSpec,
        rows: PushdownRows<S>,
        sql: &AggregationSql,
        audit: impl FnOnce(&std::collections::BTreeMap<chrono::NaiveDate, i64>) -> Vec<AuditRow>,
    ) -> Result<(), WarehouseError>
    where
        S: futures::Stream<Item = Result<arrow::record_batch::RecordBatch, String>> + Unpin,
    {
        match &self.backend {
            Backend::Pg(pg) => {
                pg.load_pushdown(request, load_id, staging, rows, sql, audit)
                    .await
            }
            Backend::Sqlite(s) => Err(WarehouseError::Config(format!(
                "{}: aggregate.engine = \"warehouse\" runs the query inside PostgreSQL or Redshift; use the embedded engine with SQLite",
                s.target()
            ))),
        }
    }

    /// Run a read query.
    pub async fn query(&self, sql: &str) -> Result<Shown, WarehouseError> {
        let table = &self.config.table;
        match &self.backend {
            Backend::Pg(pg) => pg.query(table, sql).await,
            Backend::Sqlite(s) => tokio::task::block_in_place(|| s.query(table, sql)),
        }
    }

    /// The top `top` rows per date by `order_by` (descending, nulls last),
    /// of one date or of all, optionally only rows whose `min.0` column is
    /// at least `min.1` (e.g. pages with enough events to matter).
    pub async fn show(
        &self,
        date_column: &str,
        date: Option<chrono::NaiveDate>,
        order_by: &str,
        top: usize,
        min: Option<(&str, i64)>,
    ) -> Result<Shown, WarehouseError> {
        let mut conditions = Vec::new();
        if let Some(d) = date {
            conditions.push(format!("{} = '{d}'", quote(date_column)));
        }
        if let Some((column, at_least)) = min {
            conditions.push(format!("{} >= {at_least}", quote(column)));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT * FROM (SELECT t.*, ROW_NUMBER() OVER (PARTITION BY {date} ORDER BY {order} DESC NULLS LAST) AS weir_rank \
             FROM {table} t{filter}) ranked WHERE weir_rank <= {top} ORDER BY {date}, weir_rank",
            date = quote(date_column),
            order = quote(order_by),
            table = quote_name(&self.config.table),
        );
        let mut shown = self.query(&sql).await?;
        if let Some(i) = shown.columns.iter().position(|c| c == "weir_rank") {
            shown.columns.remove(i);
            for row in &mut shown.rows {
                row.remove(i);
            }
        }
        Ok(shown)
    }
}
