//! Ingest from a file of JSON lines through the same coordinator and
//! workers as Kafka, with no broker: `weir bench ingest --source`, to
//! measure the worker pipeline by itself. Lines are dealt in runs to
//! `partitions` partitions of a topic named after the file (offsets count
//! each partition's lines), so every worker gets its share; the lake's
//! `txn` versions say where each partition resumes, as with Kafka. A run
//! is read a block at a time straight into the buffer its worker takes,
//! so the coordinator does not copy or handle each line.

use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use super::buffer::RawMessages;
use super::core::{Core, IngestSummary, ReadOnce};
use super::run::{IngestError, load_plugin};
use crate::lake::Lake;
use crate::pipeline::Pipeline;
use crate::plugin::{PluginEngine, PluginRunner};

/// Lines dealt to one partition before the next partition's turn (a run's
/// worth: every worker's queue is fed in turn).
const DEAL: usize = super::core::RUN_MESSAGES;

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
    let mut reader = open(path)?;
    // a run's buffer is sized like the one before it
    let mut run_bytes = DEAL * 512;
    // timed from the first line (opening the tables is not the stream's work)
    let started = Instant::now();
    for p in (0..offsets.len()).cycle() {
        let (resume_at, ref mut next) = offsets[p];
        let run = read_run(&mut reader, DEAL, next, run_bytes).map_err(read_error(path))?;
        if run.is_empty() {
            break; // the end of the file
        }
        run_bytes = run.bytes();
        core.on_run(p, run.starting_at(resume_at))?;
        let cycle = core.rolling(p);
        if !cycle.is_empty() {
            core.flush(&cycle, &ReadOnce)?;
        }
        core.collect(&ReadOnce)?;
        if core.over_buffer_cap() {
            let all = core.non_empty();
            core.flush(&all, &ReadOnce)?;
        }
    }
    let read = Instant::now();
    core.send_all_pending()?;
    let all = core.non_empty();
    core.flush_now(&all, &ReadOnce)?;
    let mut summary = core.summary.clone();
    summary.busy_ms = Some(started.elapsed().as_millis() as u64);
    summary.final_flush_ms = Some(read.elapsed().as_millis() as u64);
    Ok(summary)
}

/// The next run of up to `max` non-empty lines of `reader`, at offsets
/// counting up from `*next`, sized for `bytes`: empty at the end. Lines are
/// copied a block at a time; only one that straddles two blocks is copied
/// twice.
fn read_run(
    reader: &mut impl BufRead,
    max: usize,
    next: &mut i64,
    bytes: usize,
) -> std::io::Result<RawMessages> {
    let mut run = RawMessages::with_capacity(max, bytes);
    // the start of a line the last block ended in
    let mut partial = Vec::new();
    while run.len() < max {
        let block = reader.fill_buf()?;
        let (used, more) = if block.is_empty() {
            // the last line has no line end
            if !partial.is_empty() {
                partial.push(b'\n');
                run.take_lines(&partial, 1, next);
            }
            break;
        } else if !partial.is_empty() {
            // the rest of the line
            let end = memchr::memchr(b'\n', block).map_or(block.len(), |end| end + 1);
            partial.extend_from_slice(&block[..end]);
            if partial.ends_with(b"\n") {
                run.take_lines(&partial, 1, next);
                partial.clear();
            }
            (end, true)
        } else {
            let used = run.take_lines(block, max - run.len(), next);
            if run.len() < max {
                // what is left is the start of a line
                partial.extend_from_slice(&block[used..]);
                (block.len(), true)
            } else {
                (used, false)
            }
        };
        reader.consume(used);
        if !more {
            break;
        }
    }
    Ok(run)
}

/// The source file, buffered for [`read_run`].
fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>, IngestError> {
    let input = std::fs::File::open(path).map_err(read_error(path))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, input))
}

/// How a failure to read `path` is reported.
fn read_error(path: &Path) -> impl Fn(std::io::Error) -> IngestError + '_ {
    move |e| IngestError::Config {
        file: path.display().to_string(),
        message: format!("cannot read the source: {e}"),
    }
}

/// Call `each` with every non-empty line of `path` (without its line end),
/// read in runs as ingest reads them; the bytes read.
pub(crate) fn for_each_line(
    path: &Path,
    mut each: impl FnMut(&[u8]) -> Result<(), IngestError>,
) -> Result<u64, IngestError> {
    let mut reader = open(path)?;
    let (mut next, mut bytes, mut run_bytes) = (0, 0u64, DEAL * 512);
    loop {
        let run = read_run(&mut reader, DEAL, &mut next, run_bytes).map_err(read_error(path))?;
        if run.is_empty() {
            return Ok(bytes);
        }
        run_bytes = run.bytes();
        bytes += run_bytes as u64;
        for row in 0..run.len() {
            each(run.get(row).2)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;

    /// Every run of `text` read through a buffer of `capacity` bytes, as
    /// (offset, line) pairs.
    fn runs(text: &[u8], capacity: usize, max: usize) -> Vec<Vec<(i64, String)>> {
        let mut reader = BufReader::with_capacity(capacity, text);
        let mut next = 10;
        let mut all = Vec::new();
        loop {
            let run = read_run(&mut reader, max, &mut next, 0).unwrap();
            if run.is_empty() {
                return all;
            }
            all.push(
                (0..run.len())
                    .map(|r| {
                        let (offset, _, line) = run.get(r);
                        (offset, String::from_utf8(line.to_vec()).unwrap())
                    })
                    .collect(),
            );
        }
    }

    #[test]
    fn runs_hold_every_line_whatever_the_block_size() {
        let text = b"{\"a\":1}\r\n\n{\"b\":22}\n\n\n{\"c\":333}\r\n{\"d\":4444}\n{\"e\":5}";
        let lines = [
            "{\"a\":1}",
            "{\"b\":22}",
            "{\"c\":333}",
            "{\"d\":4444}",
            "{\"e\":5}",
        ];
        for capacity in 1..=text.len() + 1 {
            for max in 1..=6 {
                let got = runs(text, capacity, max);
                assert!(got.iter().all(|run| run.len() <= max), "{capacity}/{max}");
                let flat: Vec<(i64, String)> = got.into_iter().flatten().collect();
                let want: Vec<(i64, String)> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (10 + i as i64, l.to_string()))
                    .collect();
                assert_eq!(flat, want, "block {capacity}, runs of {max}");
            }
        }
    }

    #[test]
    fn a_resumed_run_keeps_only_what_is_not_in_the_lake() {
        let mut reader = BufReader::new(&b"a\nb\nc\nd\n"[..]);
        let mut next = 0;
        let run = read_run(&mut reader, 10, &mut next, 0).unwrap();
        let rest = run.starting_at(2);
        assert_eq!(rest.len(), 2);
        assert_eq!(rest.get(0), (2, None, &b"c"[..]));
        assert_eq!(rest.get(1), (3, None, &b"d"[..]));
        assert_eq!(next, 4);
    }
}
