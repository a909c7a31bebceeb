//! `weir plugin check` and `weir plugin bench`: run a plugin over sample
//! events (JSON lines, decoded exactly as the ingest path decodes them) and
//! report verdicts, idempotence and speed.
//!
//! `check` is a gate for a plugin's CI: it fails on contract breaks, traps,
//! timeouts, running out of memory, failed batches, non-idempotence, a
//! rejected share over the threshold and (given a pipeline) output columns
//! the pipeline needs; failures are grouped by class with one example each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::Array;
use arrow::compute::concat_batches;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::Serialize;

use super::{FailureKind, LoadedPlugin, PluginEngine, PluginError, PluginRunner, Verdict};
use crate::decode::JsonDecoder;
use crate::pipeline::DeclaredSchema;

/// Sample events decoded into batches, plus the lines that did not decode.
#[derive(Debug)]
pub struct Sample {
    /// decoded batches of at most `batch_size` rows.
    pub batches: Vec<RecordBatch>,
    /// for each decoded row, in batch order: its line number (from 1).
    pub line_of_row: Vec<u64>,
    /// decode failures: reason → count.
    pub refused: BTreeMap<String, u64>,
    /// non-empty lines read.
    pub lines: u64,
    /// bytes of those lines.
    pub bytes: u64,
}

impl Sample {
    /// Decode JSON lines (blank lines are skipped) by `schema`.
    pub fn decode(text: &str, schema: &DeclaredSchema, batch_size: usize) -> Self {
        let mut decoder = JsonDecoder::new(schema, batch_size);
        let mut sample = Sample {
            batches: Vec::new(),
            line_of_row: Vec::new(),
            refused: BTreeMap::new(),
            lines: 0,
            bytes: 0,
        };
        for (number, line) in (1u64..).zip(text.lines()) {
            if line.trim().is_empty() {
                continue;
            }
            sample.lines += 1;
            sample.bytes += line.len() as u64;
            match decoder.push(line.as_bytes()) {
                Ok(()) => sample.line_of_row.push(number),
                Err(e) => *sample.refused.entry(e.reason()).or_default() += 1,
            }
            if decoder.len() >= batch_size {
                sample.batches.push(decoder.flush());
            }
        }
        if !decoder.is_empty() {
            sample.batches.push(decoder.flush());
        }
        sample
    }
}

/// How `weir plugin check` judges a plugin.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// The largest share of the decoded events the plugin may reject
    /// (its own `reject` verdicts) before the check fails.
    pub max_rejected_share: f64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_rejected_share: 0.5,
        }
    }
}

/// One class of failure `weir plugin check` found, with an example.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Failure {
    /// `timeout`, `out-of-memory`, `trap`, `refused-batch`, `contract`,
    /// `not-idempotent`, `rejected-share` or `pipeline`.
    pub class: String,
    /// events it concerns (0 when it concerns no single event).
    pub events: u64,
    /// one example: the reason or problem.
    pub example: String,
    /// the sample line of the example, when it is an event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

/// What `weir plugin check` reports.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// plugin file name.
    pub plugin: String,
    /// sha256 of the plugin.
    pub digest: String,
    /// WIT versions this host accepts.
    pub accepted_versions: Vec<String>,
    /// the schema the plugin declared, `name: type[?]`.
    pub output_schema: Vec<String>,
    /// events kept.
    pub kept: u64,
    /// events dropped by the plugin.
    pub dropped: u64,
    /// events rejected (by decoding, by the plugin, or isolated after a
    /// failed call).
    pub rejected: u64,
    /// events the plugin itself rejected.
    pub plugin_rejected: u64,
    /// `plugin_rejected` over the decoded events.
    pub plugin_rejected_share: f64,
    /// reason → count, over drops and rejects.
    pub reasons: BTreeMap<String, u64>,
    /// whether running the plugin on its own output changed nothing.
    pub idempotent: bool,
    /// what differed, when not idempotent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotence_problem: Option<String>,
    /// what failed, by class; empty when the check passes.
    pub failures: Vec<Failure>,
    /// whether the plugin passed: no failure of any class.
    pub passed: bool,
}

/// Run the checks of `weir plugin check`. `requirements` are the problems
/// a pipeline finds with an output schema (`Pipeline::output_problems`).
pub fn check(
    engine: &Arc<PluginEngine>,
    plugin: &Arc<LoadedPlugin>,
    input: &DeclaredSchema,
    config: &[(String, String)],
    sample: &Sample,
    options: CheckOptions,
    requirements: &dyn Fn(&DeclaredSchema) -> Vec<String>,
) -> Result<CheckReport, PluginError> {
    let mut runner = PluginRunner::new(engine.clone(), plugin.clone(), input, config)?;
    let output = runner.output_schema().clone();
    let mut report = CheckReport {
        plugin: plugin.name.clone(),
        digest: plugin.digest.clone(),
        accepted_versions: super::ACCEPTED_VERSIONS
            .iter()
            .map(|v| format!("weir:preprocess@{v}"))
            .collect(),
        output_schema: output
            .fields()
            .iter()
            .map(|f| format!("{}: {}{}", f.name, f.ty, if f.nullable { "?" } else { "" }))
            .collect(),
        kept: 0,
        dropped: 0,
        rejected: sample.refused.values().sum(),
        plugin_rejected: 0,
        plugin_rejected_share: 0.0,
        reasons: sample.refused.clone(),
        idempotent: true,
        idempotence_problem: None,
        failures: requirements(&output)
            .into_iter()
            .map(|problem| Failure {
                class: "pipeline".into(),
                events: 0,
                example: problem,
                line: None,
            })
            .collect(),
        passed: false,
    };
    let mut by_class: BTreeMap<FailureKind, Failure> = BTreeMap::new();
    let mut kept = Vec::new();
    let mut rows_before = 0;
    for batch in &sample.batches {
        let lines = &sample.line_of_row[rows_before..rows_before + batch.num_rows()];
        rows_before += batch.num_rows();
        let processed = runner.process(batch);
        report.kept += processed.batch.num_rows() as u64;
        for e in &processed.excluded {
            match (e.verdict, e.failure) {
                (Verdict::Drop, _) => report.dropped += 1,
                (Verdict::Reject, None) => {
                    report.rejected += 1;
                    report.plugin_rejected += 1;
                }
                (Verdict::Reject, Some(_)) => report.rejected += 1,
            }
            *report.reasons.entry(e.reason.to_string()).or_default() += 1;
            if let Some(kind) = e.failure {
                by_class
                    .entry(kind)
                    .or_insert_with(|| Failure {
                        class: kind.to_string(),
                        events: 0,
                        example: e.reason.to_string(),
                        line: lines.get(e.row).copied(),
                    })
                    .events += 1;
            }
        }
        let mut excluded = processed.excluded.iter().map(|e| e.row).peekable();
        let kept_lines: Vec<u64> = (0..batch.num_rows())
            .filter(|&row| {
                let out = excluded.peek() == Some(&row);
                if out {
                    excluded.next();
                }
                !out
            })
            .map(|row| lines[row])
            .collect();
        kept.push((processed.batch, kept_lines));
    }
    report.failures.extend(by_class.into_values());
    let decoded = sample.line_of_row.len() as u64;
    if decoded > 0 {
        report.plugin_rejected_share = report.plugin_rejected as f64 / decoded as f64;
    }
    if report.plugin_rejected_share > options.max_rejected_share {
        report.failures.push(Failure {
            class: "rejected-share".into(),
            events: report.plugin_rejected,
            example: format!(
                "the plugin rejected {:.1}% of the decoded events (at most {:.1}% allowed: --max-rejected-share)",
                report.plugin_rejected_share * 100.0,
                options.max_rejected_share * 100.0
            ),
            line: None,
        });
    }
    report.idempotence_problem = idempotence_problem(engine, plugin, &output, config, &kept);
    report.idempotent = report.idempotence_problem.is_none();
    if let Some(problem) = &report.idempotence_problem {
        report.failures.push(Failure {
            class: "not-idempotent".into(),
            events: 0,
            example: problem.clone(),
            line: None,
        });
    }
    report.passed = report.failures.is_empty();
    Ok(report)
}

/// Feed the plugin its own output (the second pass); `None` when nothing
/// changes, else what did: the pass, the row's sample line, the column and
/// both values.
fn idempotence_problem(
    engine: &Arc<PluginEngine>,
    plugin: &Arc<LoadedPlugin>,
    output: &DeclaredSchema,
    config: &[(String, String)],
    first: &[(RecordBatch, Vec<u64>)],
) -> Option<String> {
    let mut again = match PluginRunner::new(engine.clone(), plugin.clone(), output, config) {
        Ok(runner) => runner,
        Err(e) => {
            let reason = match e {
                PluginError::Init { reason, .. } => reason,
                other => other.to_string(),
            };
            return Some(format!(
                "second pass (the plugin run on its own output): init with its own output schema failed: {reason}"
            ));
        }
    };
    if again.output_schema() != output {
        return Some(format!(
            "second pass (the plugin run on its own output): given its own output schema, the plugin declares a different one: {}",
            again.output_schema()
        ));
    }
    for (batch, lines) in first {
        let second = again.process(batch);
        if let Some(e) = second.excluded.first() {
            let verdict = match e.verdict {
                Verdict::Drop => "dropped",
                Verdict::Reject => "rejected",
            };
            return Some(format!(
                "second pass (the plugin run on its own output): the event of line {} was kept by the first pass and {verdict} by the second: {}",
                lines[e.row], e.reason
            ));
        }
        if second.batch != *batch
            && let Some((row, column, before, after)) = first_difference(batch, &second.batch)
        {
            return Some(format!(
                "second pass (the plugin run on its own output): the event of line {}, column `{column}` changed from {before} to {after}",
                lines[row]
            ));
        }
    }
    None
}

/// The first cell that differs: row, column name, both values as text.
fn first_difference(a: &RecordBatch, b: &RecordBatch) -> Option<(usize, String, String, String)> {
    let options = FormatOptions::default().with_null("null");
    let show = |batch: &RecordBatch, column: usize, row: usize| -> String {
        let array = batch.column(column);
        let text = ArrayFormatter::try_new(array.as_ref(), &options)
            .map(|f| f.value(row).to_string())
            .unwrap_or_else(|e| format!("<{e}>"));
        if array.is_null(row) || !matches!(array.data_type(), DataType::Utf8) {
            text
        } else {
            format!("{text:?}")
        }
    };
    let rows = a.num_rows().min(b.num_rows());
    for row in 0..rows {
        for column in 0..a.num_columns().min(b.num_columns()) {
            if a.column(column).slice(row, 1) != b.column(column).slice(row, 1) {
                let name = a.schema().field(column).name().clone();
                return Some((row, name, show(a, column, row), show(b, column, row)));
            }
        }
    }
    None
}

/// What `weir plugin bench` reports.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// plugin file name.
    pub plugin: String,
    /// `.wasm` size in bytes.
    pub component_bytes: usize,
    /// compile time without cache, in milliseconds.
    pub compile_ms: f64,
    /// instantiate + `init`, in milliseconds.
    pub startup_ms: f64,
    /// events run through `process`.
    pub events: u64,
    /// events per second through the plugin (decoding excluded).
    pub events_per_sec: f64,
    /// events per second of JSON decoding alone, for scale.
    pub decode_events_per_sec: f64,
    /// MB/s of JSON decoded.
    pub decode_mb_per_sec: f64,
    /// calls that failed (trap, timeout, contract break, ...): a plugin
    /// that fails has no meaningful throughput.
    pub failed_calls: u64,
    /// one of those failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_example: Option<String>,
}

/// How `weir plugin bench` runs.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    /// events per `process` call.
    pub batch_size: usize,
    /// passes over the input.
    pub repeat: usize,
}

/// Run the plugin over `text` `options.repeat` times and time it.
pub fn bench(
    engine: &Arc<PluginEngine>,
    name: &str,
    bytes: &[u8],
    input: &DeclaredSchema,
    config: &[(String, String)],
    text: &str,
    options: BenchOptions,
) -> Result<BenchReport, PluginError> {
    let BenchOptions { batch_size, repeat } = options;
    let cold = PluginEngine::with_cache_dir(engine.limits().clone(), None)?;
    let started = Instant::now();
    cold.load_bytes(name, bytes)?;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let plugin = engine.load_bytes(name, bytes)?;
    let started = Instant::now();
    let mut runner = PluginRunner::new(engine.clone(), plugin, input, config)?;
    let startup_ms = started.elapsed().as_secs_f64() * 1e3;

    let started = Instant::now();
    let sample = Sample::decode(text, input, batch_size);
    let decode_secs = started.elapsed().as_secs_f64().max(1e-9);
    let batch = match sample.batches.as_slice() {
        [] => RecordBatch::new_empty(input.arrow().clone()),
        batches => concat_batches(input.arrow(), batches).expect("same schema"),
    };
    // warm-up, and the failures a benchmark must not hide
    let mut failed_calls = 0u64;
    let mut failure_example = None;
    for b in &sample.batches {
        let processed = runner.process(b);
        failed_calls += processed.failed_calls as u64;
        if failure_example.is_none() {
            failure_example = processed
                .excluded
                .iter()
                .find(|e| e.failure.is_some())
                .map(|e| e.reason.to_string());
        }
    }
    let started = Instant::now();
    let mut events = 0u64;
    for _ in 0..repeat.max(1) {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let n = batch_size.min(batch.num_rows() - offset);
            failed_calls += runner.process(&batch.slice(offset, n)).failed_calls as u64;
            events += n as u64;
            offset += n;
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    Ok(BenchReport {
        plugin: name.to_string(),
        component_bytes: bytes.len(),
        compile_ms,
        startup_ms,
        events,
        events_per_sec: events as f64 / secs,
        decode_events_per_sec: sample.lines as f64 / decode_secs,
        decode_mb_per_sec: sample.bytes as f64 / decode_secs / 1e6,
        failed_calls,
        failure_example,
    })
}
