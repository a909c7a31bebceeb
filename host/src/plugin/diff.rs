//! `weir plugin diff`: run two plugins over the same events and report every
//! event whose verdict, reason or cleaned output differs. This is how two
//! implementations of the same rules (say Rust and Python) are held to one
//! behaviour.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::Serialize;

use super::{LoadedPlugin, PluginEngine, PluginError, PluginRunner, Processed, Verdict};
use crate::decode::JsonDecoder;
use crate::pipeline::DeclaredSchema;

/// One event the two plugins disagree on.
#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    /// 1-based line number in the input.
    pub line: usize,
    /// the input line.
    pub input: String,
    /// what the first plugin made of it.
    pub left: String,
    /// what the second plugin made of it.
    pub right: String,
}

/// What `weir plugin diff` reports.
#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    /// events compared (lines that decoded).
    pub events: u64,
    /// lines the decoder refused (identical for both plugins).
    pub undecodable: u64,
    /// events that differ.
    pub differing: u64,
    /// count per kind of difference (`verdict`, `reason`, `output`).
    pub kinds: BTreeMap<String, u64>,
    /// the declared output schemas, when they differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_difference: Option<String>,
    /// the first differences in full.
    pub examples: Vec<Difference>,
}

/// The outcome of one event, rendered for comparison and display.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Keep(String),
    Drop(String),
    Reject(String),
}

impl Outcome {
    fn text(&self) -> String {
        match self {
            Outcome::Keep(row) => format!("keep {{{row}}}"),
            Outcome::Drop(reason) => format!("drop: {reason}"),
            Outcome::Reject(reason) => format!("reject: {reason}"),
        }
    }
}

/// Run `left` and `right` over `text` (JSON lines) and compare them.
pub fn diff(
    engine: &Arc<PluginEngine>,
    left: (&Arc<LoadedPlugin>, &[(String, String)]),
    right: (&Arc<LoadedPlugin>, &[(String, String)]),
    schema: &DeclaredSchema,
    text: &str,
    batch_size: usize,
    max_examples: usize,
) -> Result<DiffReport, PluginError> {
    let mut a = PluginRunner::new(engine.clone(), left.0.clone(), schema, left.1)?;
    let mut b = PluginRunner::new(engine.clone(), right.0.clone(), schema, right.1)?;
    let mut report = DiffReport {
        events: 0,
        undecodable: 0,
        differing: 0,
        kinds: BTreeMap::new(),
        schema_difference: None,
        examples: Vec::new(),
    };
    if a.output_schema() != b.output_schema() {
        report.schema_difference = Some(format!(
            "left: {}\nright: {}",
            a.output_schema(),
            b.output_schema()
        ));
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut decoder = JsonDecoder::new(schema, batch_size);
    let mut pending: Vec<usize> = Vec::with_capacity(batch_size);
    let mut compare = |pending: &mut Vec<usize>, batch: RecordBatch, report: &mut DiffReport| {
        let (oa, ob) = (outcomes(&a.process(&batch)), outcomes(&b.process(&batch)));
        for ((left, right), &line) in oa.iter().zip(&ob).zip(pending.iter()) {
            report.events += 1;
            if left == right {
                continue;
            }
            report.differing += 1;
            let kind = match (left, right) {
                (Outcome::Keep(_), Outcome::Keep(_)) => "output",
                (Outcome::Drop(_), Outcome::Drop(_)) | (Outcome::Reject(_), Outcome::Reject(_)) => {
                    "reason"
                }
                _ => "verdict",
            };
            *report.kinds.entry(kind.to_string()).or_default() += 1;
            if report.examples.len() < max_examples {
                report.examples.push(Difference {
                    line: line + 1,
                    input: lines[line].to_string(),
                    left: left.text(),
                    right: right.text(),
                });
            }
        }
        pending.clear();
    };
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match decoder.push(line.as_bytes()) {
            Ok(()) => pending.push(i),
            Err(_) => report.undecodable += 1,
        }
        if decoder.len() >= batch_size {
            compare(&mut pending, decoder.flush(), &mut report);
        }
    }
    if !decoder.is_empty() {
        compare(&mut pending, decoder.flush(), &mut report);
    }
    Ok(report)
}

/// Per input row: its verdict, reason or rendered output row.
fn outcomes(processed: &Processed) -> Vec<Outcome> {
    let rows = processed.batch.num_rows() + processed.excluded.len();
    let options = FormatOptions::default().with_null("null");
    // timestamps are UTC; format them without the zone (no tz database here)
    let naive = DataType::Timestamp(TimeUnit::Millisecond, None);
    let columns: Vec<ArrayRef> = processed
        .batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Timestamp(..) => cast(c, &naive).expect("timestamp casts to naive"),
            _ => c.clone(),
        })
        .collect();
    let formatters: Vec<ArrayFormatter<'_>> = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("supported types format"))
        .collect();
    let schema = processed.batch.schema();
    let mut excluded = processed.excluded.iter().peekable();
    let mut kept = 0;
    (0..rows)
        .map(|row| match excluded.next_if(|e| e.row == row) {
            Some(e) if e.verdict == Verdict::Drop => Outcome::Drop(e.reason.to_string()),
            Some(e) => Outcome::Reject(e.reason.to_string()),
            None => {
                let text = schema
                    .fields()
                    .iter()
                    .zip(&formatters)
                    .map(|(f, fmt)| format!("{}: {}", f.name(), fmt.value(kept)))
                    .collect::<Vec<_>>()
                    .join(", ");
                kept += 1;
                Outcome::Keep(text)
            }
        })
        .collect()
}
