//! Columnar batches in Arrow's layout, with typed by-row access.

use crate::kind::Kind;
use crate::schema::FieldRef;

/// The values of one column.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnValues {
    /// one byte per row, 0 or 1.
    Boolean(Vec<u8>),
    /// 64-bit integers.
    Int64(Vec<i64>),
    /// doubles.
    Float64(Vec<f64>),
    /// UTF-8 data and `rows + 1` offsets into it.
    String {
        /// row i is `data[offsets[i]..offsets[i + 1]]`.
        offsets: Vec<i32>,
        /// concatenated UTF-8 bytes (validated when the batch is built).
        data: Vec<u8>,
    },
    /// milliseconds since the epoch, UTC.
    TimestampMs(Vec<i64>),
    /// days since the epoch.
    Date(Vec<i32>),
}

impl ColumnValues {
    /// Number of rows held.
    pub fn len(&self) -> usize {
        match self {
            ColumnValues::Boolean(v) => v.len(),
            ColumnValues::Int64(v) | ColumnValues::TimestampMs(v) => v.len(),
            ColumnValues::Float64(v) => v.len(),
            ColumnValues::String { offsets, .. } => offsets.len().saturating_sub(1),
            ColumnValues::Date(v) => v.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One column: validity bitmap (LSB first, `None` = no nulls) and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub(crate) validity: Option<Vec<u8>>,
    pub(crate) values: ColumnValues,
}

impl Column {
    /// Build a column, checking that buffers agree with `rows` and that
    /// string data is UTF-8 cut at character boundaries.
    pub fn new(
        validity: Option<Vec<u8>>,
        values: ColumnValues,
        rows: usize,
    ) -> Result<Self, String> {
        if values.len() != rows {
            return Err(format!(
                "column has {} values, batch has {rows} rows",
                values.len()
            ));
        }
        if let Some(bits) = &validity
            && bits.len() < rows.div_ceil(8)
        {
            return Err(format!(
                "validity bitmap of {} bytes is too short for {rows} rows",
                bits.len()
            ));
        }
        if let ColumnValues::String { offsets, data } = &values {
            // ASCII (the usual case) is UTF-8 with a character boundary at
            // every byte; checked as one reduction, which the compiler turns
            // into SIMD (the standard library's `from_utf8` comes precompiled
            // for Wasm without it)
            let ascii = is_ascii(data);
            if ascii && offsets_in_order(offsets, data.len()) {
                return Ok(Column { validity, values });
            }
            let text = if ascii {
                None
            } else {
                Some(
                    std::str::from_utf8(data)
                        .map_err(|e| format!("string column is not UTF-8: {e}"))?,
                )
            };
            let mut previous = 0;
            for &o in offsets {
                let o = usize::try_from(o).map_err(|_| "negative string offset".to_string())?;
                if o < previous || o > data.len() || text.is_some_and(|t| !t.is_char_boundary(o)) {
                    return Err(format!("bad string offset {o}"));
                }
                previous = o;
            }
        }
        Ok(Column { validity, values })
    }

    /// A column lowered by the host: lengths and string offsets are checked
    /// (in order, within the data: a pass over the offsets, so that a bad
    /// one is an error rather than a panic at its row), and the string data
    /// is trusted to be UTF-8 cut at character boundaries, which the WIT
    /// requires of the host. That is what wit-bindgen's own `string`
    /// lifting does in release builds; checking it here was a pass over
    /// every byte of every string column per batch, including the columns a
    /// plugin only passes through, and the largest cost a plugin paid as
    /// Wasm that it does not pay natively. Debug builds check it all, as
    /// [`Column::new`] does.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn from_host(
        validity: Option<Vec<u8>>,
        values: ColumnValues,
        rows: usize,
    ) -> Result<Self, String> {
        let shaped = values.len() == rows
            && validity
                .as_ref()
                .is_none_or(|bits| bits.len() >= rows.div_ceil(8))
            && match &values {
                ColumnValues::String { offsets, data } => offsets_in_order(offsets, data.len()),
                _ => true,
            };
        if cfg!(debug_assertions) || !shaped {
            // every check, with the message of the one that fails
            return Column::new(validity, values, rows);
        }
        Ok(Column { validity, values })
    }

    /// Whether row `row` holds a value.
    #[inline(always)]
    pub fn is_valid(&self, row: usize) -> bool {
        match &self.validity {
            None => true,
            Some(bits) => bits[row >> 3] & (1 << (row & 7)) != 0,
        }
    }

    /// The validity bitmap, if the column has one.
    pub fn validity(&self) -> Option<&[u8]> {
        self.validity.as_deref()
    }

    /// The values.
    pub fn values(&self) -> &ColumnValues {
        &self.values
    }

    /// Split into bitmap and values.
    pub fn into_parts(self) -> (Option<Vec<u8>>, ColumnValues) {
        (self.validity, self.values)
    }
}

/// Whether every byte is ASCII: one OR over all of them, without an early
/// exit, so that it vectorises.
fn is_ascii(data: &[u8]) -> bool {
    data.iter().fold(0u8, |acc, &b| acc | b) < 0x80
}

/// Whether `offsets` start at 0 or more, never decrease and end within
/// `len`: folds without an early exit, so that they vectorise (the checks
/// one offset at a time, with their messages, run when this fails).
fn offsets_in_order(offsets: &[i32], len: usize) -> bool {
    let ordered = offsets
        .windows(2)
        .fold(true, |ok, pair| ok & (pair[0] <= pair[1]));
    ordered
        && offsets.first().is_none_or(|&first| first >= 0)
        && offsets
            .last()
            .is_none_or(|&last| usize::try_from(last).is_ok_and(|last| last <= len))
}

/// A batch of events: one column per schema field, in schema order.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub(crate) num_rows: usize,
    pub(crate) columns: Vec<Column>,
}

impl Batch {
    /// A batch from checked columns.
    pub fn new(num_rows: usize, columns: Vec<Column>) -> Result<Self, String> {
        if let Some(c) = columns.iter().find(|c| c.values.len() != num_rows) {
            return Err(format!(
                "column of {} rows in a batch of {num_rows}",
                c.values.len()
            ));
        }
        Ok(Batch { num_rows, columns })
    }

    /// Number of events.
    pub fn num_rows(&self) -> usize {
        self.num_rows
    }

    /// The columns, in schema order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Take the columns out.
    pub fn into_columns(self) -> Vec<Column> {
        self.columns
    }

    /// The value of `field` in row `row`, `None` when null.
    #[inline(always)]
    pub fn get<K: Kind>(&self, field: FieldRef<K>, row: usize) -> Option<K::Value<'_>> {
        let column = &self.columns[field.index()];
        if column.is_valid(row) {
            Some(K::get(&column.values, row))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(offsets: &[i32], data: &[u8]) -> Result<Column, String> {
        let values = ColumnValues::String {
            offsets: offsets.to_vec(),
            data: data.to_vec(),
        };
        Column::new(None, values, offsets.len() - 1)
    }

    #[test]
    fn host_columns_are_checked_for_shape() {
        let strings = |offsets: &[i32], data: &[u8]| ColumnValues::String {
            offsets: offsets.to_vec(),
            data: data.to_vec(),
        };
        assert!(Column::from_host(None, strings(&[0, 1, 3], b"abc"), 2).is_ok());
        let accented = strings(&[0, 2, 3], "\u{e9}a".as_bytes());
        assert!(Column::from_host(Some(vec![0b11]), accented, 2).is_ok());
        let err = Column::from_host(None, strings(&[0, 2, 1], b"abc"), 2).unwrap_err();
        assert_eq!(err, "bad string offset 1");
        let err = Column::from_host(None, strings(&[0, 4], b"abc"), 1).unwrap_err();
        assert_eq!(err, "bad string offset 4");
        let err = Column::from_host(None, strings(&[0, 1], b"abc"), 2).unwrap_err();
        assert_eq!(err, "column has 1 values, batch has 2 rows");
        let err = Column::from_host(Some(vec![]), ColumnValues::Int64(vec![1]), 1).unwrap_err();
        assert_eq!(err, "validity bitmap of 0 bytes is too short for 1 rows");
    }

    #[test]
    fn string_columns_are_checked_ascii_or_not() {
        assert!(strings(&[0, 1, 3], b"abc").is_ok());
        assert!(strings(&[0, 2, 3], "éa".as_bytes()).is_ok());
        // an offset inside a character, with and without other non-ASCII text
        let err = strings(&[0, 1, 3], "éa".as_bytes()).unwrap_err();
        assert_eq!(err, "bad string offset 1");
        // not UTF-8
        let err = strings(&[0, 2], b"a\xff").unwrap_err();
        assert!(err.starts_with("string column is not UTF-8"), "{err}");
        // out of order, past the end, negative: ASCII data too
        assert_eq!(
            strings(&[0, 2, 1], b"abc").unwrap_err(),
            "bad string offset 1"
        );
        assert_eq!(strings(&[0, 4], b"abc").unwrap_err(), "bad string offset 4");
        assert_eq!(
            strings(&[0, -1], b"abc").unwrap_err(),
            "negative string offset"
        );
    }
}
