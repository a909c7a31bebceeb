//! What a pipeline needs of its plugin's output: the lake's partition
//! column (a date: the batch path selects dates), the columns named in
//! `lake.skip_statistics` and the columns the aggregation shorthand reads. `weir validate` and
//! `weir plugin check --pipeline` name every column that is missing or of
//! the wrong type, before a run would fail on the first one.

use super::{DeclaredSchema, FieldType, Pipeline};

/// One column the pipeline reads from the plugin's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// the column.
    pub column: String,
    /// the types it may have (any, when empty).
    pub types: Vec<FieldType>,
    /// the key of the pipeline file that needs it.
    pub key: String,
}

impl Requirement {
    /// What is wrong with `output` for this requirement, if anything.
    pub fn problem(&self, output: &DeclaredSchema) -> Option<String> {
        let expected = if self.types.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = self.types.iter().map(|t| t.name()).collect();
            format!(" of type {}", names.join(" or "))
        };
        match output.fields().iter().find(|f| f.name == self.column) {
            None => Some(format!(
                "{}: the plugin's output has no column `{}` (expected one{expected})",
                self.key, self.column
            )),
            Some(f) if !self.types.is_empty() && !self.types.contains(&f.ty) => Some(format!(
                "{}: the plugin's column `{}` is {}, expected{expected}",
                self.key, self.column, f.ty
            )),
            Some(_) => None,
        }
    }
}

impl Pipeline {
    /// The lake's partition column: a date (or a timestamp, by its UTC
    /// date), since the batch path selects dates.
    pub fn partition_requirement(&self) -> Requirement {
        Requirement {
            column: self.config.lake.partition_by.clone(),
            types: vec![FieldType::Date, FieldType::Timestamp],
            key: "lake.partition_by".into(),
        }
    }

    /// The columns this pipeline reads from its plugin's output. A custom
    /// `aggregate.sql` is checked by planning it (`weir validate`), not here.
    pub fn output_requirements(&self) -> Vec<Requirement> {
        let mut required = vec![self.partition_requirement()];
        let mut add = |column: &str, types: Vec<FieldType>, key: String| {
            if !required.iter().any(|r| r.column == column) {
                required.push(Requirement {
                    column: column.to_string(),
                    types,
                    key,
                });
            }
        };
        for column in &self.config.lake.skip_statistics {
            add(column, Vec::new(), "lake.skip_statistics".into());
        }
        let Some(aggregate) = self.config.aggregate.as_ref().filter(|a| a.sql.is_none()) else {
            return required;
        };
        for column in &aggregate.group_by {
            add(column, Vec::new(), "aggregate.group_by".into());
        }
        if let Some(column) = &aggregate.distinct {
            add(column, Vec::new(), "aggregate.distinct".into());
        }
        for (i, m) in aggregate.metrics.iter().enumerate() {
            add(
                &m.column,
                vec![FieldType::Float64, FieldType::Int64],
                format!("aggregate.metrics[{i}].column"),
            );
        }
        required
    }

    /// Every requirement `output` does not meet, one line each.
    pub fn output_problems(&self, output: &DeclaredSchema) -> Vec<String> {
        self.output_requirements()
            .iter()
            .filter_map(|r| r.problem(output))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::FieldSpec;

    #[test]
    fn every_missing_or_mistyped_column_is_named() {
        let text = r#"
name = "t"
[source]
brokers = "embedded"
topic = "t"
group = "g"
[schema]
fields = [{ name = "event_id", type = "string" }]
[plugin]
path = "p.wasm"
[lake]
url = "/tmp/lake"
skip_statistics = ["event_id", "user_agent"]
[aggregate]
group_by = ["event_date", "page_url"]
distinct = "event_id"
[[aggregate.metrics]]
column = "tti_ms"
stats = ["avg"]
"#;
        let p = Pipeline::parse(std::path::Path::new("/tmp/p.toml"), text, &[], &[]).unwrap();
        let output = DeclaredSchema::new(vec![
            FieldSpec::new("event_id", FieldType::String, false),
            FieldSpec::new("page_url", FieldType::String, false),
            FieldSpec::new("tti_ms", FieldType::String, true),
        ])
        .unwrap();
        let problems = p.output_problems(&output);
        assert_eq!(
            problems,
            [
                "lake.partition_by: the plugin's output has no column `event_date` (expected one of type date or timestamp)",
                "lake.skip_statistics: the plugin's output has no column `user_agent` (expected one)",
                "aggregate.metrics[0].column: the plugin's column `tti_ms` is string, expected of type float64 or int64",
            ]
        );
        let good = DeclaredSchema::new(vec![
            FieldSpec::new("event_id", FieldType::String, false),
            FieldSpec::new("page_url", FieldType::String, false),
            FieldSpec::new("tti_ms", FieldType::Float64, true),
            FieldSpec::new("event_date", FieldType::Date, false),
            FieldSpec::new("user_agent", FieldType::String, true),
        ])
        .unwrap();
        assert!(p.output_problems(&good).is_empty());
    }
}
