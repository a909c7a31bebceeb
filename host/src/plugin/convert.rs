//! Arrow record batches ↔ the WIT `batch` (Arrow's layout, so each column is
//! one or two buffer copies), and WIT schemas ↔ declared schemas.
//!
//! Output coming back from a plugin is untrusted: every buffer is checked
//! against the schema the plugin declared at `init` before it becomes Arrow.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
    TimestampMillisecondArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{Date32Type, Float64Type, Int64Type, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;

use super::bindings::types as wit;
use crate::pipeline::{DeclaredSchema, FieldSpec, FieldType};

/// The WIT form of a declared schema.
pub(crate) fn schema_to_wit(schema: &DeclaredSchema) -> Vec<wit::Field> {
    schema
        .fields()
        .iter()
        .map(|f| wit::Field {
            name: f.name.clone(),
            type_: type_to_wit(f.ty),
            nullable: f.nullable,
        })
        .collect()
}

/// A declared schema from the plugin's answer to `init`.
pub(crate) fn schema_from_wit(fields: &[wit::Field]) -> Result<DeclaredSchema, String> {
    DeclaredSchema::new(
        fields
            .iter()
            .map(|f| FieldSpec::new(&f.name, type_from_wit(f.type_), f.nullable))
            .collect(),
    )
    .map_err(|e| format!("invalid output schema: {e}"))
}

fn type_to_wit(ty: FieldType) -> wit::FieldType {
    match ty {
        FieldType::Boolean => wit::FieldType::Boolean,
        FieldType::Int64 => wit::FieldType::Int64,
        FieldType::Float64 => wit::FieldType::Float64,
        FieldType::String => wit::FieldType::String,
        FieldType::Timestamp => wit::FieldType::TimestampMs,
        FieldType::Date => wit::FieldType::Date,
    }
}

fn type_from_wit(ty: wit::FieldType) -> FieldType {
    match ty {
        wit::FieldType::Boolean => FieldType::Boolean,
        wit::FieldType::Int64 => FieldType::Int64,
        wit::FieldType::Float64 => FieldType::Float64,
        wit::FieldType::String => FieldType::String,
        wit::FieldType::TimestampMs => FieldType::Timestamp,
        wit::FieldType::Date => FieldType::Date,
    }
}

/// Copy a record batch (of the declared input schema) into WIT buffers.
pub(crate) fn batch_to_wit(batch: &RecordBatch) -> wit::Batch {
    let columns = batch
        .columns()
        .iter()
        .map(|c| column_to_wit(c.as_ref()))
        .collect();
    wit::Batch {
        num_rows: batch.num_rows() as u32,
        columns,
    }
}

fn column_to_wit(array: &dyn Array) -> wit::Column {
    let validity = array
        .logical_nulls()
        .filter(|n| n.null_count() > 0)
        .map(|n| bitmap_bytes(n.inner()));
    let values = match array.data_type() {
        arrow::datatypes::DataType::Boolean => {
            let b = array.as_boolean();
            wit::ColumnValues::Boolean(b.values().iter().map(u8::from).collect())
        }
        arrow::datatypes::DataType::Int64 => {
            wit::ColumnValues::Int64(array.as_primitive::<Int64Type>().values().to_vec())
        }
        arrow::datatypes::DataType::Float64 => {
            wit::ColumnValues::Float64(array.as_primitive::<Float64Type>().values().to_vec())
        }
        arrow::datatypes::DataType::Timestamp(..) => wit::ColumnValues::TimestampMs(
            array
                .as_primitive::<TimestampMillisecondType>()
                .values()
                .to_vec(),
        ),
        arrow::datatypes::DataType::Date32 => {
            wit::ColumnValues::Date(array.as_primitive::<Date32Type>().values().to_vec())
        }
        arrow::datatypes::DataType::Utf8 => {
            let s = array.as_string::<i32>();
            let offsets = s.value_offsets();
            let (first, last) = (offsets[0], offsets[offsets.len() - 1]);
            let data = s.value_data()[first as usize..last as usize].to_vec();
            let offsets = if first == 0 {
                offsets.to_vec()
            } else {
                offsets.iter().map(|o| o - first).collect()
            };
            wit::ColumnValues::String(wit::StringColumn { offsets, data })
        }
        other => unreachable!("declared schemas only hold supported types, found {other}"),
    };
    wit::Column { validity, values }
}

/// The bits of `b` packed from bit 0 (re-packs sliced buffers).
fn bitmap_bytes(b: &BooleanBuffer) -> Vec<u8> {
    if b.offset() == 0 {
        b.values()[..b.len().div_ceil(8)].to_vec()
    } else {
        b.sliced().as_slice()[..b.len().div_ceil(8)].to_vec()
    }
}

/// Check a plugin's output batch against its declared output schema and
/// turn it into Arrow.
pub(crate) fn batch_from_wit(
    batch: wit::Batch,
    schema: &DeclaredSchema,
) -> Result<RecordBatch, String> {
    let rows = batch.num_rows as usize;
    if batch.columns.len() != schema.fields().len() {
        return Err(format!(
            "output has {} columns, the declared schema {}",
            batch.columns.len(),
            schema.fields().len()
        ));
    }
    let columns = batch
        .columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| column_from_wit(c, f, rows).map_err(|e| format!("column `{}`: {e}", f.name)))
        .collect::<Result<Vec<ArrayRef>, String>>()?;
    RecordBatch::try_new(schema.arrow().clone(), columns).map_err(|e| e.to_string())
}

fn column_from_wit(
    column: wit::Column,
    field: &FieldSpec,
    rows: usize,
) -> Result<ArrayRef, String> {
    let nulls = match column.validity {
        None => None,
        Some(bits) => {
            if bits.len() < rows.div_ceil(8) {
                // no sizes in the text: one cause, one reason, whatever
                // the piece of the batch it was met in
                return Err("validity bitmap shorter than the number of rows".into());
            }
            let nulls = NullBuffer::new(BooleanBuffer::new(Buffer::from_vec(bits), 0, rows));
            (nulls.null_count() > 0).then_some(nulls)
        }
    };
    if !field.nullable && nulls.is_some() {
        return Err("nulls in a non-nullable field".into());
    }
    fn check_len(n: usize, rows: usize) -> Result<(), String> {
        if n == rows {
            Ok(())
        } else {
            tracing::debug!(values = n, rows, "output column of the wrong length");
            Err("a number of values other than the number of kept rows".into())
        }
    }
    let array: ArrayRef = match (field.ty, column.values) {
        (FieldType::Boolean, wit::ColumnValues::Boolean(v)) => {
            check_len(v.len(), rows)?;
            Arc::new(BooleanArray::new(
                v.iter().map(|b| *b != 0).collect(),
                nulls,
            ))
        }
        (FieldType::Int64, wit::ColumnValues::Int64(v)) => {
            check_len(v.len(), rows)?;
            Arc::new(Int64Array::new(ScalarBuffer::from(v), nulls))
        }
        (FieldType::Float64, wit::ColumnValues::Float64(v)) => {
            check_len(v.len(), rows)?;
            Arc::new(Float64Array::new(ScalarBuffer::from(v), nulls))
        }
        (FieldType::Timestamp, wit::ColumnValues::TimestampMs(v)) => {
            check_len(v.len(), rows)?;
            Arc::new(
                TimestampMillisecondArray::new(ScalarBuffer::from(v), nulls).with_timezone("UTC"),
            )
        }
        (FieldType::Date, wit::ColumnValues::Date(v)) => {
            check_len(v.len(), rows)?;
            Arc::new(Date32Array::new(ScalarBuffer::from(v), nulls))
        }
        (FieldType::String, wit::ColumnValues::String(s)) => {
            check_len(s.offsets.len().saturating_sub(1), rows)?;
            if s.offsets.first() != Some(&0)
                || s.offsets.windows(2).any(|w| w[0] > w[1])
                || s.offsets
                    .last()
                    .is_some_and(|&l| l as usize != s.data.len())
            {
                return Err("string offsets are not monotonic from 0 to the data length".into());
            }
            let offsets = OffsetBuffer::new(ScalarBuffer::from(s.offsets));
            let array = StringArray::try_new(offsets, Buffer::from_vec(s.data), nulls)
                .map_err(|e| e.to_string())?;
            Arc::new(array)
        }
        (ty, _) => return Err(format!("values do not match the declared type {ty}")),
    };
    Ok(array)
}
