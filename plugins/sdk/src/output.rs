//! Building batches and a plugin's answer: kept rows, drops and rejects.

use std::collections::HashMap;

use crate::batch::{Batch, Column, ColumnValues};
use crate::kind::{Kind, empty_values};
use crate::schema::{FieldRef, FieldType, Schema};

/// Builds a batch column by column, row by row. Every row gets exactly one
/// value per column; [`BatchBuilder::finish`] checks it.
#[derive(Debug)]
pub struct BatchBuilder {
    columns: Vec<ColumnBuilder>,
}

/// One column being built row by row: values and a validity bitmap,
/// dropped at the end when nothing was null.
#[derive(Debug)]
pub(crate) struct ColumnBuilder {
    values: ColumnValues,
    validity: Vec<u8>,
    pub(crate) len: usize,
    nulls: usize,
}

impl ColumnBuilder {
    /// An empty column of type `ty` with room for `capacity` rows.
    pub(crate) fn new(ty: FieldType, capacity: usize) -> Self {
        ColumnBuilder {
            values: empty_values(ty, capacity),
            validity: Vec::with_capacity(capacity.div_ceil(8)),
            len: 0,
            nulls: 0,
        }
    }

    /// Append a value (or a null).
    #[inline(always)]
    pub(crate) fn push<K: Kind>(&mut self, value: Option<K::Value<'_>>) {
        if self.len & 7 == 0 {
            self.validity.push(0);
        }
        if value.is_some() {
            *self.validity.last_mut().expect("pushed above") |= 1 << (self.len & 7);
        } else {
            self.nulls += 1;
        }
        self.len += 1;
        K::push(&mut self.values, value);
    }

    /// The column.
    pub(crate) fn finish(self) -> Column {
        Column {
            validity: (self.nulls > 0).then_some(self.validity),
            values: self.values,
        }
    }
}

impl BatchBuilder {
    /// An empty batch of `schema` with room for `capacity` rows.
    pub fn new(schema: &Schema, capacity: usize) -> Self {
        let columns = schema
            .fields
            .iter()
            .map(|f| ColumnBuilder::new(f.ty, capacity))
            .collect();
        BatchBuilder { columns }
    }

    /// Append a value (or a null) to the column of `field`.
    #[inline(always)]
    pub fn push<K: Kind>(&mut self, field: FieldRef<K>, value: Option<K::Value<'_>>) {
        self.columns[field.index()].push::<K>(value);
    }

    /// Finish: every column must have the same number of rows.
    pub fn finish(self) -> Result<Batch, String> {
        let rows = self.columns.first().map_or(0, |c| c.len);
        if let Some((i, c)) = self.columns.iter().enumerate().find(|(_, c)| c.len != rows) {
            return Err(format!(
                "output column {i} has {} values, column 0 has {rows}",
                c.len
            ));
        }
        let columns = self
            .columns
            .into_iter()
            .map(ColumnBuilder::finish)
            .collect();
        Ok(Batch {
            num_rows: rows,
            columns,
        })
    }
}

/// Why an input row is not in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// deliberately discarded; not an error.
    Drop,
    /// invalid; goes to the dead letters.
    Reject,
}

/// A dropped or rejected input row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exclusion {
    /// input row index.
    pub row: u32,
    /// drop or reject.
    pub verdict: Verdict,
    /// index into [`Output::reasons`].
    pub reason: u32,
}

/// A plugin's answer to one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// the kept rows, in input order, in the output schema.
    pub batch: Batch,
    /// rows not kept, in increasing row order.
    pub exclusions: Vec<Exclusion>,
    /// distinct reasons, referred to by index.
    pub reasons: Vec<String>,
}

impl Output {
    /// Keep every row unchanged (the output schema must equal the input's).
    pub fn keep_all(batch: Batch) -> Self {
        Output {
            batch,
            exclusions: Vec::new(),
            reasons: Vec::new(),
        }
    }

    /// The verdict and reason text for input row `row`, `None` when kept.
    pub fn exclusion_of(&self, row: usize) -> Option<(Verdict, &str)> {
        let i = self
            .exclusions
            .binary_search_by_key(&(row as u32), |e| e.row)
            .ok()?;
        let e = self.exclusions[i];
        Some((e.verdict, self.reasons[e.reason as usize].as_str()))
    }
}

/// The exclusions of an answer and their distinct reasons, shared by
/// [`OutputBuilder`] and [`crate::ColumnarOutput`].
#[derive(Debug, Default)]
pub(crate) struct Verdicts {
    exclusions: Vec<Exclusion>,
    reasons: Vec<String>,
    reason_ids: HashMap<String, u32>,
}

impl Verdicts {
    /// Exclude input row `row` with `reason`.
    pub(crate) fn exclude(&mut self, row: usize, verdict: Verdict, reason: &str) {
        // a plugin gives few reasons, often the same one for row after row:
        // the last one is compared before anything is hashed
        let known = (self.exclusions.last().map(|e| e.reason))
            .filter(|&id| self.reasons[id as usize] == reason)
            .or_else(|| self.reason_ids.get(reason).copied());
        let reason = match known {
            Some(id) => id,
            None => {
                let id = self.reasons.len() as u32;
                self.reasons.push(reason.to_string());
                self.reason_ids.insert(reason.to_string(), id);
                id
            }
        };
        self.exclusions.push(Exclusion {
            row: row as u32,
            verdict,
            reason,
        });
    }

    /// The kept rows of an input of `rows` rows, as half-open ranges
    /// between the exclusions (which must be in increasing order, in range).
    pub(crate) fn kept_ranges(&self, rows: usize) -> Result<Vec<(usize, usize)>, String> {
        if self
            .exclusions
            .last()
            .is_some_and(|e| e.row as usize >= rows)
        {
            return Err(format!("an exclusion names a row past the batch's {rows}"));
        }
        let mut kept = Vec::with_capacity(self.exclusions.len() + 1);
        let mut start = 0;
        for e in &self.exclusions {
            let row = e.row as usize;
            if row < start {
                return Err("exclusions must name each row once, in increasing order".into());
            }
            if row > start {
                kept.push((start, row));
            }
            start = row + 1;
        }
        if start < rows {
            kept.push((start, rows));
        }
        Ok(kept)
    }

    /// How many rows were excluded.
    pub(crate) fn len(&self) -> usize {
        self.exclusions.len()
    }

    /// The answer for `batch`; exclusions must be in increasing row order.
    pub(crate) fn answer(self, batch: Batch) -> Result<Output, String> {
        if self.exclusions.windows(2).any(|w| w[0].row >= w[1].row) {
            return Err("exclusions must name each row once, in increasing order".into());
        }
        Ok(Output {
            batch,
            exclusions: self.exclusions,
            reasons: self.reasons,
        })
    }
}

/// Builds an [`Output`]: push the values of each kept row, or exclude it.
#[derive(Debug)]
pub struct OutputBuilder {
    batch: BatchBuilder,
    verdicts: Verdicts,
}

impl OutputBuilder {
    /// An empty output in `schema` with room for `capacity` rows.
    pub fn new(schema: &Schema, capacity: usize) -> Self {
        OutputBuilder {
            batch: BatchBuilder::new(schema, capacity),
            verdicts: Verdicts::default(),
        }
    }

    /// Append a value of a kept row.
    #[inline]
    pub fn push<K: Kind>(&mut self, field: FieldRef<K>, value: Option<K::Value<'_>>) {
        self.batch.push(field, value);
    }

    /// Drop input row `row` with `reason` (e.g. `bot`).
    pub fn drop_row(&mut self, row: usize, reason: &str) {
        self.verdicts.exclude(row, Verdict::Drop, reason);
    }

    /// Reject input row `row` with `reason`; it goes to the dead letters.
    pub fn reject_row(&mut self, row: usize, reason: &str) {
        self.verdicts.exclude(row, Verdict::Reject, reason);
    }

    /// Finish; checks that columns agree and exclusions are in row order.
    pub fn finish(self) -> Result<Output, String> {
        let batch = self.batch.finish()?;
        self.verdicts.answer(batch)
    }
}
