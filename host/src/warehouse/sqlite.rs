//! SQLite, the embedded warehouse: the same table, the same audit table
//! and the same replace-in-one-transaction load as PostgreSQL. Dates are
//! stored as `YYYY-MM-DD` text.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveDate;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use super::postgres::insert_sql;
use super::table::{AUDIT_COLUMNS, Cell, Cells, LoadRequest, Value, audit_create_sql, quote_name};
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
            insert_rows(&tx, request).map_err(fail)?;
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

/// Rows per `INSERT` statement: a few dozen rows amortise SQLite's cost
/// per statement, well inside its limit of 32 766 parameters.
fn rows_per_insert(ncols: usize) -> usize {
    (32_766 / ncols.max(1)).clamp(1, 64)
}

/// The request's rows into its table: multi-row `INSERT`s bound straight
/// from the columns (each column's type resolved once per batch, texts not
/// copied first, a date's text made once per run of equal dates).
fn insert_rows(tx: &rusqlite::Transaction<'_>, request: &LoadRequest) -> rusqlite::Result<()> {
    let table = quote_name(&request.table.name);
    let names = request.table.column_list();
    let ncols = request.table.columns.len();
    let per = rows_per_insert(ncols);
    let mut full = tx.prepare(&insert_sql(&table, &names, ncols, per, None))?;
    let mut dates = vec![DateText::default(); ncols];
    for batch in &request.rows {
        let columns: Vec<Cells<'_>> = batch
            .columns()
            .iter()
            .map(|c| Cells::of(c.as_ref()))
            .collect();
        let n = batch.num_rows();
        let mut start = 0;
        while start < n {
            let take = per.min(n - start);
            let mut tail;
            let stmt = if take == per {
                &mut full
            } else {
                tail = tx.prepare_cached(&insert_sql(&table, &names, ncols, take, None))?;
                &mut *tail
            };
            let mut index = 1;
            for r in start..start + take {
                for (column, date) in columns.iter().zip(&mut dates) {
                    match column.get(r) {
                        Cell::Date(d) => stmt.raw_bind_parameter(index, date.of(d))?,
                        other => stmt.raw_bind_parameter(index, other)?,
                    }
                    index += 1;
                }
            }
            stmt.raw_execute()?;
            start += take;
        }
    }
    Ok(())
}

/// A date as SQLite stores it (`YYYY-MM-DD`), formatted once while the
/// same date repeats (rows of one date partition come together).
#[derive(Clone, Debug, Default)]
struct DateText {
    date: Option<NaiveDate>,
    text: String,
}

impl DateText {
    fn of(&mut self, date: NaiveDate) -> &str {
        if self.date != Some(date) {
            self.text.clear();
            // writing into a String cannot fail
            let _ = write!(self.text, "{date}");
            self.date = Some(date);
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    use crate::warehouse::table::TableSpec;

    /// `n` rows from `first`: two dates, a text, an integer and a float,
    /// each with NULLs at its own period.
    fn batch(schema: &Arc<Schema>, first: i64, n: usize) -> RecordBatch {
        let ids = first..first + n as i64;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Date32Array::from_iter_values(
                ids.clone().map(|i| 20_000 + (i % 2) as i32),
            )),
            Arc::new(StringArray::from_iter(
                ids.clone()
                    .map(|i| (i % 7 != 0).then(|| format!("/p/{i}/é"))),
            )),
            Arc::new(Int64Array::from_iter(
                ids.clone().map(|i| (i % 5 != 0).then_some(i)),
            )),
            Arc::new(Float64Array::from_iter(
                ids.map(|i| (i % 3 != 0).then_some(i as f64 / 8.0)),
            )),
        ];
        RecordBatch::try_new(schema.clone(), columns).unwrap()
    }

    fn as_stored(v: &Value) -> Value {
        match v {
            Value::Date(d) => Value::Text(d.to_string()),
            other => other.clone(),
        }
    }

    #[test]
    fn a_load_of_full_and_partial_statements_reads_back_row_for_row() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("day", DataType::Date32, false),
            Field::new("page", DataType::Utf8, true),
            Field::new("events", DataType::Int64, true),
            Field::new("avg", DataType::Float64, true),
        ]));
        let table = TableSpec::new("t", &schema, "day").unwrap();
        let per = rows_per_insert(table.columns.len());
        // full statements, a tail in each batch, and a batch shorter than one statement
        let rows = vec![
            batch(&schema, 0, 3 * per + 5),
            batch(&schema, 1_000, per - 1),
            batch(&schema, 2_000, 2 * per),
        ];
        let dir = tempfile::tempdir().unwrap();
        let warehouse = SqliteWarehouse::new(dir.path().join("w.db"), Duration::from_secs(5));
        let request = LoadRequest {
            table,
            audit_table: "audit".into(),
            dates: vec![],
            rows,
            audit: vec![],
        };
        warehouse.load(&request, "l1").unwrap();
        let shown = warehouse
            .query("t", "SELECT day, page, events, avg FROM t ORDER BY rowid")
            .unwrap();
        let expected: Vec<Vec<Value>> = request
            .values()
            .map(|row| row.iter().map(as_stored).collect())
            .collect();
        assert_eq!(shown.rows.len(), 6 * per + 4);
        assert_eq!(shown.rows, expected);
    }
}
