//! Ingest from a file of JSON lines through the same coordinator and
//! workers as Kafka, with no broker: `weir bench ingest --source`, to
//! measure the worker pipeline by itself. Lines are dealt in runs to
//! `partitions` partitions of a topic named after the file (offsets count
//! each partition's lines), so every worker gets its share; the lake's
//! `txn` versions say where each partition resumes, as with Kafka.

use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use super::core::{Core, IngestSummary, ReadOnce};
use super::run::{IngestError, load_plugin};
use crate::lake::Lake;
use crate::pipeline::Pipeline;
use crate::plugin::{PluginEngine, PluginRunner};

/// Lines dealt to one partition before the next partition's turn (a run's
/// worth: every worker's queue is fed in turn).
const DEAL: usize = 1024;

/// Ingest every line of `path` into the pipeline's lake, dealt over
/// `partitions` partitions, and commit it all.
pub fn ingest_file(
    pipeline: Pipeline,
    rt: &tokio::runtime::Handle,
    path: &Path,
    partitions: usize,
) -> Result<IngestSummary, IngestError> {
    let lake = Lake::open(&pipeline.config.lake, &pipeline.config.name)?;
    let engine = PluginEngine::new(pipeline.config.plugin.limits.clone())?;
    let plugin = load_plugin(&pipeline, &engine, rt)?;
    let runner = PluginRunner::new(engine, plugin, &pipeline.schema, &pipeline.plugin_config())?;
    let file = pipeline.file.display().to_string();
    let mut core = Core::new(pipeline, lake, runner, rt.clone(), None)
        .map_err(|message| IngestError::Config { file, message })?;
    core.ensure_tables()?;
    let topic = path
        .file_stem()
        .map_or_else(|| "file".into(), |s| s.to_string_lossy().into_owned());
    let wanted: Vec<(String, i32)> = (0..partitions.max(1) as i32)
        .map(|p| (topic.clone(), p))
        .collect();
    let taken = core.take_partitions(&wanted, &ReadOnce)?;
    // where each partition resumes, and how many of its lines were dealt
    let mut offsets: Vec<(i64, i64)> = taken
        .iter()
        .map(|(_, resume)| (resume.next_offset(), 0))
        .collect();
    if offsets.len() != wanted.len() {
        return Err(IngestError::Config {
            file: path.display().to_string(),
            message: "the lake's txn versions cannot be read".into(),
        });
    }
    let mut dealt = 0usize;
    // timed from the first line (opening the tables is not the stream's work)
    let started = Instant::now();
    for_each_line(path, |payload| {
        let p = (dealt / DEAL) % offsets.len();
        dealt += 1;
        let (resume_at, ref mut next) = offsets[p];
        let offset = *next;
        *next += 1;
        if offset < resume_at {
            return Ok(()); // in the lake already
        }
        let routed = core.on_message(&topic, p as i32, offset, None, payload)?;
        if let Some(i) = routed {
            let cycle = core.rolling(i);
            if !cycle.is_empty() {
                core.flush(&cycle, &ReadOnce)?;
            }
        }
        if dealt.is_multiple_of(DEAL) {
            core.collect(&ReadOnce)?;
            if core.over_buffer_cap() {
                let all = core.non_empty();
                core.flush(&all, &ReadOnce)?;
            }
        }
        Ok(())
    })?;
    let read = Instant::now();
    core.send_all_pending()?;
    let all = core.non_empty();
    core.flush_now(&all, &ReadOnce)?;
    let mut summary = core.summary.clone();
    summary.busy_ms = Some(started.elapsed().as_millis() as u64);
    summary.final_flush_ms = Some(read.elapsed().as_millis() as u64);
    Ok(summary)
}

/// Call `each` with every non-empty line of `path` (without its line end);
/// the bytes read.
pub(crate) fn for_each_line(
    path: &Path,
    mut each: impl FnMut(&[u8]) -> Result<(), IngestError>,
) -> Result<u64, IngestError> {
    let io_error = |e: std::io::Error| IngestError::Config {
        file: path.display().to_string(),
        message: format!("cannot read the source: {e}"),
    };
    let input = std::fs::File::open(path).map_err(io_error)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, input);
    let mut line = Vec::with_capacity(4096);
    let mut bytes = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io_error)?;
        if n == 0 {
            return Ok(bytes);
        }
        bytes += n as u64;
        let payload = line.strip_suffix(b"\n").unwrap_or(&line);
        let payload = payload.strip_suffix(b"\r").unwrap_or(payload);
        if !payload.is_empty() {
            each(payload)?;
        }
    }
}
