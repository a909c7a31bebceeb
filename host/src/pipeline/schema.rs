//! The declared event schema: field names, types and nullability, as written
//! in a pipeline file (`[[schema.fields]]`) and as negotiated with a plugin.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// The type of a field, as named in pipeline files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// true or false.
    Boolean,
    /// signed 64-bit integer.
    Int64,
    /// IEEE 754 double.
    Float64,
    /// UTF-8 text.
    String,
    /// milliseconds since the epoch, UTC; JSON: RFC 3339 with offset, or epoch ms.
    /// (The WIT contract calls it `timestamp-ms`; both names are accepted.)
    #[serde(alias = "timestamp-ms", alias = "timestamp_ms")]
    Timestamp,
    /// calendar date; JSON: `YYYY-MM-DD` or days since the epoch.
    Date,
}

impl FieldType {
    /// The Arrow type a column of this field has.
    pub fn arrow_type(self) -> DataType {
        match self {
            FieldType::Boolean => DataType::Boolean,
            FieldType::Int64 => DataType::Int64,
            FieldType::Float64 => DataType::Float64,
            FieldType::String => DataType::Utf8,
            FieldType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            FieldType::Date => DataType::Date32,
        }
    }

    /// The field type of an Arrow type, if weir supports it.
    pub fn from_arrow(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Boolean => FieldType::Boolean,
            DataType::Int64 => FieldType::Int64,
            DataType::Float64 => FieldType::Float64,
            DataType::Utf8 => FieldType::String,
            DataType::Timestamp(TimeUnit::Millisecond, _) => FieldType::Timestamp,
            DataType::Date32 => FieldType::Date,
            _ => return None,
        })
    }

    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Boolean => "boolean",
            FieldType::Int64 => "int64",
            FieldType::Float64 => "float64",
            FieldType::String => "string",
            FieldType::Timestamp => "timestamp",
            FieldType::Date => "date",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One declared field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// field name (the JSON key).
    pub name: String,
    /// value type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// whether the field may be null or missing (default: true).
    #[serde(default = "default_nullable")]
    pub nullable: bool,
}

fn default_nullable() -> bool {
    true
}

impl FieldSpec {
    /// A field.
    pub fn new(name: &str, ty: FieldType, nullable: bool) -> Self {
        FieldSpec {
            name: name.to_string(),
            ty,
            nullable,
        }
    }
}

/// A schema that is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Two fields share a name.
    #[error("field `{0}` is declared twice")]
    Duplicate(String),
    /// No fields at all.
    #[error("the schema declares no fields")]
    Empty,
    /// An Arrow schema with a type weir does not support.
    #[error("field `{name}` has type {found}, which weir does not support")]
    Unsupported {
        /// the field.
        name: String,
        /// its Arrow type.
        found: String,
    },
}

/// An ordered list of declared fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredSchema {
    fields: Arc<[FieldSpec]>,
    arrow: SchemaRef,
}

impl DeclaredSchema {
    /// Check and build a schema.
    pub fn new(fields: Vec<FieldSpec>) -> Result<Self, SchemaError> {
        if fields.is_empty() {
            return Err(SchemaError::Empty);
        }
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].iter().any(|g| g.name == f.name) {
                return Err(SchemaError::Duplicate(f.name.clone()));
            }
        }
        let arrow = Arc::new(Schema::new(
            fields
                .iter()
                .map(|f| Field::new(&f.name, f.ty.arrow_type(), f.nullable))
                .collect::<Vec<_>>(),
        ));
        Ok(DeclaredSchema {
            fields: fields.into(),
            arrow,
        })
    }

    /// The schema of an Arrow schema (e.g. a Parquet file read back).
    pub fn from_arrow(schema: &Schema) -> Result<Self, SchemaError> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| {
                let ty = FieldType::from_arrow(f.data_type()).ok_or_else(|| {
                    SchemaError::Unsupported {
                        name: f.name().clone(),
                        found: f.data_type().to_string(),
                    }
                })?;
                Ok(FieldSpec::new(f.name(), ty, f.is_nullable()))
            })
            .collect::<Result<Vec<_>, SchemaError>>()?;
        Self::new(fields)
    }

    /// The fields, in column order.
    pub fn fields(&self) -> &[FieldSpec] {
        &self.fields
    }

    /// The matching Arrow schema.
    pub fn arrow(&self) -> &SchemaRef {
        &self.arrow
    }

    /// The web-vitals input schema (the reference plugin's input).
    pub fn web_vitals() -> Self {
        use FieldType::*;
        Self::new(vec![
            FieldSpec::new("event_id", String, false),
            FieldSpec::new("timestamp", Timestamp, false),
            FieldSpec::new("page_url", String, false),
            FieldSpec::new("tti_ms", Float64, true),
            FieldSpec::new("ttar_ms", Float64, true),
            FieldSpec::new("session_id", String, true),
            FieldSpec::new("user_agent", String, true),
            FieldSpec::new("country", String, true),
        ])
        .expect("the web-vitals schema is valid")
    }
}

impl fmt::Display for DeclaredSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "{}: {}{}",
                field.name,
                field.ty,
                if field.nullable { "?" } else { "" }
            )?;
        }
        Ok(())
    }
}
