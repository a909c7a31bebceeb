//! JSON events → Arrow record batches, by the declared schema.
//!
//! One object per message (or per line). Each message is parsed once,
//! straight into the column builders: known keys are typed on the spot,
//! unknown keys are skipped without allocation. The parser is sonic-rs
//! (SIMD), or serde_json ([`JsonParser`]): both drive the same visitor, so
//! a message gives the same row or the same refusal reason with either;
//! `weir bench ingest --source FILE` times both on the same input. A message that is not JSON,
//! not an object, misses a required field or has a value of the wrong type
//! is refused with a [`DecodeError`] naming the field, and leaves the
//! batch untouched.
//!
//! Timestamps are RFC 3339 strings with `Z` or an offset, or integer epoch
//! milliseconds; a string without an offset is refused as ambiguous. Dates
//! are `YYYY-MM-DD` strings or integer days since the epoch.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use smallvec::SmallVec;

use crate::pipeline::{DeclaredSchema, FieldType};

/// Why one message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not parseable as JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// A non-nullable field is absent or null.
    #[error("missing required field `{0}`")]
    MissingField(String),
    /// A value does not fit the declared type.
    #[error("field `{field}`: expected {expected}, found {found}")]
    WrongType {
        /// the field.
        field: String,
        /// the declared type.
        expected: FieldType,
        /// what the message holds.
        found: String,
    },
    /// A timestamp string without `Z` or an offset.
    #[error("field `{field}`: timestamp `{value}` has no UTC offset (ambiguous)")]
    AmbiguousTimestamp {
        /// the field.
        field: String,
        /// the value.
        value: String,
    },
}

impl DecodeError {
    /// The reason recorded with the dead letter and counted in summaries:
    /// stable per field and kind (no positions or values).
    pub fn reason(&self) -> String {
        match self {
            DecodeError::InvalidJson(_) => "invalid JSON".into(),
            DecodeError::NotAnObject => "not a JSON object".into(),
            DecodeError::MissingField(f) => format!("missing required field `{f}`"),
            DecodeError::WrongType {
                field, expected, ..
            } => format!("field `{field}`: not a {expected}"),
            DecodeError::AmbiguousTimestamp { field, .. } => {
                format!("field `{field}`: timestamp without UTC offset")
            }
        }
    }

    /// A short, stable name for metrics and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::InvalidJson(_) => "invalid json",
            DecodeError::NotAnObject => "not an object",
            DecodeError::MissingField(_) => "missing field",
            DecodeError::WrongType { .. } => "wrong type",
            DecodeError::AmbiguousTimestamp { .. } => "ambiguous timestamp",
        }
    }
}

/// One parsed value, before it is checked against the declared type.
#[derive(Debug)]
enum Slot<'de> {
    Missing,
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'de, str>),
    Other(&'static str),
}

impl Slot<'_> {
    fn describe(&self) -> String {
        match self {
            Slot::Missing => "nothing".into(),
            Slot::Null => "null".into(),
            Slot::Bool(_) => "a boolean".into(),
            Slot::Int(i) => format!("the integer {i}"),
            Slot::Float(f) => format!("the number {f}"),
            Slot::Str(s) => format!("the string {:?}", truncate(s, 40)),
            Slot::Other(what) => (*what).into(),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    String(StringBuilder),
    Timestamp(TimestampMillisecondBuilder),
    Date(Date32Builder),
}

/// A typed, validated value ready to append.
enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Date(i32),
}

/// The JSON parser under a [`JsonDecoder`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JsonParser {
    /// sonic-rs: SIMD scanning; the faster on web-vitals events.
    #[default]
    Sonic,
    /// serde_json.
    SerdeJson,
}

/// Fields parsed from one message, on the stack for up to this many.
const INLINE_FIELDS: usize = 16;

/// Decodes JSON messages into record batches of the declared schema.
pub struct JsonDecoder {
    schema: DeclaredSchema,
    builders: Vec<ColumnBuilder>,
    rows: usize,
    capacity: usize,
    parser: JsonParser,
}

impl fmt::Debug for JsonDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonDecoder")
            .field("schema", &self.schema)
            .field("rows", &self.rows)
            .finish()
    }
}

impl JsonDecoder {
    /// A decoder for `schema`, sized for batches of about `capacity` rows.
    pub fn new(schema: &DeclaredSchema, capacity: usize) -> Self {
        Self::with_parser(schema, capacity, JsonParser::default())
    }

    /// A decoder parsing with `parser`.
    pub fn with_parser(schema: &DeclaredSchema, capacity: usize, parser: JsonParser) -> Self {
        let mut decoder = JsonDecoder {
            schema: schema.clone(),
            builders: Vec::new(),
            rows: 0,
            capacity,
            parser,
        };
        decoder.builders = decoder.fresh_builders();
        decoder
    }

    fn fresh_builders(&self) -> Vec<ColumnBuilder> {
        let n = self.capacity;
        self.schema
            .fields()
            .iter()
            .map(|f| match f.ty {
                FieldType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(n)),
                FieldType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(n)),
                FieldType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(n)),
                FieldType::String => ColumnBuilder::String(StringBuilder::with_capacity(n, n * 32)),
                FieldType::Timestamp => ColumnBuilder::Timestamp(
                    TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC"),
                ),
                FieldType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(n)),
            })
            .collect()
    }

    /// The schema rows are decoded into.
    pub fn schema(&self) -> &DeclaredSchema {
        &self.schema
    }

    /// Rows decoded since the last [`JsonDecoder::flush`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no rows are pending.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Decode one message and append it, or refuse it (nothing appended).
    pub fn push(&mut self, message: &[u8]) -> Result<(), DecodeError> {
        let fields = self.schema.fields();
        let mut slots: SmallVec<[Slot<'_>; INLINE_FIELDS]> =
            (0..fields.len()).map(|_| Slot::Missing).collect();
        let seed = RowSeed {
            schema: &self.schema,
            slots: &mut slots,
        };
        match self.parser {
            JsonParser::Sonic => {
                let mut de = sonic_rs::Deserializer::from_slice(message);
                seed.deserialize(&mut de)
                    .and_then(|()| de.end())
                    .map_err(|e| match e.classify() {
                        sonic_rs::error::Category::TypeUnmatched => DecodeError::NotAnObject,
                        _ => DecodeError::InvalidJson(e.to_string()),
                    })?
            }
            JsonParser::SerdeJson => {
                let mut de = serde_json::Deserializer::from_slice(message);
                seed.deserialize(&mut de)
                    .and_then(|()| de.end())
                    .map_err(|e| match e.classify() {
                        serde_json::error::Category::Data => DecodeError::NotAnObject,
                        _ => DecodeError::InvalidJson(e.to_string()),
                    })?
            }
        }
        // check every field first, so a refused message leaves the builders untouched
        for (field, slot) in fields.iter().zip(&slots) {
            let value =
                typed(field.ty, slot).map_err(|e| e.for_field(&field.name, field.ty, slot))?;
            if matches!(value, Value::Null) && !field.nullable {
                return Err(DecodeError::MissingField(field.name.clone()));
            }
        }
        for ((builder, field), slot) in self.builders.iter_mut().zip(fields.iter()).zip(&slots) {
            append(builder, typed(field.ty, slot).unwrap_or(Value::Null));
        }
        self.rows += 1;
        Ok(())
    }

    /// Take the rows decoded so far as a record batch.
    pub fn flush(&mut self) -> RecordBatch {
        let fresh = self.fresh_builders();
        let builders = std::mem::replace(&mut self.builders, fresh);
        let columns: Vec<ArrayRef> = builders
            .into_iter()
            .map(|b| -> ArrayRef {
                match b {
                    ColumnBuilder::Boolean(mut b) => Arc::new(b.finish()),
                    ColumnBuilder::Int64(mut b) => Arc::new(b.finish()),
                    ColumnBuilder::Float64(mut b) => Arc::new(b.finish()),
                    ColumnBuilder::String(mut b) => Arc::new(b.finish()),
                    ColumnBuilder::Timestamp(mut b) => Arc::new(b.finish()),
                    ColumnBuilder::Date(mut b) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.arrow().clone(), columns)
            .expect("builders follow the declared schema")
    }
}

enum TypeProblem {
    Wrong,
    NoOffset,
}

impl TypeProblem {
    fn for_field(self, field: &str, expected: FieldType, slot: &Slot<'_>) -> DecodeError {
        match (self, slot) {
            (TypeProblem::NoOffset, Slot::Str(s)) => DecodeError::AmbiguousTimestamp {
                field: field.to_string(),
                value: truncate(s, 64).to_string(),
            },
            _ => DecodeError::WrongType {
                field: field.to_string(),
                expected,
                found: slot.describe(),
            },
        }
    }
}

fn typed<'a>(ty: FieldType, slot: &'a Slot<'_>) -> Result<Value<'a>, TypeProblem> {
    Ok(match (ty, slot) {
        (_, Slot::Missing | Slot::Null) => Value::Null,
        (FieldType::Boolean, Slot::Bool(b)) => Value::Bool(*b),
        (FieldType::Int64, Slot::Int(i)) => Value::Int(*i),
        (FieldType::Float64, Slot::Int(i)) => Value::Float(*i as f64),
        (FieldType::Float64, Slot::Float(f)) => Value::Float(*f),
        (FieldType::String, Slot::Str(s)) => Value::Str(s),
        (FieldType::Timestamp, Slot::Int(ms)) => Value::Int(*ms),
        (FieldType::Timestamp, Slot::Str(s)) => Value::Int(parse_timestamp(s)?),
        (FieldType::Date, Slot::Int(days)) => {
            Value::Date(i32::try_from(*days).map_err(|_| TypeProblem::Wrong)?)
        }
        (FieldType::Date, Slot::Str(s)) => Value::Date(parse_date(s).ok_or(TypeProblem::Wrong)?),
        _ => return Err(TypeProblem::Wrong),
    })
}

/// Milliseconds since the epoch of an RFC 3339 timestamp with an offset.
fn parse_timestamp(s: &str) -> Result<i64, TypeProblem> {
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => Ok(t.timestamp_millis()),
        Err(_)
            if chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
                || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").is_ok() =>
        {
            Err(TypeProblem::NoOffset)
        }
        Err(_) => Err(TypeProblem::Wrong),
    }
}

fn parse_date(s: &str) -> Option<i32> {
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from(date.signed_duration_since(epoch).num_days()).ok()
}

fn append(builder: &mut ColumnBuilder, value: Value<'_>) {
    match (builder, value) {
        (ColumnBuilder::Boolean(b), Value::Bool(v)) => b.append_value(v),
        (ColumnBuilder::Boolean(b), _) => b.append_null(),
        (ColumnBuilder::Int64(b), Value::Int(v)) => b.append_value(v),
        (ColumnBuilder::Int64(b), _) => b.append_null(),
        (ColumnBuilder::Float64(b), Value::Float(v)) => b.append_value(v),
        (ColumnBuilder::Float64(b), _) => b.append_null(),
        (ColumnBuilder::String(b), Value::Str(v)) => b.append_value(v),
        (ColumnBuilder::String(b), _) => b.append_null(),
        (ColumnBuilder::Timestamp(b), Value::Int(v)) => b.append_value(v),
        (ColumnBuilder::Timestamp(b), _) => b.append_null(),
        (ColumnBuilder::Date(b), Value::Date(v)) => b.append_value(v),
        (ColumnBuilder::Date(b), _) => b.append_null(),
    }
}

/// Parses one object into per-field slots.
struct RowSeed<'s, 'de> {
    schema: &'s DeclaredSchema,
    slots: &'s mut SmallVec<[Slot<'de>; INLINE_FIELDS]>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let fields = self.schema.fields();
        // keys usually come in the declared order: try the next field first
        let mut guess = 0;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let found = match fields.get(guess) {
                Some(f) if f.name == key => Some(guess),
                _ => fields.iter().position(|f| f.name == key),
            };
            match found {
                Some(i) => {
                    guess = i + 1;
                    self.slots[i] = map.next_value_seed(SlotSeed)?
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct SlotSeed;

impl<'de> DeserializeSeed<'de> for SlotSeed {
    type Value = Slot<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Slot<'de>, D::Error> {
        deserializer.deserialize_any(SlotVisitor)
    }
}

struct SlotVisitor;

impl<'de> Visitor<'de> for SlotVisitor {
    type Value = Slot<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Slot<'de>, E> {
        Ok(Slot::Null)
    }
    fn visit_none<E>(self) -> Result<Slot<'de>, E> {
        Ok(Slot::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Slot<'de>, E> {
        Ok(Slot::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Slot<'de>, E> {
        Ok(Slot::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Slot<'de>, E> {
        Ok(i64::try_from(v).map_or(Slot::Float(v as f64), Slot::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Slot<'de>, E> {
        Ok(Slot::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Slot<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Slot::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Slot::Other("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, TimestampMillisecondType};

    const PARSERS: [JsonParser; 2] = [JsonParser::Sonic, JsonParser::SerdeJson];

    fn decoders() -> impl Iterator<Item = JsonDecoder> {
        PARSERS
            .into_iter()
            .map(|p| JsonDecoder::with_parser(&DeclaredSchema::web_vitals(), 16, p))
    }

    const OK: &str = r#"{"event_id":"a","timestamp":"2026-11-24T10:00:00+01:00","page_url":"https://x.org/","tti_ms":12,"extra":{"deep":[1,2]}}"#;

    #[test]
    fn decodes_with_offsets_and_ignores_unknown_fields() {
        for mut d in decoders() {
            d.push(OK.as_bytes()).unwrap();
            d.push(br#"{"event_id":"b","timestamp":1764000000000,"page_url":"u","ttar_ms":1.5,"country":null}"#).unwrap();
            let batch = d.flush();
            assert_eq!(batch.num_rows(), 2);
            let ts = batch.column(1).as_primitive::<TimestampMillisecondType>();
            assert_eq!(ts.value(0), 1_795_510_800_000);
            assert_eq!(ts.value(1), 1_764_000_000_000);
            let tti = batch.column(3).as_primitive::<Float64Type>();
            assert_eq!(tti.value(0), 12.0);
            assert!(tti.is_null(1));
            assert!(batch.column(7).is_null(1));
        }
    }

    #[test]
    fn refuses_bad_messages_with_the_reason() {
        for mut d in decoders() {
            let cases: [(&str, &str); 7] = [
                ("{\"event_id\":", "invalid json"),
                ("[1,2]", "not an object"),
                ("\"text\"", "not an object"),
                (r#"{"event_id":"a","timestamp":1}"#, "missing field"),
                (
                    r#"{"event_id":"a","timestamp":1,"page_url":"u","tti_ms":"fast"}"#,
                    "wrong type",
                ),
                (
                    r#"{"event_id":"a","timestamp":"2026-11-24T10:00:00","page_url":"u"}"#,
                    "ambiguous timestamp",
                ),
                (
                    r#"{"event_id":"a","timestamp":1.5,"page_url":"u"}"#,
                    "wrong type",
                ),
            ];
            for (message, kind) in cases {
                let err = d.push(message.as_bytes()).unwrap_err();
                assert_eq!(err.kind(), kind, "{message}: {err}");
            }
            assert_eq!(d.len(), 0);
            let err = d
                .push(br#"{"event_id":"a","timestamp":1,"page_url":null}"#)
                .unwrap_err();
            assert_eq!(err, DecodeError::MissingField("page_url".into()));
        }
    }

    #[test]
    fn escaped_strings_and_dates() {
        let schema = DeclaredSchema::new(vec![
            crate::pipeline::FieldSpec::new("s", FieldType::String, false),
            crate::pipeline::FieldSpec::new("d", FieldType::Date, true),
        ])
        .unwrap();
        for parser in PARSERS {
            let mut d = JsonDecoder::with_parser(&schema, 4, parser);
            d.push(br#"{"s":"a\"b\u00e9","d":"2026-11-24"}"#).unwrap();
            d.push(br#"{"s":"x","d":3}"#).unwrap();
            let batch = d.flush();
            assert_eq!(batch.column(0).as_string::<i32>().value(0), "a\"b\u{e9}");
            let dates = batch
                .column(1)
                .as_primitive::<arrow::datatypes::Date32Type>();
            assert_eq!(dates.value(0), 20_781);
            assert_eq!(dates.value(1), 3);
        }
    }

    #[test]
    fn both_parsers_give_the_same_rows_and_the_same_refusals() {
        let messages: [&[u8]; 12] = [
            OK.as_bytes(),
            b" {\"event_id\":\"a\",\"timestamp\":1,\"page_url\":\"u\"} \r",
            b"{\"event_id\":\"a\",\"timestamp\":1,\"page_url\":\"u\"} x",
            b"{\"event_id\":\"\xff\",\"timestamp\":1,\"page_url\":\"u\"}",
            b"{\"event_id\":\"a\",\"timestamp\":1,\"page_url\":\"u\",\"tti_ms\":0.1e-2}",
            b"{\"event_id\":\"a\",\"timestamp\":1,\"page_url\":\"u\",\"tti_ms\":18446744073709551615}",
            b"{\"event_id\":\"a\",\"timestamp\":9223372036854775808,\"page_url\":\"u\"}",
            b"{\"event_id\":\"a\",\"event_id\":\"b\",\"timestamp\":1,\"page_url\":\"u\"}",
            b"{\"event_id\":\"a\\ud83d\\ude00\",\"timestamp\":1,\"page_url\":\"u\",\"x\":[{\"y\":null}]}",
            b"{\"event_id\":\"a\",\"timestamp\":1,\"page_url\":\"u\",}",
            b"",
            b"null",
        ];
        let outcome = |parser: JsonParser| {
            let mut d = JsonDecoder::with_parser(&DeclaredSchema::web_vitals(), 16, parser);
            let reasons: Vec<Option<String>> = messages
                .iter()
                .map(|m| d.push(m).err().map(|e| e.reason()))
                .collect();
            (reasons, d.flush())
        };
        let (sonic, sonic_rows) = outcome(JsonParser::Sonic);
        let (serde, serde_rows) = outcome(JsonParser::SerdeJson);
        assert_eq!(sonic, serde);
        assert_eq!(sonic_rows, serde_rows);
        assert!(sonic_rows.num_rows() >= 5, "{sonic:?}");
    }
}
