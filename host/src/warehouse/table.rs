//! The tables a load writes, described once: column types from the
//! aggregated rows' Arrow schema, DDL that PostgreSQL, Redshift and SQLite
//! all accept, the audit row, and values taken out of Arrow arrays.

use arrow::array::{
    Array, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int64Type, SchemaRef, TimestampMillisecondType,
};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use serde::Serialize;

/// A column's SQL type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlType {
    /// DATE.
    Date,
    /// VARCHAR(65535).
    Text,
    /// BIGINT.
    BigInt,
    /// DOUBLE PRECISION.
    Double,
    /// BOOLEAN.
    Bool,
    /// TIMESTAMP (without time zone; the lake's millisecond UTC instants).
    Timestamp,
}

impl SqlType {
    /// The type for an Arrow type, if weir can load it.
    pub fn of(data_type: &DataType) -> Option<SqlType> {
        Some(match data_type {
            DataType::Date32 => SqlType::Date,
            DataType::Utf8 => SqlType::Text,
            DataType::Int64 => SqlType::BigInt,
            DataType::Float64 => SqlType::Double,
            DataType::Boolean => SqlType::Bool,
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, _) => SqlType::Timestamp,
            _ => return None,
        })
    }

    /// DDL spelling accepted by PostgreSQL, Redshift and SQLite.
    pub fn ddl(self) -> &'static str {
        match self {
            SqlType::Date => "DATE",
            SqlType::Text => "VARCHAR(65535)",
            SqlType::BigInt => "BIGINT",
            SqlType::Double => "DOUBLE PRECISION",
            SqlType::Bool => "BOOLEAN",
            SqlType::Timestamp => "TIMESTAMP",
        }
    }
}

/// One value of a row.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// NULL.
    Null,
    /// a date.
    Date(NaiveDate),
    /// text.
    Text(String),
    /// an integer.
    Int(i64),
    /// a float.
    Float(f64),
    /// a boolean.
    Bool(bool),
    /// an instant (UTC, no zone).
    Timestamp(chrono::NaiveDateTime),
}

impl Value {
    /// The value as a cell (borrowing its text).
    pub fn as_cell(&self) -> Cell<'_> {
        match self {
            Value::Null => Cell::Null,
            Value::Date(d) => Cell::Date(*d),
            Value::Text(s) => Cell::Text(s),
            Value::Int(i) => Cell::Int(*i),
            Value::Float(x) => Cell::Float(*x),
            Value::Bool(b) => Cell::Bool(*b),
            Value::Timestamp(t) => Cell::Timestamp(*t),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str(""),
            Value::Date(d) => write!(f, "{d}"),
            Value::Text(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", (x * 100.0).round() / 100.0),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Timestamp(t) => write!(f, "{t}"),
        }
    }
}

/// The aggregate table: name, columns, and the date column a load replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// table name (may be `schema.table`).
    pub name: String,
    /// columns in order.
    pub columns: Vec<(String, SqlType)>,
    /// the partition column (DATE) whose values a load replaces.
    pub partition_column: String,
}

impl TableSpec {
    /// Describe `name` from the aggregated rows' schema.
    pub fn new(
        name: &str,
        schema: &SchemaRef,
        partition_column: &str,
    ) -> Result<TableSpec, String> {
        let mut columns = Vec::new();
        for f in schema.fields() {
            let ty = SqlType::of(f.data_type()).ok_or_else(|| {
                format!(
                    "column `{}` has type {} which weir cannot load",
                    f.name(),
                    f.data_type()
                )
            })?;
            columns.push((f.name().clone(), ty));
        }
        match columns.iter().find(|(c, _)| c == partition_column) {
            Some((_, SqlType::Date)) => {}
            _ => {
                return Err(format!(
                    "the partition column `{partition_column}` must be a DATE column of the aggregate"
                ));
            }
        }
        Ok(TableSpec {
            name: name.into(),
            columns,
            partition_column: partition_column.into(),
        })
    }

    /// `CREATE TABLE IF NOT EXISTS` for the aggregate table.
    pub fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            quote_name(&self.name),
            self.column_defs()
        )
    }

    /// `"col" TYPE, ...`: the columns as DDL.
    fn column_defs(&self) -> String {
        self.column_defs_but("")
    }

    /// The columns as DDL, all but `except` (the partition column of
    /// files that keep it in the Delta log).
    pub fn column_defs_but(&self, except: &str) -> String {
        self.columns
            .iter()
            .filter(|(c, _)| c != except)
            .map(|(c, t)| format!("{} {}", quote(c), t.ddl()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `CREATE TEMP TABLE` of these columns, dropped at the end of the
    /// transaction (the staging table of a load pushed down to the warehouse).
    pub fn temp_create_sql(&self) -> String {
        format!(
            "CREATE TEMP TABLE {} ({}) ON COMMIT DROP",
            quote_name(&self.name),
            self.column_defs()
        )
    }

    /// `CREATE TEMP TABLE` of these columns for the rest of the session
    /// (Redshift has no `ON COMMIT DROP`; the load's connection ends after it).
    pub fn session_temp_create_sql(&self) -> String {
        format!(
            "CREATE TEMP TABLE {} ({})",
            quote_name(&self.name),
            self.column_defs()
        )
    }

    /// `INSERT INTO` this table the rows of `select` (its columns in order).
    pub fn insert_select_sql(&self, select: &str) -> String {
        format!(
            "INSERT INTO {} ({})\n{select}",
            quote_name(&self.name),
            self.column_list()
        )
    }

    /// The quoted column list.
    pub fn column_list(&self) -> String {
        self.column_list_but("")
    }

    /// The quoted column list, all but `except`.
    pub fn column_list_but(&self, except: &str) -> String {
        self.columns
            .iter()
            .filter(|(c, _)| c != except)
            .map(|(c, _)| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What one load did to one date partition; a row of the audit table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRow {
    /// the date partition.
    pub partition_date: NaiveDate,
    /// the pipeline.
    pub pipeline: String,
    /// digest of the plugin the batch path re-applied (empty when not).
    pub plugin_digest: String,
    /// digests of the plugins that wrote the lake files.
    pub lake_plugin_digests: String,
    /// the commit records read: JSON, per `topic/partition` the first and
    /// last chain offset and the number of records.
    pub commits: String,
    /// files read.
    pub files: i64,
    /// rows read from the lake.
    pub rows_read: i64,
    /// rows the plugin dropped or rejected when re-applied.
    pub rows_excluded: i64,
    /// duplicate rows skipped.
    pub duplicates: i64,
    /// aggregate rows written.
    pub rows_loaded: i64,
}

/// The audit table's columns, in order.
pub const AUDIT_COLUMNS: [(&str, &str); 13] = [
    ("load_id", "VARCHAR(64) NOT NULL"),
    ("target_table", "VARCHAR(256) NOT NULL"),
    ("partition_date", "DATE NOT NULL"),
    ("loaded_at", "TIMESTAMP NOT NULL"),
    ("pipeline", "VARCHAR(256) NOT NULL"),
    ("plugin_digest", "VARCHAR(64) NOT NULL"),
    ("lake_plugin_digests", "VARCHAR(65535) NOT NULL"),
    ("commits", "VARCHAR(65535) NOT NULL"),
    ("files", "BIGINT NOT NULL"),
    ("rows_read", "BIGINT NOT NULL"),
    ("rows_excluded", "BIGINT NOT NULL"),
    ("duplicates", "BIGINT NOT NULL"),
    ("rows_loaded", "BIGINT NOT NULL"),
];

/// `CREATE TABLE IF NOT EXISTS` for the audit table.
pub fn audit_create_sql(audit_table: &str) -> String {
    let cols: Vec<String> = AUDIT_COLUMNS
        .iter()
        .map(|(c, t)| format!("{c} {t}"))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        quote_name(audit_table),
        cols.join(", ")
    )
}

impl AuditRow {
    /// The row's values in [`AUDIT_COLUMNS`] order, without `loaded_at`
    /// (the fourth column, which the database fills with its clock).
    pub fn values(&self, load_id: &str, table: &str) -> Vec<Value> {
        vec![
            Value::Text(load_id.into()),
            Value::Text(table.into()),
            Value::Date(self.partition_date),
            Value::Text(self.pipeline.clone()),
            Value::Text(self.plugin_digest.clone()),
            Value::Text(self.lake_plugin_digests.clone()),
            Value::Text(self.commits.clone()),
            Value::Int(self.files),
            Value::Int(self.rows_read),
            Value::Int(self.rows_excluded),
            Value::Int(self.duplicates),
            Value::Int(self.rows_loaded),
        ]
    }
}

/// One load: the dates it replaces, the rows that replace them, the audit.
#[derive(Clone, Debug)]
pub struct LoadRequest {
    /// the aggregate table.
    pub table: TableSpec,
    /// the audit table's name.
    pub audit_table: String,
    /// every date whose rows are replaced (those with rows and, with
    /// `--replace-empty`, those without).
    pub dates: Vec<NaiveDate>,
    /// the new rows (of `table`'s columns).
    pub rows: Vec<RecordBatch>,
    /// one audit row per replaced date.
    pub audit: Vec<AuditRow>,
}

impl LoadRequest {
    /// `DELETE FROM table WHERE date IN (...)` for the replaced dates, if any.
    pub fn delete_sql(&self) -> Option<String> {
        (!self.dates.is_empty()).then(|| {
            format!(
                "DELETE FROM {} WHERE {}",
                quote_name(&self.table.name),
                dates_in(&self.table.partition_column, &self.dates)
            )
        })
    }

    /// Every new row as values.
    pub fn values(&self) -> impl Iterator<Item = Vec<Value>> + '_ {
        self.rows
            .iter()
            .flat_map(|b| (0..b.num_rows()).map(move |r| row_values(b, r)))
    }

    /// Rows in the request.
    pub fn row_count(&self) -> usize {
        self.rows.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Row `r` of `batch` as values.
pub fn row_values(batch: &RecordBatch, r: usize) -> Vec<Value> {
    batch
        .columns()
        .iter()
        .map(|c| cell(c.as_ref(), r).to_value())
        .collect()
}

/// One value of a row, borrowed from its column: what the loads bind,
/// without a copy of each text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell<'a> {
    /// NULL (also a type weir does not load).
    Null,
    /// a date.
    Date(NaiveDate),
    /// text.
    Text(&'a str),
    /// an integer.
    Int(i64),
    /// a float.
    Float(f64),
    /// a boolean.
    Bool(bool),
    /// an instant (UTC, no zone).
    Timestamp(chrono::NaiveDateTime),
}

impl Cell<'_> {
    /// The value, owned.
    pub fn to_value(self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Date(d) => Value::Date(d),
            Cell::Text(s) => Value::Text(s.to_string()),
            Cell::Int(i) => Value::Int(i),
            Cell::Float(x) => Value::Float(x),
            Cell::Bool(b) => Value::Bool(b),
            Cell::Timestamp(t) => Value::Timestamp(t),
        }
    }
}

/// Row `r` of column `c`.
pub fn cell(c: &dyn Array, r: usize) -> Cell<'_> {
    Cells::of(c).get(r)
}

/// A column resolved once to its Arrow type, read row by row: a load's
/// loop over cells without a match on the data type per cell.
#[derive(Clone, Copy, Debug)]
pub enum Cells<'a> {
    /// DATE.
    Date(&'a Date32Array),
    /// text.
    Text(&'a StringArray),
    /// BIGINT.
    Int(&'a Int64Array),
    /// DOUBLE PRECISION.
    Float(&'a Float64Array),
    /// BOOLEAN.
    Bool(&'a BooleanArray),
    /// TIMESTAMP (milliseconds, UTC).
    Timestamp(&'a TimestampMillisecondArray),
    /// a type weir does not load: every cell is NULL.
    Unloaded,
}

impl<'a> Cells<'a> {
    /// The column `c`, resolved.
    pub fn of(c: &'a dyn Array) -> Self {
        match c.data_type() {
            DataType::Date32 => Cells::Date(c.as_primitive::<Date32Type>()),
            DataType::Utf8 => Cells::Text(c.as_string::<i32>()),
            DataType::Int64 => Cells::Int(c.as_primitive::<Int64Type>()),
            DataType::Float64 => Cells::Float(c.as_primitive::<Float64Type>()),
            DataType::Boolean => Cells::Bool(c.as_boolean()),
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, _) => {
                Cells::Timestamp(c.as_primitive::<TimestampMillisecondType>())
            }
            _ => Cells::Unloaded,
        }
    }

    /// Row `r`.
    pub fn get(&self, r: usize) -> Cell<'a> {
        match *self {
            Cells::Date(a) if a.is_valid(r) => Cell::Date(a.value_as_date(r).unwrap_or_default()),
            Cells::Text(a) if a.is_valid(r) => Cell::Text(a.value(r)),
            Cells::Int(a) if a.is_valid(r) => Cell::Int(a.value(r)),
            Cells::Float(a) if a.is_valid(r) => Cell::Float(a.value(r)),
            Cells::Bool(a) if a.is_valid(r) => Cell::Bool(a.value(r)),
            Cells::Timestamp(a) if a.is_valid(r) => {
                a.value_as_datetime(r).map_or(Cell::Null, Cell::Timestamp)
            }
            _ => Cell::Null,
        }
    }
}

/// Quote one identifier.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quote a possibly schema-qualified name (`schema.table`).
pub fn quote_name(name: &str) -> String {
    name.split('.').map(quote).collect::<Vec<_>>().join(".")
}

/// A SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"col" IN ('2026-11-20', ...)` for the replaced dates (dates are
/// formatted by weir, never user text).
pub fn dates_in(column: &str, dates: &[NaiveDate]) -> String {
    let list: Vec<String> = dates.iter().map(|d| literal(&d.to_string())).collect();
    format!("{} IN ({})", quote(column), list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn ddl_and_predicates() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("event_date", DataType::Date32, false),
            Field::new("page_url", DataType::Utf8, false),
            Field::new("events", DataType::Int64, false),
            Field::new("avg_tti_ms", DataType::Float64, true),
        ]));
        let t = TableSpec::new("analytics.page_metrics_daily", &schema, "event_date").unwrap();
        assert_eq!(
            t.create_sql(),
            "CREATE TABLE IF NOT EXISTS \"analytics\".\"page_metrics_daily\" (\"event_date\" DATE, \
             \"page_url\" VARCHAR(65535), \"events\" BIGINT, \"avg_tti_ms\" DOUBLE PRECISION)"
        );
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(
            dates_in("event_date", &[d("2026-11-20"), d("2026-11-21")]),
            "\"event_date\" IN ('2026-11-20', '2026-11-21')"
        );
        assert!(TableSpec::new("t", &schema, "page_url").is_err());
        assert_eq!(literal("it's"), "'it''s'");
    }
}
