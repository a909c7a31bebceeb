//! PostgreSQL and Amazon Redshift through `tokio-postgres`. Redshift and
//! `sslmode=require` connect over TLS (rustls, system roots). A load is one
//! transaction that locks the table against concurrent loads, deletes the
//! replaced dates, inserts the new rows and the audit rows, and commits;
//! any failure rolls it all back.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use bytes::BytesMut;
use chrono::NaiveDate;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Config, NoTls};

use super::copy::CopyPlan;
use super::table::{
    AUDIT_COLUMNS, AuditRow, LoadRequest, SqlType, TableSpec, Value, audit_create_sql, dates_in,
    quote, quote_name,
};
use super::table::{Cell, Cells};
use super::{PushdownRows, Shown, WarehouseError};
use crate::pipeline::aggregate::AggregationSql;

/// Which server speaks the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// PostgreSQL.
    Postgres,
    /// Amazon Redshift.
    Redshift,
}

/// A PostgreSQL or Redshift warehouse.
pub struct PgWarehouse {
    config: Config,
    tls: bool,
    flavor: Flavor,
    target: String,
}

impl std::fmt::Debug for PgWarehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.target)
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.as_cell().to_sql(ty, out)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Date(d) => d.to_sql(ty, out),
            Cell::Text(s) => s.to_sql(ty, out),
            Cell::Int(i) => i.to_sql(ty, out),
            Cell::Float(x) => x.to_sql(ty, out),
            Cell::Bool(b) => b.to_sql(ty, out),
            Cell::Timestamp(t) => t.to_sql(ty, out),
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

impl PgWarehouse {
    /// Parse a `postgres://` or `redshift://` URL (no connection yet).
    pub fn new(
        url: &str,
        flavor: Flavor,
        connect_timeout: Duration,
    ) -> Result<Self, WarehouseError> {
        let pg_url = match flavor {
            Flavor::Redshift => url.replacen("redshift://", "postgresql://", 1),
            Flavor::Postgres => url.to_string(),
        };
        let mut config: Config = pg_url.parse().map_err(|e: tokio_postgres::Error| {
            WarehouseError::Config(format!("warehouse.url: not a valid connection URL: {e}"))
        })?;
        config.connect_timeout(connect_timeout);
        config.application_name("weir");
        if flavor == Flavor::Redshift {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        let tls = config.get_ssl_mode() == tokio_postgres::config::SslMode::Require;
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let db = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres");
        let scheme = if flavor == Flavor::Redshift {
            "redshift"
        } else {
            "postgres"
        };
        let target = format!("{scheme} host {host}:{port} database {db}");
        Ok(PgWarehouse {
            config,
            tls,
            flavor,
            target,
        })
    }

    /// Which server this is.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// "postgres host H:P database D", for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn connect(&self, table: &str) -> Result<Client, WarehouseError> {
        let fail = |error: tokio_postgres::Error| WarehouseError::Connect {
            target: self.target.clone(),
            table: table.into(),
            error: error_text(&error),
        };
        if self.tls {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(rustls_config()?);
            let (client, connection) = self.config.connect(tls).await.map_err(fail)?;
            tokio::spawn(watch(connection));
            Ok(client)
        } else {
            let (client, connection) = self.config.connect(NoTls).await.map_err(fail)?;
            tokio::spawn(watch(connection));
            Ok(client)
        }
    }

    /// A connection on which the request's table and the audit table exist.
    async fn load_client(&self, request: &LoadRequest) -> Result<Client, WarehouseError> {
        let table = &request.table.name;
        let client = self.connect(table).await?;
        for sql in [
            request.table.create_sql(),
            audit_create_sql(&request.audit_table),
        ] {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| self.load_error(table, &e))?;
        }
        Ok(client)
    }

    /// Inside a load's transaction: lock the table (loads run one after
    /// the other) and delete the rows of the dates the request replaces.
    async fn clear_dates(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        request: &LoadRequest,
    ) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(&self.lock_sql(&request.table.name))
            .await?;
        if let Some(delete) = request.delete_sql() {
            tx.execute(delete.as_str(), &[]).await?;
        }
        Ok(())
    }

    /// A failed load of `table`.
    fn load_error(&self, table: &str, error: &tokio_postgres::Error) -> WarehouseError {
        WarehouseError::Load {
            target: self.target.clone(),
            table: table.to_string(),
            error: error_text(error),
        }
    }

    /// Replace the request's dates with its rows, in one transaction.
    pub async fn load(
        &self,
        request: &LoadRequest,
        load_id: &str,
        copy: Option<&CopyPlan>,
        method: super::LoadMethod,
    ) -> Result<(), WarehouseError> {
        let fail = |error: tokio_postgres::Error| self.load_error(&request.table.name, &error);
        let mut client = self.load_client(request).await?;
        let tx = client.transaction().await.map_err(fail)?;
        if let Some(copy) = copy {
            for sql in copy.stage_sql() {
                tx.batch_execute(&sql).await.map_err(fail)?;
            }
        }
        self.clear_dates(&tx, request).await.map_err(fail)?;
        use super::LoadMethod;
        match (copy, method, self.flavor) {
            (Some(copy), _, _) => tx.batch_execute(&copy.swap_sql()).await.map_err(fail)?,
            // PostgreSQL takes the rows as one binary COPY stream
            (None, LoadMethod::Stream | LoadMethod::Auto, Flavor::Postgres) => {
                copy_rows(&tx, request).await.map_err(fail)?
            }
            (None, _, _) => insert_rows(&tx, request).await.map_err(fail)?,
        }
        insert_audit(&tx, request, load_id).await.map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(())
    }

    /// Replace the request's dates with what `sql` computes inside the
    /// warehouse over the temporary table `staging` (the cleaned rows,
    /// filled as `rows` says), with audit rows made by `audit` from the rows
    /// loaded per date, in one transaction.
    pub async fn load_pushdown<S>(
        &self,
        request: &LoadRequest,
        load_id: &str,
        staging: &TableSpec,
        rows: PushdownRows<S>,
        sql: &AggregationSql,
        audit: impl FnOnce(&BTreeMap<NaiveDate, i64>) -> Vec<AuditRow>,
    ) -> Result<(), WarehouseError>
    where
        S: futures::Stream<Item = Result<RecordBatch, String>> + Unpin,
    {
        use futures::StreamExt;
        let table = &request.table.name;
        let fail = |error: tokio_postgres::Error| self.load_error(table, &error);
        match (&rows, self.flavor) {
            (PushdownRows::Streams(_), Flavor::Postgres)
            | (PushdownRows::Staged(_), Flavor::Redshift) => {}
            (PushdownRows::Streams(_), Flavor::Redshift) => {
                return Err(WarehouseError::Config(format!(
                    "{}: Redshift has no COPY FROM STDIN; its rows are staged on S3",
                    self.target
                )));
            }
            (PushdownRows::Staged(_), Flavor::Postgres) => {
                return Err(WarehouseError::Config(format!(
                    "{}: PostgreSQL cannot COPY from S3; its rows are streamed",
                    self.target
                )));
            }
        }
        let mut client = self.load_client(request).await?;
        let tx = client.transaction().await.map_err(fail)?;
        match rows {
            PushdownRows::Streams(streams) => {
                tx.batch_execute(&staging.temp_create_sql())
                    .await
                    .map_err(fail)?;
                let mut writer = std::pin::pin!(copy_writer(&tx, staging).await.map_err(fail)?);
                for mut stream in streams {
                    while let Some(batch) = stream.next().await {
                        let batch = batch.map_err(|error| WarehouseError::Load {
                            target: self.target.clone(),
                            table: table.clone(),
                            error: format!("staging the cleaned rows: {error}"),
                        })?;
                        write_batch(writer.as_mut(), &batch).await.map_err(fail)?;
                    }
                }
                writer.finish().await.map_err(fail)?;
            }
            PushdownRows::Staged(statements) => {
                for statement in &statements {
                    tx.batch_execute(statement).await.map_err(fail)?;
                }
            }
        }
        self.clear_dates(&tx, request).await.map_err(fail)?;
        for statement in &sql.setup {
            tx.batch_execute(statement).await.map_err(fail)?;
        }
        let insert = request.table.insert_select_sql(&sql.select);
        tx.execute(insert.as_str(), &[]).await.map_err(fail)?;
        let mut loaded = BTreeMap::new();
        if !request.dates.is_empty() {
            let column = quote(&request.table.partition_column);
            let count = format!(
                "SELECT {column}, count(*) FROM {} WHERE {} GROUP BY {column}",
                quote_name(table),
                dates_in(&request.table.partition_column, &request.dates)
            );
            for row in tx.query(count.as_str(), &[]).await.map_err(fail)? {
                let date: NaiveDate = row.try_get(0).map_err(fail)?;
                let n: i64 = row.try_get(1).map_err(fail)?;
                loaded.insert(date, n);
            }
        }
        let mut done = request.clone();
        done.audit = audit(&loaded);
        insert_audit(&tx, &done, load_id).await.map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(())
    }

    fn lock_sql(&self, table: &str) -> String {
        match self.flavor {
            // conflicts with itself: concurrent loads run one after the other
            Flavor::Postgres => format!(
                "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                quote_name(table)
            ),
            Flavor::Redshift => format!("LOCK {}", quote_name(table)),
        }
    }

    /// Run a read query and return its rows as values.
    pub async fn query(&self, table: &str, sql: &str) -> Result<Shown, WarehouseError> {
        let fail = |error: tokio_postgres::Error| WarehouseError::Query {
            target: self.target.clone(),
            table: table.into(),
            error: error_text(&error),
        };
        let client = self.connect(table).await?;
        let rows = client.query(sql, &[]).await.map_err(fail)?;
        let columns = match rows.first() {
            Some(r) => r.columns().iter().map(|c| c.name().to_string()).collect(),
            None => Vec::new(),
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values = Vec::with_capacity(row.len());
            for (i, c) in row.columns().iter().enumerate() {
                let v = match *c.type_() {
                    Type::DATE => row
                        .try_get::<_, Option<NaiveDate>>(i)
                        .map(|v| v.map(Value::Date)),
                    Type::INT8 => row.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::Int)),
                    Type::INT4 => row
                        .try_get::<_, Option<i32>>(i)
                        .map(|v| v.map(|x| Value::Int(x.into()))),
                    Type::FLOAT8 => row
                        .try_get::<_, Option<f64>>(i)
                        .map(|v| v.map(Value::Float)),
                    Type::BOOL => row
                        .try_get::<_, Option<bool>>(i)
                        .map(|v| v.map(Value::Bool)),
                    Type::TIMESTAMP => row
                        .try_get::<_, Option<chrono::NaiveDateTime>>(i)
                        .map(|v| v.map(|t| Value::Text(t.to_string()))),
                    _ => row
                        .try_get::<_, Option<String>>(i)
                        .map(|v| v.map(Value::Text)),
                }
                .map_err(fail)?;
                values.push(v.unwrap_or(Value::Null));
            }
            out.push(values);
        }
        Ok(Shown { columns, rows: out })
    }
}

/// Rows as multi-row parameterised INSERTs, under the protocol's limit of
/// 32767 parameters per statement.
async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    request: &LoadRequest,
) -> Result<(), tokio_postgres::Error> {
    let ncols = request.table.columns.len();
    let per_statement = (32_767 / ncols).clamp(1, 1000);
    let rows: Vec<Vec<Value>> = request.values().collect();
    for chunk in rows.chunks(per_statement) {
        let sql = insert_sql(
            &quote_name(&request.table.name),
            &request.table.column_list(),
            ncols,
            chunk.len(),
            None,
        );
        let params: Vec<&(dyn ToSql + Sync)> = chunk
            .iter()
            .flatten()
            .map(|v| v as &(dyn ToSql + Sync))
            .collect();
        tx.execute(sql.as_str(), &params).await?;
    }
    Ok(())
}

/// Rows through `COPY ... FROM STDIN (FORMAT binary)` (PostgreSQL only;
/// Redshift's COPY reads from S3, see the `copy` load method).
async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    request: &LoadRequest,
) -> Result<(), tokio_postgres::Error> {
    let mut writer = std::pin::pin!(copy_writer(tx, &request.table).await?);
    for batch in &request.rows {
        write_batch(writer.as_mut(), batch).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// The rows of `batch` into a binary `COPY`, bound straight from the
/// columns (texts are not copied first).
async fn write_batch(
    mut writer: std::pin::Pin<&mut tokio_postgres::binary_copy::BinaryCopyInWriter>,
    batch: &arrow::record_batch::RecordBatch,
) -> Result<(), tokio_postgres::Error> {
    let columns: Vec<Cells<'_>> = batch
        .columns()
        .iter()
        .map(|c| Cells::of(c.as_ref()))
        .collect();
    // one buffer of cells for every row (no allocation per row)
    let mut cells: Vec<Cell<'_>> = Vec::with_capacity(columns.len());
    for r in 0..batch.num_rows() {
        cells.clear();
        cells.extend(columns.iter().map(|c| c.get(r)));
        writer.as_mut().write_raw(cells.iter()).await?;
    }
    Ok(())
}

/// A binary `COPY ... FROM STDIN` into `table`'s columns.
async fn copy_writer(
    tx: &tokio_postgres::Transaction<'_>,
    table: &TableSpec,
) -> Result<tokio_postgres::binary_copy::BinaryCopyInWriter, tokio_postgres::Error> {
    let types: Vec<Type> = table
        .columns
        .iter()
        .map(|(_, t)| match t {
            SqlType::Date => Type::DATE,
            SqlType::Text => Type::VARCHAR,
            SqlType::BigInt => Type::INT8,
            SqlType::Double => Type::FLOAT8,
            SqlType::Bool => Type::BOOL,
            SqlType::Timestamp => Type::TIMESTAMP,
        })
        .collect();
    let sql = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        quote_name(&table.name),
        table.column_list()
    );
    let sink = tx.copy_in(sql.as_str()).await?;
    Ok(tokio_postgres::binary_copy::BinaryCopyInWriter::new(
        sink, &types,
    ))
}

async fn insert_audit(
    tx: &tokio_postgres::Transaction<'_>,
    request: &LoadRequest,
    load_id: &str,
) -> Result<(), tokio_postgres::Error> {
    let columns: Vec<&str> = AUDIT_COLUMNS.iter().map(|(c, _)| *c).collect();
    for audit in &request.audit {
        let values = audit.values(load_id, &request.table.name);
        let sql = insert_sql(
            &quote_name(&request.audit_table),
            &columns.join(", "),
            values.len(),
            1,
            Some(3),
        );
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        tx.execute(sql.as_str(), &params).await?;
    }
    Ok(())
}

/// `INSERT INTO t (cols) VALUES ($1, ...), ...`; with `now_at`, that
/// column position is `CURRENT_TIMESTAMP` instead of a parameter.
pub(crate) fn insert_sql(
    table: &str,
    columns: &str,
    nparams: usize,
    rows: usize,
    now_at: Option<usize>,
) -> String {
    let mut sql = format!("INSERT INTO {table} ({columns}) VALUES ");
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        let width = nparams + usize::from(now_at.is_some());
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            if Some(c) == now_at {
                sql.push_str("CURRENT_TIMESTAMP");
            } else {
                n += 1;
                sql.push_str(&format!("${n}"));
            }
        }
        sql.push(')');
    }
    sql
}

async fn watch<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "warehouse connection closed");
    }
}

fn rustls_config() -> Result<rustls::ClientConfig, WarehouseError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WarehouseError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The error with its database-side detail (`db error: ...` alone says little).
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_statement_shapes() {
        assert_eq!(
            insert_sql("t", "a, b", 2, 2, None),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
        assert_eq!(
            insert_sql("t", "a, b, c", 2, 1, Some(1)),
            "INSERT INTO t (a, b, c) VALUES ($1, CURRENT_TIMESTAMP, $2)"
        );
    }

    #[test]
    fn targets_name_host_and_database() {
        let w = PgWarehouse::new(
            "postgres://u@db.example:6543/analytics",
            Flavor::Postgres,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            w.target(),
            "postgres host db.example:6543 database analytics"
        );
        let r = PgWarehouse::new(
            "redshift://u:p@cluster.example:5439/dev",
            Flavor::Redshift,
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(r.tls);
        assert_eq!(
            r.target(),
            "redshift host cluster.example:5439 database dev"
        );
    }
}
