//! The glue behind [`crate::export_plugin!`]: converts between the generated
//! WIT types and the SDK's own (buffer moves, no copies) and keeps the
//! plugin instance between calls.

use std::any::Any;
use std::cell::RefCell;

use crate::bindings::weir::preprocess::types as wit;
use crate::{Batch, Column, ColumnValues, Config, Field, FieldType, Plugin, Schema, Verdict};

pub use crate::bindings::exports::weir::preprocess::plugin::Guest;
/// The WIT batch type.
pub type WitBatch = wit::Batch;
/// The WIT schema type.
pub type WitSchema = wit::Schema;
/// The WIT output type.
pub type WitOutput = wit::Output;

thread_local! {
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// `init` for plugin type `P`.
pub fn init<P: Plugin>(
    input: WitSchema,
    config: Vec<(String, String)>,
) -> Result<WitSchema, String> {
    install_panic_hook();
    let input = Schema::new(input.into_iter().map(field_from_wit).collect());
    let mut config = Config::new(config);
    let (plugin, output) = P::init(&input, &mut config)?;
    config.check_all_read()?;
    INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
    Ok(output.fields.into_iter().map(field_to_wit).collect())
}

/// `process` for plugin type `P`.
pub fn process<P: Plugin>(input: WitBatch) -> Result<WitOutput, String> {
    let rows = input.num_rows as usize;
    let columns = input
        .columns
        .into_iter()
        .map(|c| Column::from_host(c.validity, values_from_wit(c.values), rows))
        .collect::<Result<Vec<_>, _>>()?;
    let batch = Batch::new(rows, columns)?;
    INSTANCE.with(|slot| {
        let mut slot = slot.borrow_mut();
        let plugin = slot.as_mut().ok_or("process called before init")?;
        let plugin = plugin
            .downcast_mut::<P>()
            .ok_or("plugin instance of the wrong type")?;
        let out = plugin.process(batch)?;
        Ok(wit::Output {
            batch: wit::Batch {
                num_rows: out.batch.num_rows() as u32,
                columns: out
                    .batch
                    .into_columns()
                    .into_iter()
                    .map(|c| {
                        let (validity, values) = c.into_parts();
                        wit::Column {
                            validity,
                            values: values_to_wit(values),
                        }
                    })
                    .collect(),
            },
            exclusions: out
                .exclusions
                .into_iter()
                .map(|e| wit::Exclusion {
                    row: e.row,
                    verdict: match e.verdict {
                        Verdict::Drop => wit::Verdict::Drop,
                        Verdict::Reject => wit::Verdict::Reject,
                    },
                    reason: e.reason,
                })
                .collect(),
            reasons: out.reasons,
        })
    })
}

/// Send a panic's message through `logging` (the host attaches the
/// plugin's last log line to the trap it reports) instead of stderr.
fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            crate::log::error(&info.to_string());
        }));
    });
}

fn field_from_wit(f: wit::Field) -> Field {
    let ty = match f.type_ {
        wit::FieldType::Boolean => FieldType::Boolean,
        wit::FieldType::Int64 => FieldType::Int64,
        wit::FieldType::Float64 => FieldType::Float64,
        wit::FieldType::String => FieldType::String,
        wit::FieldType::TimestampMs => FieldType::TimestampMs,
        wit::FieldType::Date => FieldType::Date,
    };
    Field {
        name: f.name,
        ty,
        nullable: f.nullable,
    }
}

fn field_to_wit(f: Field) -> wit::Field {
    let type_ = match f.ty {
        FieldType::Boolean => wit::FieldType::Boolean,
        FieldType::Int64 => wit::FieldType::Int64,
        FieldType::Float64 => wit::FieldType::Float64,
        FieldType::String => wit::FieldType::String,
        FieldType::TimestampMs => wit::FieldType::TimestampMs,
        FieldType::Date => wit::FieldType::Date,
    };
    wit::Field {
        name: f.name,
        type_,
        nullable: f.nullable,
    }
}

fn values_from_wit(v: wit::ColumnValues) -> ColumnValues {
    match v {
        wit::ColumnValues::Boolean(v) => ColumnValues::Boolean(v),
        wit::ColumnValues::Int64(v) => ColumnValues::Int64(v),
        wit::ColumnValues::Float64(v) => ColumnValues::Float64(v),
        wit::ColumnValues::String(s) => ColumnValues::String {
            offsets: s.offsets,
            data: s.data,
        },
        wit::ColumnValues::TimestampMs(v) => ColumnValues::TimestampMs(v),
        wit::ColumnValues::Date(v) => ColumnValues::Date(v),
    }
}

fn values_to_wit(v: ColumnValues) -> wit::ColumnValues {
    match v {
        ColumnValues::Boolean(v) => wit::ColumnValues::Boolean(v),
        ColumnValues::Int64(v) => wit::ColumnValues::Int64(v),
        ColumnValues::Float64(v) => wit::ColumnValues::Float64(v),
        ColumnValues::String { offsets, data } => {
            wit::ColumnValues::String(wit::StringColumn { offsets, data })
        }
        ColumnValues::TimestampMs(v) => wit::ColumnValues::TimestampMs(v),
        ColumnValues::Date(v) => wit::ColumnValues::Date(v),
    }
}
