//! Marker types that tie a Rust value type to a WIT field type.

use crate::batch::ColumnValues;
use crate::schema::FieldType;

/// A field type with its Rust value type. Implemented by the markers
/// [`Bool`], [`I64`], [`F64`], [`Str`], [`TimestampMs`] and [`Date`].
pub trait Kind: 'static {
    /// The field type this marker stands for.
    const TYPE: FieldType;
    /// The value read from a batch (`&str` borrows the batch's buffer).
    type Value<'a>: Copy;
    /// Read row `row`; the column must be of this kind (checked when the
    /// [`crate::FieldRef`] was resolved).
    fn get(values: &ColumnValues, row: usize) -> Self::Value<'_>;
    /// Append a value (the default value for a null).
    fn push(values: &mut ColumnValues, value: Option<Self::Value<'_>>);
}

macro_rules! primitive_kind {
    ($(#[$doc:meta])* $marker:ident, $ty:ty, $variant:ident, $field:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $marker;
        impl Kind for $marker {
            const TYPE: FieldType = FieldType::$field;
            type Value<'a> = $ty;
            #[inline(always)]
            fn get(values: &ColumnValues, row: usize) -> $ty {
                match values {
                    ColumnValues::$variant(v) => v[row],
                    other => wrong_kind(FieldType::$field, other),
                }
            }
            #[inline(always)]
            fn push(values: &mut ColumnValues, value: Option<$ty>) {
                match values {
                    ColumnValues::$variant(v) => v.push(value.unwrap_or_default()),
                    other => wrong_kind(FieldType::$field, other),
                }
            }
        }
    };
}

primitive_kind!(
    /// `int64` fields.
    I64, i64, Int64, Int64
);
primitive_kind!(
    /// `float64` fields.
    F64, f64, Float64, Float64
);
primitive_kind!(
    /// `timestamp` fields, milliseconds since the epoch, UTC.
    TimestampMs, i64, TimestampMs, TimestampMs
);
primitive_kind!(
    /// `date` fields, days since the epoch.
    Date, i32, Date, Date
);

/// `boolean` fields.
#[derive(Clone, Copy, Debug)]
pub struct Bool;
impl Kind for Bool {
    const TYPE: FieldType = FieldType::Boolean;
    type Value<'a> = bool;
    #[inline]
    fn get(values: &ColumnValues, row: usize) -> bool {
        match values {
            ColumnValues::Boolean(v) => v[row] != 0,
            other => wrong_kind(FieldType::Boolean, other),
        }
    }
    #[inline]
    fn push(values: &mut ColumnValues, value: Option<bool>) {
        match values {
            ColumnValues::Boolean(v) => v.push(u8::from(value.unwrap_or(false))),
            other => wrong_kind(FieldType::Boolean, other),
        }
    }
}

/// `string` fields, read as `&str` borrowed from the batch.
#[derive(Clone, Copy, Debug)]
pub struct Str;
impl Kind for Str {
    const TYPE: FieldType = FieldType::String;
    type Value<'a> = &'a str;
    #[inline(always)]
    fn get(values: &ColumnValues, row: usize) -> &str {
        match values {
            ColumnValues::String { offsets, data } => {
                let bytes = &data[offsets[row] as usize..offsets[row + 1] as usize];
                // SAFETY: `Column::new` and the builders only admit UTF-8 data
                // with offsets on character boundaries, `Column::from_host`
                // admits what the host lowers, which the WIT requires to be
                // so, and the fields are private to the crate.
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
            other => wrong_kind(FieldType::String, other),
        }
    }
    #[inline(always)]
    fn push(values: &mut ColumnValues, value: Option<&str>) {
        match values {
            ColumnValues::String { offsets, data } => {
                crate::copy::extend(data, value.unwrap_or("").as_bytes());
                offsets.push(data.len() as i32);
            }
            other => wrong_kind(FieldType::String, other),
        }
    }
}

#[cold]
fn wrong_kind(expected: FieldType, found: &ColumnValues) -> ! {
    panic!("column holds {found:?}, expected {}", expected.name())
}

/// An empty values buffer of the given type, with room for `capacity` rows.
pub(crate) fn empty_values(ty: FieldType, capacity: usize) -> ColumnValues {
    match ty {
        FieldType::Boolean => ColumnValues::Boolean(Vec::with_capacity(capacity)),
        FieldType::Int64 => ColumnValues::Int64(Vec::with_capacity(capacity)),
        FieldType::Float64 => ColumnValues::Float64(Vec::with_capacity(capacity)),
        FieldType::String => {
            let mut offsets = Vec::with_capacity(capacity + 1);
            offsets.push(0);
            ColumnValues::String {
                offsets,
                data: Vec::with_capacity(capacity * 16),
            }
        }
        FieldType::TimestampMs => ColumnValues::TimestampMs(Vec::with_capacity(capacity)),
        FieldType::Date => ColumnValues::Date(Vec::with_capacity(capacity)),
    }
}
