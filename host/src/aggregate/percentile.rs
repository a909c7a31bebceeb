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
//!
//! Several percentiles of one value in one aggregation (`p50`, `p75`,
//! `p95` of `tti_ms`) would each hold their own copy of every value.
//! [`SharePercentiles`], an optimizer rule, makes them one accumulator
//! ([`Percentiles`], a list of the figures) and picks each figure out of
//! the list above the aggregation: the query text stays the portable one.

use std::mem::size_of;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::Column;
use datafusion::common::tree_node::Transformed;
use datafusion::common::types::{NativeType, logical_float64};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::functions_nested::expr_fn::array_element;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, Aggregate, AggregateUDF, AggregateUDFImpl, Coercion, ColumnarValue, EmitTo, Expr,
    GroupsAccumulator, LogicalPlan, Projection, Signature, TypeSignatureClass, Volatility, lit,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::PhysicalExpr;

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
        Ok(vec![values_state(args.name)])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return Err(DataFusionError::Plan(
                "percentile_cont(DISTINCT ...) is not supported".into(),
            ));
        }
        Ok(Box::new(One {
            values: Vec::new(),
            wanted: Wanted::One(percentile(&args)?),
        }))
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups::new(Wanted::One(percentile(&args)?))))
    }

    fn supports_within_group_clause(&self) -> bool {
        true
    }

    /// The values are ordered by the accumulator itself (a selection per
    /// group at the end), so the input needs no order: with the default
    /// (a hard requirement) DataFusion sorts every input row by the
    /// `WITHIN GROUP` value before aggregating.
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

/// Several exact percentiles of one float8 value, as a list in the order
/// asked (`weir_percentiles_cont(x, 0.5, 0.75, 0.95)`): one copy of the
/// values serves them all. [`SharePercentiles`] writes it; it is not
/// registered for queries to name.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Percentiles {
    signature: Signature,
}

impl Percentiles {
    /// The function (its arguments are float8: the rule writes them so).
    pub fn udaf() -> AggregateUDF {
        AggregateUDF::from(Percentiles {
            // (aggregate functions take no `variadic` signature: the
            // arguments are coerced in `coerce_types`)
            signature: Signature::user_defined(Volatility::Immutable),
        })
    }
}

impl AggregateUDFImpl for Percentiles {
    fn name(&self) -> &str {
        "weir_percentiles_cont"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new_list_field(
            DataType::Float64,
            true,
        ))))
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() < 2 {
            return Err(DataFusionError::Plan(
                "weir_percentiles_cont: expected a value and at least one fraction".into(),
            ));
        }
        Ok(vec![DataType::Float64; arg_types.len()])
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![values_state(args.name)])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(One {
            values: Vec::new(),
            wanted: Wanted::Many(fractions(&args)?),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups::new(Wanted::Many(fractions(&args)?))))
    }
}

/// The fractions after the value.
fn fractions(args: &AccumulatorArgs) -> Result<Vec<f64>> {
    args.exprs.iter().skip(1).map(fraction).collect()
}

/// The state of both functions: the values seen, as a list.
fn values_state(name: &str) -> FieldRef {
    Arc::new(Field::new(
        format_state_name(name, "percentile_cont"),
        DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
        true,
    ))
}

/// An optimizer rule: in each aggregation, the exact percentiles
/// ([`PercentileCont`]) of one value (same `ORDER BY` direction, same
/// `FILTER`, not `DISTINCT`) become one [`Percentiles`], and a projection
/// above the aggregation picks each figure out of its list under the
/// original column name. Six percentiles of two columns then hold two
/// copies of the values instead of six.
#[derive(Debug, Default)]
pub struct SharePercentiles;

/// What makes percentiles shareable: the value and the filter.
type ShareKey = (Expr, Option<Box<Expr>>);

impl SharePercentiles {
    /// The value, filter and fraction of a shareable percentile.
    fn shareable(expr: &Expr) -> Option<(ShareKey, f64)> {
        let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
            return None;
        };
        let inner: &dyn std::any::Any = func.inner().as_ref();
        if !inner.is::<PercentileCont>() || params.distinct || params.null_treatment.is_some() {
            return None;
        }
        let [value, Expr::Literal(p, _)] = params.args.as_slice() else {
            return None;
        };
        let p = literal_fraction(p)?;
        let p = match params.order_by.as_slice() {
            [] => p,
            [sort] if sort.expr == *value => {
                if sort.asc {
                    p
                } else {
                    1.0 - p
                }
            }
            _ => return None,
        };
        Some(((value.clone(), params.filter.clone()), p))
    }
}

impl OptimizerRule for SharePercentiles {
    fn name(&self) -> &str {
        "weir_share_percentiles"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = plan else {
            return Ok(Transformed::no(plan));
        };
        // the shareable percentiles, by value: (index in aggr_expr, fraction)
        let mut shared: Vec<(ShareKey, Vec<(usize, f64)>)> = Vec::new();
        for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
            if let Some((key, p)) = Self::shareable(expr) {
                match shared.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, members)) => members.push((i, p)),
                    None => shared.push((key, vec![(i, p)])),
                }
            }
        }
        shared.retain(|(_, members)| members.len() > 1);
        let grouping_set = matches!(aggregate.group_expr.as_slice(), [Expr::GroupingSet(_)]);
        if shared.is_empty() || grouping_set {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        let udaf = Arc::new(Percentiles::udaf());
        // the aggregation: the unshared expressions, then one list per value
        let mut picks: Vec<Option<(usize, i64)>> = vec![None; aggregate.aggr_expr.len()];
        let mut aggr_expr: Vec<Expr> = aggregate
            .aggr_expr
            .iter()
            .enumerate()
            .filter(|(i, _)| !shared.iter().any(|(_, m)| m.iter().any(|(j, _)| j == i)))
            .map(|(_, e)| e.clone())
            .collect();
        let mut lists = Vec::new();
        for ((value, filter), members) in shared {
            let mut args = vec![value];
            for (k, &(i, p)) in members.iter().enumerate() {
                args.push(Expr::Literal(ScalarValue::Float64(Some(p)), None));
                picks[i] = Some((lists.len(), k as i64 + 1));
            }
            let list = Expr::AggregateFunction(AggregateFunction::new_udf(
                udaf.clone(),
                args,
                false,
                filter,
                Vec::new(),
                None,
            ));
            lists.push(Expr::Column(Column::from_name(
                list.schema_name().to_string(),
            )));
            aggr_expr.push(list);
        }
        let groups = aggregate.group_expr.len();
        let new = Aggregate::try_new(
            aggregate.input.clone(),
            aggregate.group_expr.clone(),
            aggr_expr,
        )?;
        // the projection: the original columns, in order, under their names
        let columns: Vec<Expr> = aggregate
            .schema
            .iter()
            .enumerate()
            .map(|(i, (qualifier, field))| {
                let pick = i
                    .checked_sub(groups)
                    .and_then(|a| picks.get(a).copied().flatten());
                match pick {
                    Some((list, k)) => array_element(lists[list].clone(), lit(k))
                        .alias_qualified(qualifier.cloned(), field.name()),
                    None => Expr::Column(Column::new(qualifier.cloned(), field.name())),
                }
            })
            .collect();
        let projection = Projection::try_new(columns, Arc::new(LogicalPlan::Aggregate(new)))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    }
}

/// The fraction asked for: a literal in 0..=1 (mirrored for `ORDER BY x DESC`).
fn percentile(args: &AccumulatorArgs) -> Result<f64> {
    let expr = args.exprs.get(1).ok_or_else(not_a_fraction)?;
    let p = fraction(expr)?;
    let descending = args.order_bys.first().is_some_and(|s| s.options.descending);
    Ok(if descending { 1.0 - p } else { p })
}

fn not_a_fraction() -> DataFusionError {
    DataFusionError::Plan(
        "percentile_cont: the percentile must be a literal between 0 and 1".into(),
    )
}

/// The value of a constant argument in 0..=1.
fn fraction(expr: &Arc<dyn PhysicalExpr>) -> Result<f64> {
    // a constant: evaluated over no rows it gives its scalar
    let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
    let ColumnarValue::Scalar(value) = expr.evaluate(&empty).map_err(|_| not_a_fraction())? else {
        return Err(not_a_fraction());
    };
    literal_fraction(&value).ok_or_else(not_a_fraction)
}

/// A literal's value when it is a number in 0..=1.
fn literal_fraction(value: &ScalarValue) -> Option<f64> {
    let p = match value {
        ScalarValue::Float64(Some(p)) => *p,
        ScalarValue::Float32(Some(p)) => f64::from(*p),
        ScalarValue::Int64(Some(p)) => *p as f64,
        _ => return None,
    };
    (0.0..=1.0).contains(&p).then_some(p)
}

/// What an accumulator gives: one percentile, or a list of several of the
/// same values.
#[derive(Clone, Debug)]
enum Wanted {
    One(f64),
    Many(Vec<f64>),
}

impl Wanted {
    /// The figures of `values` (reordered in place), as a scalar.
    fn scalar(&self, values: &mut [f64]) -> ScalarValue {
        match self {
            Wanted::One(p) => ScalarValue::Float64(percentile_cont(values, *p)),
            Wanted::Many(_) => {
                // a copy: a window frame evaluates again after more rows
                let list = self.array(vec![values.to_vec()]);
                ScalarValue::List(Arc::new(list.as_list::<i32>().clone()))
            }
        }
    }

    /// The figures of each group: a float8 per group, or a list per group
    /// (null for a group without values).
    fn array(&self, groups: Vec<Vec<f64>>) -> ArrayRef {
        match self {
            Wanted::One(p) => Arc::new(
                groups
                    .into_iter()
                    .map(|mut v| percentile_cont(&mut v, *p))
                    .collect::<Float64Array>(),
            ),
            Wanted::Many(ps) => {
                let mut offsets = Vec::with_capacity(groups.len() + 1);
                offsets.push(0i32);
                let mut figures = Vec::with_capacity(groups.len() * ps.len());
                let mut valid = Vec::with_capacity(groups.len());
                for mut v in groups {
                    if !v.is_empty() {
                        figures.extend(ps.iter().filter_map(|&p| percentile_cont(&mut v, p)));
                    }
                    valid.push(!v.is_empty());
                    offsets.push(figures.len() as i32);
                }
                list(offsets, figures, Some(NullBuffer::from(valid)))
            }
        }
    }
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
    list(offsets, values, None)
}

/// A list array of float8 values, a row per offset pair.
fn list(offsets: Vec<i32>, values: Vec<f64>, nulls: Option<NullBuffer>) -> ArrayRef {
    Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float64, true)),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Arc::new(Float64Array::new(ScalarBuffer::from(values), None)),
        nulls,
    ))
}

/// One group's values.
#[derive(Debug)]
struct One {
    values: Vec<f64>,
    wanted: Wanted,
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
        Ok(self.wanted.scalar(&mut self.values))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.values.capacity() * size_of::<f64>()
    }
}

/// The values of every group of an aggregation.
#[derive(Debug)]
struct Groups {
    values: Vec<Vec<f64>>,
    wanted: Wanted,
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
    fn new(wanted: Wanted) -> Self {
        Groups {
            values: Vec::new(),
            wanted,
            heap: Heap::default(),
        }
    }

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
        Ok(self.wanted.array(groups))
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
        let mut groups = Groups::new(Wanted::One(0.5));
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

    /// A session with the exact percentiles, sharing them or not, and a
    /// table `t` (group `g`, float8 `x` with nulls, int8 `y`).
    fn session(share: bool) -> datafusion::prelude::SessionContext {
        use arrow::array::{Int64Array, StringArray};
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_udaf(PercentileCont::udaf());
        if share {
            ctx.add_optimizer_rule(Arc::new(SharePercentiles));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, false),
            Field::new("x", DataType::Float64, true),
            Field::new("y", DataType::Int64, false),
        ]));
        let n = 200;
        let g: StringArray = (0..n).map(|i| Some(["a", "b", "c", "d"][i % 4])).collect();
        // group d has no x at all; the others a spread with repeats
        let x: Float64Array = (0..n)
            .map(|i| (i % 4 != 3 && i % 7 != 0).then(|| ((i * 37) % 101) as f64 / 4.0))
            .collect();
        let y: Int64Array = (0..n).map(|i| Some((i % 9) as i64)).collect();
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(g), Arc::new(x), Arc::new(y)])
                .unwrap();
        let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    async fn rows(ctx: &datafusion::prelude::SessionContext, sql: &str) -> (String, String) {
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame
            .clone()
            .into_optimized_plan()
            .unwrap()
            .display_indent()
            .to_string();
        let batches = frame.collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        (plan, text)
    }

    #[tokio::test]
    async fn shared_percentiles_give_the_figures_of_separate_ones() {
        let grouped = "SELECT g, \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY x) AS p50, \
             percentile_cont(0.9) WITHIN GROUP (ORDER BY x DESC) AS p10, \
             percentile_cont(0.95) WITHIN GROUP (ORDER BY x) AS p95, \
             count(*) AS n, \
             percentile_cont(0.25) WITHIN GROUP (ORDER BY x) FILTER (WHERE y > 2) AS f25, \
             percentile_cont(0.75) WITHIN GROUP (ORDER BY x) FILTER (WHERE y > 2) AS f75, \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY y) AS y50 \
             FROM t GROUP BY g ORDER BY g";
        let ungrouped = "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) AS p50, \
             quantile_cont(x, 0.75) AS p75, avg(x) AS mean FROM t";
        for sql in [grouped, ungrouped] {
            let (plain_plan, plain) = rows(&session(false), sql).await;
            let (shared_plan, shared) = rows(&session(true), sql).await;
            assert!(
                !plain_plan.contains("weir_percentiles_cont"),
                "{plain_plan}"
            );
            assert_eq!(shared, plain, "{shared_plan}");
            // x's three unfiltered percentiles share one list, the two
            // filtered ones another; y's single percentile stays as it is
            let lists = shared_plan.matches("weir_percentiles_cont(").count();
            assert!(lists >= if sql == grouped { 2 } else { 1 }, "{shared_plan}");
        }
        // group d has no x: its shared percentiles are null, its count is not
        let d = session(true)
            .sql(&grouped.replace("GROUP BY", "WHERE g = 'd' GROUP BY"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(d[0].num_rows(), 1);
        for column in ["p50", "p10", "p95", "f25", "f75"] {
            assert!(d[0].column_by_name(column).unwrap().is_null(0), "{column}");
        }
        assert!(!d[0].column_by_name("y50").unwrap().is_null(0));
    }
}
