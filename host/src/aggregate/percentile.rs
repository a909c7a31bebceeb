//! `percentile_cont` as PostgreSQL, Redshift and DuckDB compute it: exact,
//! linear interpolation between the two closest ranks,
//! `lo + (hi - lo) * (p * (n - 1) - floor(p * (n - 1)))` in float8.
//!
//! DataFusion's own `percentile_cont` quantises the interpolation weight to
//! six decimals, so its figures differ from the warehouse's in the last
//! digits; the engine registers this one under the same name (and
//! `quantile_cont`) instead. Values of a group are held until the end (as
//! any exact percentile must); the memory is reported to the pool, so an
//! aggregation past `aggregate.memory_limit` spills.

use std::mem::size_of;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::types::{NativeType, logical_float64};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Coercion, ColumnarValue, EmitTo,
    GroupsAccumulator, Signature, TypeSignatureClass, Volatility,
};

/// The exact `percentile_cont(p) WITHIN GROUP (ORDER BY x)` (also
/// `percentile_cont(x, p)`), over float8 values.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PercentileCont {
    signature: Signature,
    aliases: Vec<String>,
}

impl PercentileCont {
    /// The function, ready to register.
    pub fn udaf() -> AggregateUDF {
        AggregateUDF::from(PercentileCont {
            signature: Signature::coercible(
                vec![
                    Coercion::new_implicit(
                        TypeSignatureClass::Native(logical_float64()),
                        vec![TypeSignatureClass::Numeric],
                        NativeType::Float64,
                    ),
                    Coercion::new_implicit(
                        TypeSignatureClass::Native(logical_float64()),
                        vec![TypeSignatureClass::Numeric],
                        NativeType::Float64,
                    ),
                ],
                Volatility::Immutable,
            ),
            aliases: vec!["quantile_cont".to_string()],
        })
    }
}

impl AggregateUDFImpl for PercentileCont {
    fn name(&self) -> &str {
        "percentile_cont"
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "percentile_cont"),
            DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return Err(DataFusionError::Plan(
                "percentile_cont(DISTINCT ...) is not supported".into(),
            ));
        }
        Ok(Box::new(One {
            values: Vec::new(),
            percentile: percentile(&args)?,
        }))
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups {
            values: Vec::new(),
            percentile: percentile(&args)?,
            heap: Heap::default(),
        }))
    }

    fn supports_within_group_clause(&self) -> bool {
        true
    }
}

/// The fraction asked for: a literal in 0..=1 (mirrored for `ORDER BY x DESC`).
fn percentile(args: &AccumulatorArgs) -> Result<f64> {
    let bad = || {
        DataFusionError::Plan(
            "percentile_cont: the percentile must be a literal between 0 and 1".into(),
        )
    };
    // a constant: evaluated over no rows it gives its scalar
    let expr = args.exprs.get(1).ok_or_else(bad)?;
    let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
    let ColumnarValue::Scalar(value) = expr.evaluate(&empty).map_err(|_| bad())? else {
        return Err(bad());
    };
    let p = match value {
        ScalarValue::Float64(Some(p)) => p,
        ScalarValue::Float32(Some(p)) => f64::from(p),
        ScalarValue::Int64(Some(p)) => p as f64,
        _ => return Err(bad()),
    };
    if !(0.0..=1.0).contains(&p) {
        return Err(bad());
    }
    let descending = args.order_bys.first().is_some_and(|s| s.options.descending);
    Ok(if descending { 1.0 - p } else { p })
}

/// The percentile of `values` (reordered in place), like PostgreSQL's.
pub fn percentile_cont(values: &mut [f64], p: f64) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let position = p * (n - 1) as f64;
    let lower = position.floor() as usize;
    let upper = position.ceil() as usize;
    let (_, lo, above) = values.select_nth_unstable_by(lower, f64::total_cmp);
    let lo = *lo;
    if upper == lower {
        return Some(lo);
    }
    // the next rank is the smallest value above the lower one
    let hi = above.iter().copied().min_by(f64::total_cmp).unwrap_or(lo);
    Some(lo + (hi - lo) * (position - lower as f64))
}

/// Values of many groups as one list array (a group per row).
fn to_list(groups: Vec<Vec<f64>>) -> ArrayRef {
    let mut offsets = Vec::with_capacity(groups.len() + 1);
    offsets.push(0i32);
    let mut end = 0i32;
    for g in &groups {
        end += g.len() as i32;
        offsets.push(end);
    }
    let values: Vec<f64> = groups.into_iter().flatten().collect();
    Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float64, true)),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Arc::new(Float64Array::new(ScalarBuffer::from(values), None)),
        None,
    ))
}

/// One group's values.
#[derive(Debug)]
struct One {
    values: Vec<f64>,
    percentile: f64,
}

impl Accumulator for One {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let array = values[0].as_primitive::<Float64Type>();
        self.values.extend(array.iter().flatten());
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for list in lists.iter().flatten() {
            self.values
                .extend(list.as_primitive::<Float64Type>().iter().flatten());
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = to_list(vec![std::mem::take(&mut self.values)]);
        Ok(vec![ScalarValue::List(Arc::new(
            list.as_list::<i32>().clone(),
        ))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(percentile_cont(
            &mut self.values,
            self.percentile,
        )))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.values.capacity() * size_of::<f64>()
    }
}

/// The values of every group of an aggregation.
#[derive(Debug)]
struct Groups {
    values: Vec<Vec<f64>>,
    percentile: f64,
    /// what the groups' values hold on the heap, kept as they grow: the
    /// aggregation asks for the size after every batch, and summing it over
    /// a million groups each time would cost more than the aggregation.
    heap: Heap,
}

/// Heap memory of many `Vec<f64>`, counted as they grow.
#[derive(Debug, Default)]
struct Heap {
    /// bytes of capacity.
    bytes: usize,
    /// allocations (the allocator's own bookkeeping costs about 16 bytes each).
    allocations: usize,
}

impl Heap {
    /// Count a vector that grew from `before` to `after` elements of capacity.
    fn grew(&mut self, before: usize, after: usize) {
        if after != before {
            self.bytes += (after - before) * size_of::<f64>();
            if before == 0 {
                self.allocations += 1;
            }
        }
    }

    /// Forget vectors taken away.
    fn taken(&mut self, taken: &[Vec<f64>]) {
        for v in taken.iter().filter(|v| v.capacity() > 0) {
            self.bytes = self.bytes.saturating_sub(v.capacity() * size_of::<f64>());
            self.allocations = self.allocations.saturating_sub(1);
        }
    }

    fn size(&self) -> usize {
        self.bytes + self.allocations * 16
    }
}

impl Groups {
    fn push(&mut self, group: usize, values: impl Iterator<Item = f64>) {
        let v = &mut self.values[group];
        let before = v.capacity();
        v.extend(values);
        let after = v.capacity();
        self.heap.grew(before, after);
    }

    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<f64>> {
        let taken = emit_to.take_needed(&mut self.values);
        self.heap.taken(&taken);
        taken
    }
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.values.resize_with(total_num_groups, Vec::new);
        let array = values[0].as_primitive::<Float64Type>();
        for (row, &group) in group_indices.iter().enumerate() {
            if array.is_null(row) || opt_filter.is_some_and(|f| !f.value(row) || f.is_null(row)) {
                continue;
            }
            self.push(group, std::iter::once(array.value(row)));
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.values.resize_with(total_num_groups, Vec::new);
        let lists = values[0].as_list::<i32>();
        for (row, &group) in group_indices.iter().enumerate() {
            if lists.is_null(row) {
                continue;
            }
            let list = lists.value(row);
            self.push(group, list.as_primitive::<Float64Type>().iter().flatten());
        }
        Ok(())
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![to_list(self.take(emit_to))])
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = self.take(emit_to);
        let out: Float64Array = groups
            .into_iter()
            .map(|mut v| percentile_cont(&mut v, self.percentile))
            .collect();
        Ok(Arc::new(out))
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let array = values[0].as_primitive::<Float64Type>();
        let groups = (0..array.len())
            .map(|row| {
                let kept = !array.is_null(row)
                    && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
                if kept {
                    vec![array.value(row)]
                } else {
                    Vec::new()
                }
            })
            .collect();
        Ok(vec![to_list(groups)])
    }

    fn size(&self) -> usize {
        self.heap.size() + self.values.capacity() * size_of::<Vec<f64>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_like_postgres() {
        // PostgreSQL: percentile_cont(0.95) over 1..=48 is 45.65
        let mut v: Vec<f64> = (1..=48).rev().map(f64::from).collect();
        assert_eq!(
            percentile_cont(&mut v, 0.95),
            Some(45.0 + (46.0 - 45.0) * (0.95 * 47.0 - 44.0))
        );
        let mut v = vec![697.0, 697.25];
        assert_eq!(percentile_cont(&mut v, 0.5), Some(697.125));
        assert_eq!(percentile_cont(&mut [], 0.5), None);
        assert_eq!(percentile_cont(&mut [3.0], 0.75), Some(3.0));
        let mut v = vec![5.0, 1.0, 3.0];
        assert_eq!(percentile_cont(&mut v, 0.0), Some(1.0));
        let mut v = vec![5.0, 1.0, 3.0];
        assert_eq!(percentile_cont(&mut v, 1.0), Some(5.0));
    }

    #[test]
    fn the_groups_size_follows_their_values() {
        let mut groups = Groups {
            values: Vec::new(),
            percentile: 0.5,
            heap: Heap::default(),
        };
        let values: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.0),
            None,
            Some(3.0),
            Some(2.0),
            Some(4.0),
        ]));
        groups
            .update_batch(&[values], &[0, 0, 1, 0, 1], None, 3)
            .unwrap();
        let held = |g: &Groups| -> usize {
            g.values
                .iter()
                .filter(|v| v.capacity() > 0)
                .map(|v| v.capacity() * 8 + 16)
                .sum::<usize>()
                + g.values.capacity() * size_of::<Vec<f64>>()
        };
        assert_eq!(groups.size(), held(&groups));
        let out = groups.evaluate(EmitTo::First(1)).unwrap();
        assert_eq!(out.as_primitive::<Float64Type>().value(0), 1.5);
        assert_eq!(groups.size(), held(&groups));
        let out = groups.evaluate(EmitTo::All).unwrap();
        assert_eq!(out.as_primitive::<Float64Type>().value(0), 3.5);
        assert!(out.is_null(1));
        assert_eq!(groups.heap.size(), 0);
    }
}
