//! Arrow record batches ↔ the WIT `batch` (Arrow's layout: a batch going in
//! is lowered straight from its Arrow buffers, one coming back is one copy
//! per buffer), and WIT schemas ↔ declared schemas.
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
use wasmtime::component::{ComponentType, Lower};

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

/// A WIT `batch` lent from a record batch's Arrow buffers: it is lowered
/// into the plugin's memory straight from them (one copy), instead of being
/// copied into host vectors first. Built by [`lend_batch`].
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct BatchRef<'a> {
    #[component(name = "num-rows")]
    num_rows: u32,
    columns: Vec<ColumnRef<'a>>,
}

/// A WIT `column`, lent.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct ColumnRef<'a> {
    validity: Option<&'a [u8]>,
    values: ValuesRef<'a>,
}

/// A WIT `column-values`, lent.
#[derive(ComponentType, Lower)]
#[component(variant)]
pub(crate) enum ValuesRef<'a> {
    #[component(name = "boolean")]
    Boolean(&'a [u8]),
    #[component(name = "int64")]
    Int64(&'a [i64]),
    #[component(name = "float64")]
    Float64(&'a [f64]),
    #[component(name = "string")]
    String(StringColumnRef<'a>),
    #[component(name = "timestamp-ms")]
    TimestampMs(&'a [i64]),
    #[component(name = "date")]
    Date(&'a [i32]),
}

/// A WIT `string-column`, lent.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct StringColumnRef<'a> {
    offsets: &'a [i32],
    data: &'a [u8],
}

/// What a column cannot lend as Arrow holds it: a validity bitmap that
/// starts inside a byte (a sliced batch), booleans (one byte per value in
/// WIT, one bit in Arrow), string offsets that do not start at 0.
#[derive(Default)]
pub(crate) struct Converted {
    validity: Option<Vec<u8>>,
    booleans: Option<Vec<u8>>,
    offsets: Option<Vec<i32>>,
}

/// The conversions [`lend_batch`] needs, one per column of `batch` (most
/// columns need none).
pub(crate) fn convert_for_lending(batch: &RecordBatch) -> Vec<Converted> {
    batch
        .columns()
        .iter()
        .map(|c| {
            let validity = c
                .nulls()
                .filter(|n| n.null_count() > 0 && n.offset() % 8 != 0)
                .map(|n| n.inner().sliced().as_slice()[..n.len().div_ceil(8)].to_vec());
            let booleans = (c.data_type() == &arrow::datatypes::DataType::Boolean)
                .then(|| c.as_boolean().values().iter().map(u8::from).collect());
            let offsets = (c.data_type() == &arrow::datatypes::DataType::Utf8)
                .then(|| c.as_string::<i32>().value_offsets())
                .filter(|o| o[0] != 0)
                .map(|o| o.iter().map(|x| x - o[0]).collect());
            Converted {
                validity,
                booleans,
                offsets,
            }
        })
        .collect()
}

/// A record batch (of the declared input schema) as a WIT batch, lending
/// its buffers, and `converted` (from [`convert_for_lending`]) where they
/// cannot be lent.
pub(crate) fn lend_batch<'a>(batch: &'a RecordBatch, converted: &'a [Converted]) -> BatchRef<'a> {
    let columns = batch
        .columns()
        .iter()
        .zip(converted)
        .map(|(c, converted)| lend_column(c.as_ref(), converted))
        .collect();
    BatchRef {
        num_rows: batch.num_rows() as u32,
        columns,
    }
}

fn lend_column<'a>(array: &'a dyn Array, converted: &'a Converted) -> ColumnRef<'a> {
    let validity = converted.validity.as_deref().or_else(|| {
        array.nulls().filter(|n| n.null_count() > 0).map(|n| {
            let start = n.offset() / 8;
            &n.buffer().as_slice()[start..start + n.len().div_ceil(8)]
        })
    });
    let values = match array.data_type() {
        arrow::datatypes::DataType::Boolean => {
            ValuesRef::Boolean(converted.booleans.as_deref().unwrap_or_default())
        }
        arrow::datatypes::DataType::Int64 => {
            ValuesRef::Int64(array.as_primitive::<Int64Type>().values())
        }
        arrow::datatypes::DataType::Float64 => {
            ValuesRef::Float64(array.as_primitive::<Float64Type>().values())
        }
        arrow::datatypes::DataType::Timestamp(..) => {
            ValuesRef::TimestampMs(array.as_primitive::<TimestampMillisecondType>().values())
        }
        arrow::datatypes::DataType::Date32 => {
            ValuesRef::Date(array.as_primitive::<Date32Type>().values())
        }
        arrow::datatypes::DataType::Utf8 => {
            let s = array.as_string::<i32>();
            let offsets = s.value_offsets();
            let (first, last) = (offsets[0], offsets[offsets.len() - 1]);
            ValuesRef::String(StringColumnRef {
                offsets: converted.offsets.as_deref().unwrap_or(offsets),
                data: &s.value_data()[first as usize..last as usize],
            })
        }
        other => unreachable!("declared schemas only hold supported types, found {other}"),
    };
    ColumnRef { validity, values }
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

#[cfg(test)]
mod tests {
    use arrow::array::{BooleanArray, Int64Array, RecordBatch, StringArray};

    use super::*;

    /// Unpack `rows` bits of a WIT validity bitmap.
    fn bits(bytes: &[u8], rows: usize) -> Vec<bool> {
        (0..rows)
            .map(|i| bytes[i / 8] & (1 << (i % 8)) != 0)
            .collect()
    }

    /// A batch sliced at an offset that is not a whole byte of bits: what
    /// can be lent is lent, the rest converted, and the plugin sees the
    /// same values either way.
    #[test]
    fn a_sliced_batch_is_lent_with_rebased_offsets_and_repacked_bits() {
        let n = 20;
        let ints = Int64Array::from_iter((0..n).map(|i| (i % 3 != 0).then_some(i)));
        let flags = BooleanArray::from_iter((0..n).map(|i| Some(i % 2 == 0)));
        let texts = StringArray::from_iter((0..n).map(|i| (i % 4 != 1).then(|| format!("é{i}"))));
        let batch = RecordBatch::try_from_iter([
            ("i", Arc::new(ints) as ArrayRef),
            ("b", Arc::new(flags) as ArrayRef),
            ("s", Arc::new(texts) as ArrayRef),
        ])
        .unwrap();
        for (offset, rows) in [(0, 20), (8, 9), (3, 10), (13, 7)] {
            let sliced = batch.slice(offset, rows);
            let converted = convert_for_lending(&sliced);
            let lent = lend_batch(&sliced, &converted);
            assert_eq!(lent.num_rows as usize, rows);
            let [ints, flags, texts] = &lent.columns[..] else {
                panic!("three columns");
            };
            let want: Vec<bool> = (offset..offset + rows).map(|i| i % 3 != 0).collect();
            assert_eq!(bits(ints.validity.unwrap(), rows), want, "at {offset}");
            let ValuesRef::Int64(values) = ints.values else {
                panic!("int64")
            };
            // a null's slot holds 0, as Arrow's builder left it
            let want: Vec<i64> = (offset..offset + rows)
                .map(|i| if i % 3 != 0 { i as i64 } else { 0 })
                .collect();
            assert_eq!(&values[..rows], &want[..]);
            assert!(flags.validity.is_none());
            let ValuesRef::Boolean(values) = flags.values else {
                panic!("boolean")
            };
            let want: Vec<u8> = (offset..offset + rows)
                .map(|i| u8::from(i % 2 == 0))
                .collect();
            assert_eq!(values, &want[..]);
            let want: Vec<bool> = (offset..offset + rows).map(|i| i % 4 != 1).collect();
            assert_eq!(bits(texts.validity.unwrap(), rows), want, "at {offset}");
            let ValuesRef::String(s) = &texts.values else {
                panic!("string")
            };
            assert_eq!(s.offsets[0], 0);
            assert_eq!(*s.offsets.last().unwrap() as usize, s.data.len());
            for (row, i) in (offset..offset + rows).enumerate() {
                let text = &s.data[s.offsets[row] as usize..s.offsets[row + 1] as usize];
                let want = if i % 4 != 1 {
                    format!("é{i}")
                } else {
                    String::new()
                };
                assert_eq!(text, want.as_bytes(), "row {row} at {offset}");
            }
        }
    }
}
