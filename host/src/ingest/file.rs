//! Ingest from a file of JSON lines through the same coordinator and
//! workers as Kafka, with no broker: `weir bench ingest --source`, to
//! measure the worker pipeline by itself. Lines are dealt in runs to
//! `partitions` partitions of a topic named after the file (offsets count
//! each partition's lines), so every worker gets its share; the lake's
//! `txn` versions say where each partition resumes, as with Kafka. A run
//! is read from the file straight into the buffer its worker takes, so
//! the coordinator neither copies nor handles each line.

use std::io::Read;
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
    let mut lines = open(path)?;
    // timed from the first line (opening the tables is not the stream's work)
    let started = Instant::now();
    for p in (0..offsets.len()).cycle() {
        let (resume_at, ref mut next) = offsets[p];
        let run = lines.run(DEAL, next).map_err(read_error(path))?;
        if run.is_empty() {
            break; // the end of the file
        }
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
    // (after the measured span: every commit is in the log by now)
    core.finish_reads();
    Ok(summary)
}

/// A source read in runs of lines, each read straight into the buffer
/// its worker takes.
struct Lines<R> {
    reader: R,
    /// bytes read past the last run's last line.
    carry: Vec<u8>,
    /// the least one read asks for (a run reads past its last line by
    /// less than this, mostly).
    min_read: usize,
    /// the bytes of the last run: the next one is sized like it.
    last_bytes: usize,
}

impl<R: Read> Lines<R> {
    /// Runs of `reader`, the first sized for `first_bytes`.
    fn new(reader: R, min_read: usize, first_bytes: usize) -> Self {
        Lines {
            reader,
            carry: Vec::new(),
            min_read,
            last_bytes: first_bytes,
        }
    }

    /// The next run of up to `max` non-empty lines, at offsets counting up
    /// from `*next`: empty at the end.
    fn run(&mut self, max: usize, next: &mut i64) -> std::io::Result<RawMessages> {
        // a little more than the last run took, so that the last read of a
        // run rarely has to grow the buffer (a copy of all of it)
        let bytes = self.last_bytes;
        let room = bytes + bytes / 16 + 4 * self.min_read;
        let mut run = RawMessages::with_capacity(max, room);
        run.read_lines(&mut self.reader, max, next, &mut self.carry, self.min_read)?;
        self.last_bytes = run.bytes();
        Ok(run)
    }
}

/// The source file, read in runs of [`DEAL`] lines (of about 512 bytes
/// each, to begin with).
fn open(path: &Path) -> Result<Lines<std::fs::File>, IngestError> {
    let input = std::fs::File::open(path).map_err(read_error(path))?;
    Ok(Lines::new(input, 16 << 10, DEAL * 512))
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
    let mut lines = open(path)?;
    let (mut next, mut bytes) = (0, 0u64);
    loop {
        let run = lines.run(DEAL, &mut next).map_err(read_error(path))?;
        if run.is_empty() {
            return Ok(bytes);
        }
        bytes += run.bytes() as u64;
        for row in 0..run.len() {
            each(run.get(row).2)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that gives at most `block` bytes per read.
    struct Blocks<'a>(&'a [u8], usize);

    impl Read for Blocks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Every run of `text` read `block` bytes at a time, reads of at least
    /// `block` bytes, the first run sized for `bytes`, as (offset, line)
    /// pairs.
    fn runs(text: &[u8], block: usize, max: usize, bytes: usize) -> Vec<Vec<(i64, String)>> {
        let mut lines = Lines::new(Blocks(text, block), block, bytes);
        let mut next = 10;
        let mut all = Vec::new();
        loop {
            let run = lines.run(max, &mut next).unwrap();
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
        let want: Vec<(i64, String)> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (10 + i as i64, l.to_string()))
            .collect();
        for block in 1..=text.len() + 1 {
            for max in 1..=6 {
                for bytes in [0, 9, 100] {
                    let got = runs(text, block, max, bytes);
                    let case = format!("block {block}, runs of {max}, room {bytes}");
                    assert!(got.iter().all(|run| run.len() <= max), "{case}");
                    let flat: Vec<(i64, String)> = got.into_iter().flatten().collect();
                    assert_eq!(flat, want, "{case}");
                }
            }
        }
    }

    #[test]
    fn a_resumed_run_keeps_only_what_is_not_in_the_lake() {
        let mut lines = Lines::new(&b"a\nb\nc\nd\n"[..], 16, 0);
        let mut next = 0;
        let run = lines.run(10, &mut next).unwrap();
        let rest = run.starting_at(2);
        assert_eq!(rest.len(), 2);
        assert_eq!(rest.get(0), (2, None, &b"c"[..]));
        assert_eq!(rest.get(1), (3, None, &b"d"[..]));
        assert_eq!(next, 4);
    }
}
