//! `weir plugin check` and `weir plugin bench`: run a plugin over sample
//! events (JSON lines, decoded exactly as the ingest path decodes them) and
//! report verdicts, idempotence and speed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use serde::Serialize;

use super::{LoadedPlugin, PluginEngine, PluginError, PluginRunner, Verdict};
use crate::decode::JsonDecoder;
use crate::pipeline::DeclaredSchema;

/// Sample events decoded into batches, plus the lines that did not decode.
#[derive(Debug)]
pub struct Sample {
    /// decoded batches of at most `batch_size` rows.
    pub batches: Vec<RecordBatch>,
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
            refused: BTreeMap::new(),
            lines: 0,
            bytes: 0,
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            sample.lines += 1;
            sample.bytes += line.len() as u64;
            if let Err(e) = decoder.push(line.as_bytes()) {
                *sample.refused.entry(e.reason()).or_default() += 1;
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
    /// events rejected (by decoding or by the plugin).
    pub rejected: u64,
    /// reason → count, over drops and rejects.
    pub reasons: BTreeMap<String, u64>,
    /// whether running the plugin on its own output changed nothing.
    pub idempotent: bool,
    /// what differed, when not idempotent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotence_problem: Option<String>,
}

/// Run the checks of `weir plugin check`.
pub fn check(
    engine: &Arc<PluginEngine>,
    plugin: &Arc<LoadedPlugin>,
    input: &DeclaredSchema,
    config: &[(String, String)],
    sample: &Sample,
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
        reasons: sample.refused.clone(),
        idempotent: true,
        idempotence_problem: None,
    };
    let mut kept = Vec::new();
    for batch in &sample.batches {
        let processed = runner.process(batch);
        report.kept += processed.batch.num_rows() as u64;
        for e in &processed.excluded {
            match e.verdict {
                Verdict::Drop => report.dropped += 1,
                Verdict::Reject => report.rejected += 1,
            }
            *report.reasons.entry(e.reason.to_string()).or_default() += 1;
        }
        kept.push(processed.batch);
    }
    report.idempotence_problem = idempotence_problem(engine, plugin, &output, config, &kept)?;
    report.idempotent = report.idempotence_problem.is_none();
    Ok(report)
}

/// Feed the plugin its own output; `None` when nothing changes.
fn idempotence_problem(
    engine: &Arc<PluginEngine>,
    plugin: &Arc<LoadedPlugin>,
    output: &DeclaredSchema,
    config: &[(String, String)],
    first: &[RecordBatch],
) -> Result<Option<String>, PluginError> {
    let mut again = PluginRunner::new(engine.clone(), plugin.clone(), output, config)?;
    if again.output_schema() != output {
        return Ok(Some(format!(
            "given its own output schema, the plugin declares a different one: {}",
            again.output_schema()
        )));
    }
    for (i, batch) in first.iter().enumerate() {
        let second = again.process(batch);
        if let Some(e) = second.excluded.first() {
            return Ok(Some(format!(
                "batch {i}: row {} of its own output was excluded again: {}",
                e.row, e.reason
            )));
        }
        if second.batch != *batch {
            let n = first_difference(batch, &second.batch);
            return Ok(Some(format!(
                "batch {i}: row {n} changed when processed a second time"
            )));
        }
    }
    Ok(None)
}

fn first_difference(a: &RecordBatch, b: &RecordBatch) -> usize {
    (0..a.num_rows().min(b.num_rows()))
        .find(|&r| a.slice(r, 1) != b.slice(r, 1))
        .unwrap_or(a.num_rows().min(b.num_rows()))
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
    // warm-up
    for b in &sample.batches {
        runner.process(b);
    }
    let started = Instant::now();
    let mut events = 0u64;
    for _ in 0..repeat.max(1) {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let n = batch_size.min(batch.num_rows() - offset);
            runner.process(&batch.slice(offset, n));
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
    })
}
