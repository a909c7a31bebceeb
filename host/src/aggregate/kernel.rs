//! The aggregation kernel: de-duplication by event key, grouping by the
//! group-by columns (Arrow's row format as the hash key), and exact
//! statistics per group, percentiles like PostgreSQL's `percentile_cont`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use foldhash::fast::RandomState;

use super::config::{AggregateConfig, Stat};

/// The aggregation resolved against the lake's schema.
#[derive(Clone, Debug)]
pub struct Resolved {
    group_by: Vec<String>,
    group_fields: Vec<SortField>,
    distinct: String,
    metrics: Vec<(String, Vec<Stat>)>,
    output: SchemaRef,
}

impl Resolved {
    /// Resolve `config` against `schema`; the message says which column is
    /// missing or of the wrong type.
    pub fn new(config: &AggregateConfig, schema: &Schema) -> Result<Self, String> {
        let find = |name: &str, role: &str| {
            schema.index_of(name).map_err(|_| {
                format!(
                    "{role} column `{name}` is not in the lake's schema ({})",
                    field_names(schema)
                )
            })
        };
        let mut fields = Vec::new();
        let mut group_by = Vec::new();
        let mut group_fields = Vec::new();
        for name in &config.group_by {
            let i = find(name, "group-by")?;
            let field = schema.field(i);
            group_by.push(name.clone());
            group_fields.push(SortField::new(field.data_type().clone()));
            fields.push(Field::new(
                name,
                field.data_type().clone(),
                field.is_nullable(),
            ));
        }
        let distinct = find(&config.distinct, "distinct")?;
        if !matches!(schema.field(distinct).data_type(), DataType::Utf8) {
            return Err(format!(
                "distinct column `{}` must be a string",
                config.distinct
            ));
        }
        fields.push(Field::new(&config.events_column, DataType::Int64, false));
        let mut metrics = Vec::new();
        for m in &config.metrics {
            let i = find(&m.column, "metric")?;
            if !matches!(
                schema.field(i).data_type(),
                DataType::Float64 | DataType::Int64
            ) {
                return Err(format!(
                    "metric column `{}` is {}, expected int64 or float64",
                    m.column,
                    schema.field(i).data_type()
                ));
            }
            let mut stats = Vec::new();
            for s in &m.stats {
                let stat = Stat::parse(s)?;
                let ty = if stat == Stat::Samples {
                    DataType::Int64
                } else {
                    DataType::Float64
                };
                fields.push(Field::new(m.output_column(s), ty, stat != Stat::Samples));
                stats.push(stat);
            }
            metrics.push((m.column.clone(), stats));
        }
        Ok(Resolved {
            group_by,
            group_fields,
            distinct: config.distinct.clone(),
            metrics,
            output: Arc::new(Schema::new(fields)),
        })
    }

    /// The schema of the aggregated rows (the warehouse table's columns).
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output
    }
}

fn field_names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One group's state: distinct events and every metric's values.
#[derive(Debug, Default)]
struct Group {
    events: i64,
    values: Vec<Vec<f64>>,
}

/// Counts of what the kernel saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounts {
    /// rows offered.
    pub rows: u64,
    /// rows skipped as repeats of an event already counted.
    pub duplicates: u64,
    /// rows skipped because the distinct key is null.
    pub null_keys: u64,
}

/// Aggregates the rows of one date partition.
pub struct Aggregator {
    spec: Resolved,
    converter: RowConverter,
    seen: HashSet<Box<str>, RandomState>,
    /// group key (Arrow row format) → index into `groups`.
    index: HashMap<Box<[u8]>, usize, RandomState>,
    groups: Vec<Group>,
    counts: KernelCounts,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field("groups", &self.groups.len())
            .field("counts", &self.counts)
            .finish()
    }
}

impl Aggregator {
    /// A fresh aggregation.
    pub fn new(spec: Resolved) -> Result<Self, String> {
        let converter = RowConverter::new(spec.group_fields.clone()).map_err(|e| e.to_string())?;
        Ok(Aggregator {
            spec,
            converter,
            seen: HashSet::default(),
            index: HashMap::default(),
            groups: Vec::new(),
            counts: KernelCounts::default(),
        })
    }

    /// Add the rows of `batch` (of the lake's schema).
    pub fn push(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let n = batch.num_rows();
        self.counts.rows += n as u64;
        let schema = batch.schema();
        let column = |name: &str| {
            schema
                .index_of(name)
                .map(|i| batch.column(i).clone())
                .map_err(|_| format!("column `{name}` is missing ({})", field_names(&schema)))
        };
        let keys: Vec<ArrayRef> = self
            .spec
            .group_by
            .iter()
            .map(|n| column(n))
            .collect::<Result<_, _>>()?;
        let rows = self
            .converter
            .convert_columns(&keys)
            .map_err(|e| e.to_string())?;
        let ids = column(&self.spec.distinct)?;
        let ids: &StringArray = ids.as_string_opt().ok_or_else(|| {
            format!(
                "column `{}` is {}, expected a string",
                self.spec.distinct,
                ids.data_type()
            )
        })?;
        let metrics: Vec<Float64Array> = self
            .spec
            .metrics
            .iter()
            .map(|(name, _)| {
                let c = column(name).map_err(arrow::error::ArrowError::SchemaError)?;
                let c = &c;
                let c = if c.data_type() == &DataType::Float64 {
                    c.clone()
                } else {
                    cast(c, &DataType::Float64)?
                };
                Ok(c.as_primitive::<arrow::datatypes::Float64Type>().clone())
            })
            .collect::<Result<_, arrow::error::ArrowError>>()
            .map_err(|e| e.to_string())?;
        let n_metrics = metrics.len();
        for r in 0..n {
            if ids.is_null(r) {
                self.counts.null_keys += 1;
                continue;
            }
            let id = ids.value(r);
            if self.seen.contains(id) {
                self.counts.duplicates += 1;
                continue;
            }
            self.seen.insert(id.into());
            let key = rows.row(r);
            let g = match self.index.get(key.as_ref()) {
                Some(&g) => g,
                None => {
                    let g = self.groups.len();
                    self.index.insert(key.as_ref().into(), g);
                    self.groups.push(Group {
                        events: 0,
                        values: vec![Vec::new(); n_metrics],
                    });
                    g
                }
            };
            let group = &mut self.groups[g];
            group.events += 1;
            for (m, col) in metrics.iter().enumerate() {
                if col.is_valid(r) {
                    group.values[m].push(col.value(r));
                }
            }
        }
        Ok(())
    }

    /// What was seen so far.
    pub fn counts(&self) -> KernelCounts {
        self.counts
    }

    /// The aggregated rows, ordered by the group-by columns.
    pub fn finish(mut self) -> Result<RecordBatch, String> {
        // the row format sorts like the group-by values
        let mut keyed: Vec<(&[u8], usize)> = self.index.iter().map(|(k, &g)| (&**k, g)).collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let order: Vec<usize> = keyed.iter().map(|&(_, g)| g).collect();
        let parser = self.converter.parser();
        let key_rows: Vec<_> = keyed.iter().map(|&(k, _)| parser.parse(k)).collect();
        let mut columns: Vec<ArrayRef> = self
            .converter
            .convert_rows(key_rows)
            .map_err(|e| e.to_string())?;
        columns.push(Arc::new(Int64Array::from_iter_values(
            order.iter().map(|&g| self.groups[g].events),
        )));
        for (m, (_, stats)) in self.spec.metrics.iter().enumerate() {
            for &g in &order {
                self.groups[g].values[m].sort_unstable_by(f64::total_cmp);
            }
            for stat in stats {
                let column: ArrayRef = match stat {
                    Stat::Samples => Arc::new(Int64Array::from_iter_values(
                        order.iter().map(|&g| self.groups[g].values[m].len() as i64),
                    )),
                    _ => Arc::new(Float64Array::from_iter(
                        order
                            .iter()
                            .map(|&g| statistic(&self.groups[g].values[m], *stat)),
                    )),
                };
                columns.push(column);
            }
        }
        RecordBatch::try_new(self.spec.output.clone(), columns).map_err(|e| e.to_string())
    }
}

/// One statistic of sorted `values`; `None` when there are none.
pub fn statistic(sorted: &[f64], stat: Stat) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    Some(match stat {
        Stat::Samples => n as f64,
        Stat::Avg => sorted.iter().sum::<f64>() / n as f64,
        Stat::Min => sorted[0],
        Stat::Max => sorted[n - 1],
        Stat::Percentile(p) => percentile_cont(sorted, p),
    })
}

/// PostgreSQL's `percentile_cont`: linear interpolation between the two
/// closest ranks, computed with the same arithmetic (`first + (second -
/// first) * proportion`), so the results agree to the last bit.
pub fn percentile_cont(sorted: &[f64], p: f64) -> f64 {
    let position = p * (sorted.len() - 1) as f64;
    let first = position.floor();
    let proportion = position - first;
    let lo = sorted[first as usize];
    if proportion == 0.0 {
        return lo;
    }
    let hi = sorted[(first as usize + 1).min(sorted.len() - 1)];
    lo + (hi - lo) * proportion
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::config::MetricSpec;
    use arrow::array::{Date32Array, StringArray};

    #[test]
    fn percentile_cont_interpolates_like_postgres() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile_cont(&v, 0.5), 2.5);
        assert_eq!(percentile_cont(&v, 0.75), 3.25);
        assert_eq!(percentile_cont(&v, 0.0), 1.0);
        assert_eq!(percentile_cont(&v, 1.0), 4.0);
        assert_eq!(percentile_cont(&[7.0], 0.95), 7.0);
    }

    #[test]
    fn duplicates_count_once_and_groups_are_ordered() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("event_date", DataType::Date32, false),
            Field::new("page_url", DataType::Utf8, false),
            Field::new("tti_ms", DataType::Float64, true),
        ]));
        let config = AggregateConfig {
            group_by: vec!["event_date".into(), "page_url".into()],
            distinct: "event_id".into(),
            events_column: "events".into(),
            metrics: vec![MetricSpec {
                column: "tti_ms".into(),
                name: Some("tti".into()),
                stats: vec!["samples".into(), "avg".into(), "p50".into()],
            }],
            max_partition_rows: 100,
            workers: 1,
            batch_rows: 10,
            reapply_plugin: false,
        };
        let spec = Resolved::new(&config, &schema).unwrap();
        let mut agg = Aggregator::new(spec).unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "a", "c", "d"])),
                Arc::new(Date32Array::from(vec![1, 1, 1, 1, 1])),
                Arc::new(StringArray::from(vec!["/y", "/x", "/y", "/x", "/x"])),
                Arc::new(Float64Array::from(vec![
                    Some(10.0),
                    Some(1.0),
                    Some(10.0),
                    None,
                    Some(3.0),
                ])),
            ],
        )
        .unwrap();
        agg.push(&batch).unwrap();
        assert_eq!(agg.counts().duplicates, 1);
        let out = agg.finish().unwrap();
        let urls: &StringArray = out.column(1).as_string();
        assert_eq!(urls.iter().collect::<Vec<_>>(), [Some("/x"), Some("/y")]);
        let events = out.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(events.values(), &[3, 1]);
        let samples = out.column(3).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(samples.values(), &[2, 1]);
        let avg = out
            .column(4)
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(avg.value(0), 2.0);
        assert_eq!(avg.value(1), 10.0);
    }
}
