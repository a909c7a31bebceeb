//! Splitting output batches by the value of the partition column.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Date32Type, Int64Type, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, TimeDelta};

/// Hive's name for a null partition value.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The partition value of row `row` of `column`, as it appears in paths:
/// dates (and timestamps, by their UTC date) as `YYYY-MM-DD`.
pub fn partition_value(column: &dyn Array, row: usize) -> String {
    if column.is_null(row) {
        return NULL_PARTITION.to_string();
    }
    match column.data_type() {
        DataType::Date32 => {
            let days = column.as_primitive::<Date32Type>().value(row);
            (NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + TimeDelta::days(days.into()))
                .to_string()
        }
        DataType::Timestamp(..) => {
            let ms = column.as_primitive::<TimestampMillisecondType>().value(row);
            DateTime::from_timestamp_millis(ms).map_or_else(
                || NULL_PARTITION.to_string(),
                |t| t.date_naive().to_string(),
            )
        }
        DataType::Int64 => column.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Boolean => column.as_boolean().value(row).to_string(),
        DataType::Utf8 => sanitize(column.as_string::<i32>().value(row)),
        other => format!("unsupported-{other}"),
    }
}

/// Keep partition values safe as one path segment.
fn sanitize(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Split `batch` into one batch per value of column `column`, in value order
/// (rows keep their order within each part).
pub fn split_by_partition(batch: &RecordBatch, column: usize) -> BTreeMap<String, RecordBatch> {
    let values = batch.column(column);
    let mut rows: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    if let (DataType::Date32, None) = (values.data_type(), values.nulls()) {
        // the common case (event_date): group by day number, format each day once
        let mut days: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
        for (row, day) in values
            .as_primitive::<Date32Type>()
            .values()
            .iter()
            .enumerate()
        {
            days.entry(*day).or_default().push(row as u32);
        }
        for (_, indices) in days {
            rows.insert(
                partition_value(values.as_ref(), indices[0] as usize),
                indices,
            );
        }
    } else {
        for row in 0..batch.num_rows() {
            rows.entry(partition_value(values.as_ref(), row))
                .or_default()
                .push(row as u32);
        }
    }
    rows.into_iter()
        .map(|(value, indices)| {
            let batch = if indices.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(indices)).expect("indices are in range")
            };
            (value, batch)
        })
        .collect()
}
