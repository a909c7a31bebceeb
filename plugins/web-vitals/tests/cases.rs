//! Every rule of the plugin, checked natively against `testdata/cases.jsonl`
//! (the host runs the same file through the compiled component).

use serde_json::{Value, json};
use weir_plugin_sdk::testing::{init_plugin, process_batch};
use weir_plugin_sdk::{
    Batch, BatchBuilder, Date, F64, FieldType, Output, Schema, Str, TimestampMs, Verdict,
};
use weir_plugin_web_vitals::{WebVitals, input_schema, output_schema};

fn cases() -> Vec<Value> {
    include_str!("../testdata/cases.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Build a batch of `schema` from JSON objects (timestamps as epoch ms, dates as days).
fn batch_of(schema: &Schema, events: &[&Value]) -> Batch {
    let mut b = BatchBuilder::new(schema, events.len());
    for e in events {
        for f in &schema.fields {
            let v = &e[&f.name];
            match f.ty {
                FieldType::String => b.push(schema.field::<Str>(&f.name).unwrap(), v.as_str()),
                FieldType::Float64 => b.push(schema.field::<F64>(&f.name).unwrap(), v.as_f64()),
                FieldType::TimestampMs => {
                    b.push(schema.field::<TimestampMs>(&f.name).unwrap(), v.as_i64())
                }
                FieldType::Date => b.push(
                    schema.field::<Date>(&f.name).unwrap(),
                    v.as_i64().map(|d| d as i32),
                ),
                other => panic!("no {other:?} in the web-vitals schema"),
            }
        }
    }
    b.finish().unwrap()
}

/// Row `row` of an output batch as JSON, dates as `YYYY-MM-DD`.
fn row_json(schema: &Schema, batch: &Batch, row: usize) -> Value {
    let mut m = serde_json::Map::new();
    for f in &schema.fields {
        let v = match f.ty {
            FieldType::String => json!(batch.get(schema.field::<Str>(&f.name).unwrap(), row)),
            FieldType::Float64 => json!(batch.get(schema.field::<F64>(&f.name).unwrap(), row)),
            FieldType::TimestampMs => {
                json!(batch.get(schema.field::<TimestampMs>(&f.name).unwrap(), row))
            }
            FieldType::Date => json!(
                batch
                    .get(schema.field::<Date>(&f.name).unwrap(), row)
                    .map(civil_date)
            ),
            other => panic!("unexpected {other:?}"),
        };
        m.insert(f.name.clone(), v);
    }
    Value::Object(m)
}

/// Days since 1970-01-01 as `YYYY-MM-DD` (Howard Hinnant's civil_from_days).
fn civil_date(days: i32) -> String {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn run(events: &[&Value], schema: &Schema) -> Output {
    let (mut plugin, out_schema) = init_plugin::<WebVitals>(schema, &[]).unwrap();
    process_batch(&mut plugin, &out_schema, batch_of(schema, events)).unwrap()
}

#[test]
fn every_case_gets_its_expected_verdict_and_output() {
    let cases = cases();
    let events: Vec<&Value> = cases.iter().map(|c| &c["event"]).collect();
    let out = run(&events, &input_schema());
    let schema = output_schema();
    let mut kept = 0;
    for (row, case) in cases.iter().enumerate() {
        let name = case["case"].as_str().unwrap();
        match (case["verdict"].as_str().unwrap(), out.exclusion_of(row)) {
            ("keep", None) => {
                assert_eq!(
                    row_json(&schema, &out.batch, kept),
                    case["output"],
                    "case {name}"
                );
                kept += 1;
            }
            ("drop", Some((Verdict::Drop, reason)))
            | ("reject", Some((Verdict::Reject, reason))) => {
                assert_eq!(reason, case["reason"].as_str().unwrap(), "case {name}");
            }
            (expected, got) => panic!("case {name}: expected {expected}, got {got:?}"),
        }
    }
    assert_eq!(kept, out.batch.num_rows());
}

#[test]
fn output_fed_back_comes_out_unchanged() {
    let cases = cases();
    let events: Vec<&Value> = cases.iter().map(|c| &c["event"]).collect();
    let first = run(&events, &input_schema());
    let schema = output_schema();
    let second = {
        let (mut plugin, out_schema) = init_plugin::<WebVitals>(&schema, &[]).unwrap();
        process_batch(&mut plugin, &out_schema, first.batch.clone()).unwrap()
    };
    assert!(second.exclusions.is_empty(), "{:?}", second.exclusions);
    assert_eq!(second.batch, first.batch);
}

#[test]
fn unknown_config_key_is_refused() {
    let err = init_plugin::<WebVitals>(&input_schema(), &[("bot_list", "x")])
        .err()
        .unwrap();
    assert!(err.contains("bot_list"), "{err}");
}

#[test]
fn missing_input_field_is_named() {
    let mut schema = input_schema();
    schema.fields.retain(|f| f.name != "page_url");
    let err = init_plugin::<WebVitals>(&schema, &[]).err().unwrap();
    assert!(err.contains("page_url"), "{err}");
}
