//! Column-wise answers: the input's columns pass through, the plugin sets
//! only the columns it computes.
//!
//! [`OutputBuilder`](crate::OutputBuilder) asks for one value per output
//! column per kept row. A plugin that adds a column or two to events it
//! otherwise keeps as they are would re-push every value of every column.
//! [`Columns`] is planned once, in `init`: for each output column, the input
//! column it passes through (same name and type) or nothing (computed). Per
//! batch, [`Columns::output`] gives a [`ColumnarOutput`]: exclude rows, push
//! values for the computed columns only, and `finish` moves the pass-through
//! columns into the answer (no copy when every row is kept; a copy of the
//! kept ranges otherwise).

use crate::batch::{Batch, Column, ColumnValues};
use crate::kind::Kind;
use crate::output::{ColumnBuilder, Output, Verdict, Verdicts};
use crate::schema::{FieldRef, Schema};

/// Which output columns pass through from which input column; planned once.
#[derive(Clone, Debug, PartialEq)]
pub struct Columns {
    output: Schema,
    /// per output column: the input column it passes through, if any.
    sources: Vec<Option<usize>>,
}

impl Columns {
    /// Plan `output` against `input`: every output column whose name is an
    /// input column of the same type passes through; the others are
    /// computed. An input column that is nullable does not pass through to
    /// a non-nullable output column: that one is computed too (see
    /// [`Columns::passes_through`]), so a null never reaches the output.
    pub fn plan(input: &Schema, output: &Schema) -> Result<Self, String> {
        let mut sources = Vec::with_capacity(output.fields.len());
        for field in &output.fields {
            let source = match input.index_of(&field.name) {
                Some(i)
                    if input.fields[i].ty == field.ty
                        && (field.nullable || !input.fields[i].nullable) =>
                {
                    Some(i)
                }
                _ => None,
            };
            sources.push(source);
        }
        Ok(Columns {
            output: output.clone(),
            sources,
        })
    }

    /// Make output column `name` computed even though an input column of
    /// the same name and type could pass through (the plugin changes it).
    pub fn computed(mut self, name: &str) -> Result<Self, String> {
        let index = self
            .output
            .index_of(name)
            .ok_or_else(|| format!("no output field `{name}`"))?;
        self.sources[index] = None;
        Ok(self)
    }

    /// The output schema.
    pub fn schema(&self) -> &Schema {
        &self.output
    }

    /// Whether output column `index` passes through.
    pub fn passes_through(&self, index: usize) -> bool {
        self.sources.get(index).is_some_and(Option::is_some)
    }

    /// Whether the output column of `field` passes through (the plugin
    /// pushes no values to it).
    pub fn passes<K: Kind>(&self, field: FieldRef<K>) -> bool {
        self.passes_through(field.index())
    }

    /// Start the answer to `batch`.
    pub fn output(&self, batch: Batch) -> ColumnarOutput<'_> {
        let rows = batch.num_rows();
        let computed = self
            .output
            .fields
            .iter()
            .zip(&self.sources)
            .map(|(f, source)| source.is_none().then(|| ColumnBuilder::new(f.ty, rows)))
            .collect();
        ColumnarOutput {
            plan: self,
            batch,
            answer: Answer {
                computed,
                verdicts: Verdicts::default(),
                pushed_to_pass_through: false,
            },
        }
    }
}

/// The answer to one batch, built column-wise (see [`Columns`]).
#[derive(Debug)]
pub struct ColumnarOutput<'a> {
    plan: &'a Columns,
    batch: Batch,
    answer: Answer,
}

/// The computed columns and the exclusions of a [`ColumnarOutput`]. Borrowed
/// apart from the input with [`ColumnarOutput::split`], so a value read from
/// the input can be pushed as it is, without a copy first.
#[derive(Debug)]
pub struct Answer {
    computed: Vec<Option<ColumnBuilder>>,
    verdicts: Verdicts,
    /// a value was pushed to a column that passes through: `finish` fails.
    pushed_to_pass_through: bool,
}

impl Answer {
    /// Append the value of a computed column for the next kept row.
    /// Pushing to a pass-through column is an error reported by `finish`.
    #[inline(always)]
    pub fn push<K: Kind>(&mut self, field: FieldRef<K>, value: Option<K::Value<'_>>) {
        match self.computed.get_mut(field.index()) {
            Some(Some(c)) => c.push::<K>(value),
            _ => self.pushed_to_pass_through = true,
        }
    }

    /// Drop input row `row` with `reason` (e.g. `bot`).
    pub fn drop_row(&mut self, row: usize, reason: &str) {
        self.verdicts.exclude(row, Verdict::Drop, reason);
    }

    /// Reject input row `row` with `reason`; it goes to the dead letters.
    pub fn reject_row(&mut self, row: usize, reason: &str) {
        self.verdicts.exclude(row, Verdict::Reject, reason);
    }
}

impl ColumnarOutput<'_> {
    /// The input batch (read it while building the answer).
    pub fn input(&self) -> &Batch {
        &self.batch
    }

    /// The input and the answer, borrowed apart: push values read from the
    /// input while it is borrowed.
    pub fn split(&mut self) -> (&Batch, &mut Answer) {
        (&self.batch, &mut self.answer)
    }

    /// Append the value of a computed column for the next kept row.
    /// Pushing to a pass-through column is an error reported by `finish`.
    #[inline(always)]
    pub fn push<K: Kind>(&mut self, field: FieldRef<K>, value: Option<K::Value<'_>>) {
        self.answer.push(field, value);
    }

    /// Drop input row `row` with `reason` (e.g. `bot`).
    pub fn drop_row(&mut self, row: usize, reason: &str) {
        self.answer.drop_row(row, reason);
    }

    /// Reject input row `row` with `reason`; it goes to the dead letters.
    pub fn reject_row(&mut self, row: usize, reason: &str) {
        self.answer.reject_row(row, reason);
    }

    /// Finish: pass-through columns keep the rows not excluded; every
    /// computed column must have one value per kept row.
    pub fn finish(self) -> Result<Output, String> {
        let rows = self.batch.num_rows();
        let Answer {
            computed,
            verdicts,
            pushed_to_pass_through,
        } = self.answer;
        if pushed_to_pass_through {
            return Err("a value was pushed to a pass-through column".into());
        }
        let kept = verdicts.kept_ranges(rows)?;
        let kept_rows = rows - verdicts.len();
        let mut inputs: Vec<Option<Column>> = self.batch.columns.into_iter().map(Some).collect();
        let mut uses = vec![0usize; inputs.len()];
        for source in self.plan.sources.iter().flatten() {
            uses[*source] += 1;
        }
        let mut columns = Vec::with_capacity(self.plan.sources.len());
        for ((i, source), computed) in self.plan.sources.iter().enumerate().zip(computed) {
            let column = match (source, computed) {
                (Some(source), _) => {
                    uses[*source] -= 1;
                    let input = if uses[*source] == 0 {
                        inputs[*source].take()
                    } else {
                        inputs[*source].clone()
                    }
                    .ok_or("input column used twice")?;
                    if kept_rows == rows {
                        input
                    } else {
                        filter(&input, &kept, kept_rows)
                    }
                }
                (None, Some(c)) => {
                    if c.len != kept_rows {
                        return Err(format!(
                            "computed output column `{}` has {} values for {kept_rows} kept rows",
                            self.plan.output.fields[i].name, c.len
                        ));
                    }
                    c.finish()
                }
                (None, None) => return Err("computed column without a builder".into()),
            };
            columns.push(column);
        }
        verdicts.answer(Batch {
            num_rows: kept_rows,
            columns,
        })
    }
}

/// The rows of `column` in the half-open `ranges`, `rows` in all.
fn filter(column: &Column, ranges: &[(usize, usize)], rows: usize) -> Column {
    fn take<T: Copy>(v: &[T], ranges: &[(usize, usize)], rows: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(rows);
        for &(a, b) in ranges {
            out.extend_from_slice(&v[a..b]);
        }
        out
    }
    let values = match &column.values {
        ColumnValues::Boolean(v) => ColumnValues::Boolean(take(v, ranges, rows)),
        ColumnValues::Int64(v) => ColumnValues::Int64(take(v, ranges, rows)),
        ColumnValues::Float64(v) => ColumnValues::Float64(take(v, ranges, rows)),
        ColumnValues::TimestampMs(v) => ColumnValues::TimestampMs(take(v, ranges, rows)),
        ColumnValues::Date(v) => ColumnValues::Date(take(v, ranges, rows)),
        ColumnValues::String { offsets, data } => {
            let mut new_offsets = Vec::with_capacity(rows + 1);
            new_offsets.push(0i32);
            let mut new_data = Vec::new();
            for &(a, b) in ranges {
                let (start, end) = (offsets[a] as usize, offsets[b] as usize);
                let shift = new_data.len() as i32 - offsets[a];
                new_data.extend_from_slice(&data[start..end]);
                new_offsets.extend(offsets[a + 1..=b].iter().map(|o| o + shift));
            }
            ColumnValues::String {
                offsets: new_offsets,
                data: new_data,
            }
        }
    };
    let validity = column.validity.as_ref().map(|bits| {
        let mut out = vec![0u8; rows.div_ceil(8)];
        let mut i = 0;
        for &(a, b) in ranges {
            for row in a..b {
                if bits[row >> 3] & (1 << (row & 7)) != 0 {
                    out[i >> 3] |= 1 << (i & 7);
                }
                i += 1;
            }
        }
        out
    });
    Column { validity, values }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::BatchBuilder;
    use crate::schema::{Field, FieldType};
    use crate::{F64, Str};

    /// A schema of `(name, type, nullable)` fields.
    fn declared(fields: &[(&str, FieldType, bool)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(name, ty, nullable)| Field::new(*name, *ty, *nullable))
                .collect(),
        )
    }

    fn input() -> (Schema, Batch) {
        let schema = declared(&[
            ("id", FieldType::String, false),
            ("tti", FieldType::Float64, true),
        ]);
        let id = schema.field::<Str>("id").unwrap();
        let tti = schema.field::<F64>("tti").unwrap();
        let mut b = BatchBuilder::new(&schema, 5);
        for (i, v) in [Some(1.0), None, Some(-3.0), Some(4.0), None]
            .iter()
            .enumerate()
        {
            b.push(id, Some(format!("e{i}").as_str()));
            b.push(tti, *v);
        }
        (schema, b.finish().unwrap())
    }

    #[test]
    fn pass_through_columns_keep_the_kept_rows_and_computed_ones_are_appended() {
        let (schema, batch) = input();
        let output = declared(&[
            ("id", FieldType::String, false),
            ("tti", FieldType::Float64, true),
            ("bucket", FieldType::String, true),
        ]);
        let plan = Columns::plan(&schema, &output).unwrap();
        assert!(plan.passes_through(0) && plan.passes_through(1) && !plan.passes_through(2));
        let tti = schema.field::<F64>("tti").unwrap();
        let bucket = output.field::<Str>("bucket").unwrap();
        let mut out = plan.output(batch);
        for row in 0..5 {
            match out.input().get(tti, row) {
                Some(v) if v < 0.0 => out.reject_row(row, "negative"),
                Some(_) => out.push(bucket, Some("fast")),
                None if row == 4 => out.drop_row(row, "no metric"),
                None => out.push(bucket, None),
            }
        }
        let answer = out.finish().unwrap();
        let ids = answer.batch.get(schema.field::<Str>("id").unwrap(), 2);
        assert_eq!(ids, Some("e3"));
        assert_eq!(answer.batch.num_rows(), 3);
        let got: Vec<_> = (0..3).map(|r| answer.batch.get(tti, r)).collect();
        assert_eq!(got, [Some(1.0), None, Some(4.0)]);
        let got: Vec<_> = (0..3).map(|r| answer.batch.get(bucket, r)).collect();
        assert_eq!(got, [Some("fast"), None, Some("fast")]);
        assert_eq!(answer.exclusion_of(2), Some((Verdict::Reject, "negative")));
        assert_eq!(answer.exclusion_of(4), Some((Verdict::Drop, "no metric")));
    }

    #[test]
    fn a_nullable_input_column_is_computed_for_a_non_nullable_output() {
        let (schema, _) = input();
        let output = declared(&[
            ("id", FieldType::String, false),
            ("tti", FieldType::Float64, false),
        ]);
        let plan = Columns::plan(&schema, &output).unwrap();
        assert!(plan.passes(output.field::<Str>("id").unwrap()));
        assert!(!plan.passes(output.field::<F64>("tti").unwrap()));
    }

    #[test]
    fn a_missing_computed_value_is_an_error() {
        let (schema, batch) = input();
        let output = declared(&[
            ("id", FieldType::String, false),
            ("bucket", FieldType::String, true),
        ]);
        let plan = Columns::plan(&schema, &output).unwrap();
        let bucket = output.field::<Str>("bucket").unwrap();
        let mut out = plan.output(batch);
        out.push(bucket, Some("x"));
        let err = out.finish().unwrap_err();
        assert!(
            err.contains("`bucket` has 1 values for 5 kept rows"),
            "{err}"
        );
    }
}
