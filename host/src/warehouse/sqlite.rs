//! SQLite, the embedded warehouse: the same table, the same audit table
//! and the same replace-in-one-transaction load as PostgreSQL. Dates are
//! stored as `YYYY-MM-DD` text.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use super::postgres::insert_sql;
use super::table::{AUDIT_COLUMNS, Cell, LoadRequest, Value, audit_create_sql, cell, quote_name};
use super::{Shown, WarehouseError};

/// A SQLite database file.
#[derive(Debug)]
pub struct SqliteWarehouse {
    path: PathBuf,
    busy_timeout: Duration,
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(output(self.as_cell()))
    }
}

impl rusqlite::ToSql for Cell<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(output(*self))
    }
}

/// A cell as SQLite binds it (dates and instants as text).
fn output(cell: Cell<'_>) -> ToSqlOutput<'_> {
    match cell {
        Cell::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        Cell::Date(d) => ToSqlOutput::from(d.to_string()),
        Cell::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Cell::Int(i) => ToSqlOutput::from(i),
        Cell::Float(x) => ToSqlOutput::from(x),
        Cell::Bool(b) => ToSqlOutput::from(b),
        Cell::Timestamp(t) => ToSqlOutput::from(t.to_string()),
    }
}

impl SqliteWarehouse {
    /// The database at `path` (created on first load).
    pub fn new(path: PathBuf, busy_timeout: Duration) -> Self {
        SqliteWarehouse { path, busy_timeout }
    }

    /// "sqlite PATH", for messages.
    pub fn target(&self) -> String {
        format!("sqlite {}", self.path.display())
    }

    fn open(&self, table: &str) -> Result<Connection, WarehouseError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(&self.path).map_err(|e| WarehouseError::Connect {
            target: self.target(),
            table: table.into(),
            error: e.to_string(),
        })?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| WarehouseError::Connect {
                target: self.target(),
                table: table.into(),
                error: e.to_string(),
            })?;
        Ok(conn)
    }

    /// Replace the request's dates with its rows, in one transaction.
    pub fn load(&self, request: &LoadRequest, load_id: &str) -> Result<(), WarehouseError> {
        let table = &request.table.name;
        let fail = |e: rusqlite::Error| WarehouseError::Load {
            target: self.target(),
            table: table.clone(),
            error: e.to_string(),
        };
        let mut conn = self.open(table)?;
        // IMMEDIATE takes the write lock first: concurrent loads serialise
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        tx.execute_batch(&request.table.create_sql())
            .map_err(fail)?;
        tx.execute_batch(&audit_create_sql(&request.audit_table))
            .map_err(fail)?;
        if let Some(delete) = request.delete_sql() {
            tx.execute(&delete, []).map_err(fail)?;
        }
        {
            let ncols = request.table.columns.len();
            let sql = insert_sql(
                &quote_name(table),
                &request.table.column_list(),
                ncols,
                1,
                None,
            );
            let mut insert = tx.prepare(&sql).map_err(fail)?;
            // bound straight from the columns (texts are not copied first)
            for batch in &request.rows {
                for r in 0..batch.num_rows() {
                    for (i, column) in batch.columns().iter().enumerate() {
                        insert
                            .raw_bind_parameter(i + 1, cell(column.as_ref(), r))
                            .map_err(fail)?;
                    }
                    insert.raw_execute().map_err(fail)?;
                }
            }
            let columns: Vec<&str> = AUDIT_COLUMNS.iter().map(|(c, _)| *c).collect();
            for audit in &request.audit {
                let values = audit.values(load_id, table);
                let sql = insert_sql(
                    &quote_name(&request.audit_table),
                    &columns.join(", "),
                    values.len(),
                    1,
                    Some(3),
                );
                tx.execute(&sql, rusqlite::params_from_iter(values.iter()))
                    .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)?;
        Ok(())
    }

    /// Run a read query and return its rows as values.
    pub fn query(&self, table: &str, sql: &str) -> Result<Shown, WarehouseError> {
        let fail = |e: rusqlite::Error| WarehouseError::Query {
            target: self.target(),
            table: table.into(),
            error: e.to_string(),
        };
        let conn = self.open(table)?;
        let mut stmt = conn.prepare(sql).map_err(fail)?;
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let n = columns.len();
        let rows = stmt
            .query_map([], |row| {
                (0..n)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(i) => Value::Int(i),
                            ValueRef::Real(x) => Value::Float(x),
                            ValueRef::Text(t) | ValueRef::Blob(t) => {
                                Value::Text(String::from_utf8_lossy(t).into_owned())
                            }
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Value>>>()
            })
            .map_err(fail)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(fail)?;
        Ok(Shown { columns, rows })
    }
}
