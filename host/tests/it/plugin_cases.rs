//! The web-vitals rules through the compiled component: every case of
//! `plugins/web-vitals/testdata/cases.jsonl` (the file the plugin's native
//! unit tests use) gets the same verdict and output in the host.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Date32Type, Float64Type, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use serde_json::{Value, json};
use weir::decode::JsonDecoder;
use weir::pipeline::DeclaredSchema;
use weir::plugin::{Limits, PluginRunner, Verdict};

use crate::support::{engine, repo, wasm};

pub fn cases() -> Vec<Value> {
    let text =
        std::fs::read_to_string(repo().join("plugins/web-vitals/testdata/cases.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Row `row` as JSON: timestamps as epoch ms, dates as `YYYY-MM-DD`.
pub fn row_json(batch: &RecordBatch, row: usize) -> Value {
    let mut m = serde_json::Map::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let v = if column.is_null(row) {
            Value::Null
        } else {
            match field.data_type() {
                DataType::Utf8 => json!(column.as_string::<i32>().value(row)),
                DataType::Float64 => json!(column.as_primitive::<Float64Type>().value(row)),
                DataType::Timestamp(..) => {
                    json!(column.as_primitive::<TimestampMillisecondType>().value(row))
                }
                DataType::Date32 => {
                    let days = column.as_primitive::<Date32Type>().value(row);
                    let date =
                        chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Days::new(0);
                    json!((date + chrono::TimeDelta::days(days.into())).to_string())
                }
                other => panic!("unexpected type {other}"),
            }
        };
        m.insert(field.name().clone(), v);
    }
    Value::Object(m)
}

fn decode_all(events: &[Value]) -> RecordBatch {
    let mut decoder = JsonDecoder::new(&DeclaredSchema::web_vitals(), events.len());
    for e in events {
        decoder
            .push(e.to_string().as_bytes())
            .unwrap_or_else(|err| panic!("{e}: {err}"));
    }
    decoder.flush()
}

fn runner(schema: &DeclaredSchema) -> PluginRunner {
    let engine = engine(Limits::default());
    let plugin = engine.load_file(&wasm("weir_plugin_web_vitals")).unwrap();
    PluginRunner::new(Arc::clone(&engine), plugin, schema, &[]).unwrap()
}

#[test]
fn component_gives_every_case_its_expected_verdict_and_output() {
    let cases = cases();
    let events: Vec<Value> = cases.iter().map(|c| c["event"].clone()).collect();
    let mut runner = runner(&DeclaredSchema::web_vitals());
    let out = runner.process(&decode_all(&events));
    assert_eq!(out.failed_calls, 0);
    let mut excluded = out.excluded.iter().peekable();
    let mut kept = 0;
    for (row, case) in cases.iter().enumerate() {
        let name = case["case"].as_str().unwrap();
        let exclusion = excluded.next_if(|e| e.row == row);
        match (case["verdict"].as_str().unwrap(), exclusion) {
            ("keep", None) => {
                assert_eq!(row_json(&out.batch, kept), case["output"], "case {name}");
                kept += 1;
            }
            ("drop", Some(e)) => {
                assert_eq!(
                    (e.verdict, &*e.reason),
                    (Verdict::Drop, case["reason"].as_str().unwrap()),
                    "case {name}"
                )
            }
            ("reject", Some(e)) => {
                assert_eq!(
                    (e.verdict, &*e.reason),
                    (Verdict::Reject, case["reason"].as_str().unwrap()),
                    "case {name}"
                )
            }
            (expected, got) => panic!("case {name}: expected {expected}, got {got:?}"),
        }
    }
    assert_eq!(kept, out.batch.num_rows());
}

#[test]
fn component_is_idempotent_on_its_own_output() {
    let cases = cases();
    let events: Vec<Value> = cases.iter().map(|c| c["event"].clone()).collect();
    let mut first = runner(&DeclaredSchema::web_vitals());
    let once = first.process(&decode_all(&events));
    let mut second = runner(first.output_schema());
    let twice = second.process(&once.batch);
    assert!(twice.excluded.is_empty(), "{:?}", twice.excluded);
    assert_eq!(twice.batch, once.batch);
}

#[test]
fn instance_is_reused_across_many_batches() {
    let cases = cases();
    let events: Vec<Value> = cases.iter().map(|c| c["event"].clone()).collect();
    let batch = decode_all(&events);
    let mut runner = runner(&DeclaredSchema::web_vitals());
    let first = runner.process(&batch);
    for _ in 0..200 {
        let again = runner.process(&batch);
        assert_eq!(again.batch, first.batch);
        assert_eq!(again.excluded, first.excluded);
    }
}
