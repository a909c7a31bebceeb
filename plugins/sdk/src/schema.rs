//! Schemas and typed field handles.

use std::marker::PhantomData;

use crate::kind::Kind;

/// The type of a field (mirrors the WIT `field-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// true or false.
    Boolean,
    /// signed 64-bit integer.
    Int64,
    /// IEEE 754 double.
    Float64,
    /// UTF-8 text.
    String,
    /// milliseconds since the Unix epoch, UTC.
    TimestampMs,
    /// days since the Unix epoch.
    Date,
}

impl FieldType {
    /// The name used in pipeline files and messages.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Boolean => "boolean",
            FieldType::Int64 => "int64",
            FieldType::Float64 => "float64",
            FieldType::String => "string",
            FieldType::TimestampMs => "timestamp",
            FieldType::Date => "date",
        }
    }
}

/// One field of a schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// field name.
    pub name: String,
    /// value type.
    pub ty: FieldType,
    /// whether nulls are allowed.
    pub nullable: bool,
}

impl Field {
    /// A field.
    pub fn new(name: impl Into<String>, ty: FieldType, nullable: bool) -> Self {
        Field {
            name: name.into(),
            ty,
            nullable,
        }
    }
}

/// An ordered list of fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schema {
    /// the fields, in column order.
    pub fields: Vec<Field>,
}

impl Schema {
    /// A schema from its fields.
    pub fn new(fields: Vec<Field>) -> Self {
        Schema { fields }
    }

    /// Position of the field called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// Resolve a typed handle to the field `name`, checking its type. Call
    /// this in `init`, keep the handle, and use it for every event.
    pub fn field<K: Kind>(&self, name: &str) -> Result<FieldRef<K>, String> {
        let index = self.index_of(name).ok_or_else(|| {
            format!(
                "the schema has no field `{name}` (expected {})",
                K::TYPE.name()
            )
        })?;
        let found = self.fields[index].ty;
        if found != K::TYPE {
            return Err(format!(
                "field `{name}` is {}, expected {}",
                found.name(),
                K::TYPE.name()
            ));
        }
        Ok(FieldRef {
            index,
            _kind: PhantomData,
        })
    }
}

/// A typed handle to one column, resolved once against a schema.
pub struct FieldRef<K> {
    index: usize,
    _kind: PhantomData<K>,
}

impl<K> FieldRef<K> {
    /// The column position.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl<K> Clone for FieldRef<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K> Copy for FieldRef<K> {}

impl<K> std::fmt::Debug for FieldRef<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FieldRef({})", self.index)
    }
}
