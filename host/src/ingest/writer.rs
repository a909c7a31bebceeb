//! The Kafka-free half of ingest: what one worker does with the messages of
//! the partitions it owns. It decodes them against the declared schema,
//! runs them through its own plugin instance in batches, and on request
//! stages a partition's rows as Parquet files with that partition's share
//! of the next Delta commit, and goes on taking messages. It never touches
//! the network: the coordinator ([`super::core`]) uploads and commits what
//! it stages, then tells it where each partition now stands
//! ([`Writer::committed`], or [`Writer::reset`] when another writer won).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::buffer::{PartitionBuffer, RawMessages, file_metadata};
use super::files::{Failure, FileLayout};
use crate::lake::{
    DeadLetter, LakeError, PartitionFlush, Resume, StagedFile, TableKind, dead_letters_batch,
    encode_parquet,
};
use crate::pipeline::{DeclaredSchema, Pipeline};
use crate::plugin::{PluginRunner, Verdict};
use crate::telemetry::Metrics;

/// A Kafka partition: its topic and number.
pub(crate) type PartitionKey = (Arc<str>, i32);

/// One file staged for a table, not yet written.
pub(crate) struct FileBytes {
    /// which table it belongs to.
    pub table: TableKind,
    /// path relative to the table root.
    pub path: String,
    /// the encoded Parquet file.
    pub bytes: Bytes,
}

/// A partition's rows since its last commit, as files and as its share of
/// the commit.
pub(crate) struct Staged {
    /// the partition.
    pub key: PartitionKey,
    /// its share of the commit (files, offsets, the `txn` precondition).
    pub part: PartitionFlush,
    /// the files to upload before the commit.
    pub files: Vec<FileBytes>,
    /// what it carries.
    pub counts: Counts,
}

/// What one partition's flush carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub read: u64,
    pub kept: u64,
    pub dropped: u64,
    pub dead_lettered: u64,
    pub files: u64,
    pub bytes: u64,
}

impl Counts {
    /// Add `other` to these counts.
    pub fn add(&mut self, other: &Counts) {
        self.read += other.read;
        self.kept += other.kept;
        self.dropped += other.dropped;
        self.dead_lettered += other.dead_lettered;
        self.files += other.files;
        self.bytes += other.bytes;
    }

    /// The counts written into a commit's `commitInfo`.
    pub fn as_map(&self) -> BTreeMap<&'static str, u64> {
        [
            ("read", self.read),
            ("kept", self.kept),
            ("dropped", self.dropped),
            ("dead_lettered", self.dead_lettered),
        ]
        .into_iter()
        .collect()
    }
}

/// The position of the partition column in a plugin's output, or what
/// is wrong with it (the pipeline's requirement, as `weir validate` says it).
pub(crate) fn partition_column(
    pipeline: &Pipeline,
    output: &DeclaredSchema,
) -> Result<usize, String> {
    let requirement = pipeline.partition_requirement();
    if let Some(problem) = requirement.problem(output) {
        return Err(problem);
    }
    output
        .fields()
        .iter()
        .position(|f| f.name == requirement.column)
        .ok_or(requirement.key)
}

/// One worker's partitions and plugin instance.
pub(crate) struct Writer {
    runner: PluginRunner,
    /// how the plugin's output becomes files.
    layout: FileLayout,
    /// the declared input schema (each partition's decoder).
    schema: DeclaredSchema,
    batch_rows: usize,
    partitions: HashMap<PartitionKey, PartitionBuffer>,
    metrics: Option<Arc<Metrics>>,
}

impl Writer {
    /// A writer for `pipeline` running `runner`; refused when the plugin's
    /// output lacks the partition column.
    pub fn new(
        pipeline: &Pipeline,
        runner: PluginRunner,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, String> {
        let partition_column = partition_column(pipeline, runner.output_schema())
            .map_err(|problem| format!("{problem} (output: {})", runner.output_schema()))?;
        Ok(Writer {
            layout: layout_of(pipeline, &runner, partition_column),
            runner,
            schema: pipeline.schema.clone(),
            batch_rows: pipeline.config.ingest.batch_rows,
            partitions: HashMap::new(),
            metrics,
        })
    }

    /// Take a partition, resuming from the tables' `txn` versions.
    pub fn assign(&mut self, key: PartitionKey, resume: Resume, next_offset: i64) {
        let buffer = PartitionBuffer::new(
            key.0.clone(),
            key.1,
            resume,
            next_offset,
            &self.schema,
            self.batch_rows,
        );
        self.partitions.insert(key, buffer);
    }

    /// Give a partition up (what it held is dropped: flush it first).
    pub fn remove(&mut self, key: &PartitionKey) {
        self.partitions.remove(key);
    }

    /// The memory the partitions hold for their next stage.
    pub fn held_bytes(&self) -> usize {
        self.partitions
            .values()
            .map(PartitionBuffer::held_bytes)
            .sum()
    }

    /// Whether every partition is empty.
    pub fn is_empty(&self) -> bool {
        self.partitions.values().all(PartitionBuffer::is_empty)
    }

    /// Take a run of messages of one partition. Replays of offsets already
    /// held are skipped. When offsets were skipped before a message, the
    /// answer is the offset the consumer must re-read from; nothing past it
    /// is taken until the coordinator says the seek was made
    /// ([`Writer::seeked`]) and the expected offset arrives (or the gap
    /// comes back: then it is the log's own).
    pub fn take(&mut self, key: &PartitionKey, messages: RawMessages) -> Option<i64> {
        let batch_rows = self.batch_rows;
        let Some(buffer) = self.partitions.get_mut(key) else {
            tracing::debug!(partition = %format!("{}/{}", key.0, key.1), "messages of a partition this worker does not own; ignored");
            return None;
        };
        let mut reread = None;
        for row in 0..messages.len() {
            let (offset, timestamp, payload) = messages.get(row);
            match admit(buffer, offset) {
                Admit::Take => {}
                Admit::Skip => continue,
                Admit::Reread(expected) => {
                    tracing::warn!(
                        partition = %buffer.label(), expected, received = offset,
                        "offsets skipped; re-reading from the expected one"
                    );
                    reread = Some(expected);
                    continue;
                }
            }
            buffer.note_message(offset);
            // dead letters up to the dead-letter table's txn version are in it
            // already (a crash between the two commits): a replay skips them
            let dead_done = buffer.resume.dead.is_some_and(|d| offset <= d);
            match buffer.decoder.push(payload) {
                Ok(()) => buffer.decoded.push((buffer.runs.len() as u32, row as u32)),
                Err(_) if dead_done => {}
                Err(e) => buffer.dead_letter(DeadLetter {
                    topic: buffer.topic.clone(),
                    partition: key.1,
                    offset,
                    kafka_timestamp: timestamp,
                    stage: "decode",
                    reason: e.reason(),
                    payload: payload.to_vec(),
                }),
            }
            if buffer.decoder.len() >= batch_rows {
                run_plugin(
                    &mut self.runner,
                    buffer,
                    Some(&messages),
                    &self.layout,
                    self.metrics.as_deref(),
                );
            }
        }
        // kept while rows of it wait for the plugin
        if buffer
            .decoded
            .last()
            .is_some_and(|(run, _)| *run as usize == buffer.runs.len())
        {
            buffer.runs.push(messages);
        }
        reread
    }

    /// The consumer of `key` was sent back to the offset asked for (`made`),
    /// or the seek failed: the next gap asks again.
    pub fn seeked(&mut self, key: &PartitionKey, made: bool) {
        if let Some(buffer) = self.partitions.get_mut(key) {
            buffer.seek_pending = false;
            if !made {
                buffer.gap_reread = None;
            }
        }
    }

    /// Stage every partition of `keys` holding something: the rest of its
    /// rows through the plugin, then its data files (one per partition
    /// value, encoded as the rows came) are finished and its dead-letter
    /// file is encoded, all in memory. Then the buffers let go of what was
    /// staged and go on taking messages: the coordinator holds the files
    /// until they are committed ([`Writer::committed`]), or drops them when
    /// another writer won ([`Writer::reset`]). When a file fails to encode,
    /// the stage fails, and so does every later one of its partition and of
    /// those whose files were finished before it (they went with the
    /// failed stage): nothing is committed past the failure.
    pub fn stage(&mut self, keys: &[PartitionKey]) -> Result<Vec<Staged>, LakeError> {
        let held = |key| self.partitions.get(key).filter(|b| !b.is_empty());
        if let Some(failed) = keys.iter().find_map(|key| held(key)?.files.failure()) {
            return Err(failed.clone().into());
        }
        let mut staged = Vec::new();
        for key in keys {
            let Some(buffer) = self.partitions.get_mut(key).filter(|b| !b.is_empty()) else {
                continue;
            };
            run_plugin(
                &mut self.runner,
                buffer,
                None,
                &self.layout,
                self.metrics.as_deref(),
            );
            match encode(key, buffer, &self.layout) {
                Ok(s) => staged.push(s),
                Err(failed) => {
                    // the files finished before it go with the failed stage
                    let finished = staged.iter().map(|s: &Staged| &s.key).chain([key]);
                    for key in finished {
                        if let Some(buffer) = self.partitions.get_mut(key) {
                            buffer.files.poison(&failed);
                        }
                    }
                    return Err(failed.into());
                }
            }
        }
        for s in &staged {
            if let Some(buffer) = self.partitions.get_mut(&s.key) {
                buffer.detach();
            }
        }
        Ok(staged)
    }

    /// What `key` staged last is in the tables, which now stand at `resume`.
    pub fn committed(&mut self, key: &PartitionKey, resume: Resume) {
        if let Some(buffer) = self.partitions.get_mut(key) {
            buffer.committed(resume);
        }
    }

    /// The tables stand at `resume` for `key` and what it holds is dropped
    /// (another writer committed first); consumption goes on at
    /// `next_offset`.
    pub fn reset(&mut self, key: &PartitionKey, resume: Resume, next_offset: i64) {
        if let Some(buffer) = self.partitions.get_mut(key) {
            buffer.reset(resume, next_offset);
        }
    }

    /// Run another plugin version from now on; every buffer must be empty
    /// and the new version's output must carry the partition column.
    pub fn replace_runner(
        &mut self,
        pipeline: &Pipeline,
        runner: PluginRunner,
    ) -> Result<(), String> {
        let position = partition_column(pipeline, runner.output_schema())
            .map_err(|problem| format!("the new version: {problem}"))?;
        if !self.is_empty() {
            return Err("rows of the old version are still buffered".into());
        }
        self.layout = layout_of(pipeline, &runner, position);
        self.runner = runner;
        Ok(())
    }
}

/// What to do with a message at some offset.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// the next one: buffer it.
    Take,
    /// a replay of what is held, or fetched before a seek asked for.
    Skip,
    /// offsets were skipped before it: re-read from this one.
    Reread(i64),
}

/// Whether `buffer` takes a message at `offset`. Replays of offsets
/// already held are skipped. When offsets were skipped (the consumer ran
/// ahead of the buffer: a seek after a conflict that did not take, or
/// messages fetched before it, or the log has none there), taking it would
/// commit the gap as done, so the consumer is sent back to the expected
/// offset once, and nothing past it is taken until the seek was made; a gap
/// that comes back after that is the log's own (compaction, transaction
/// markers) and is accepted.
fn admit(buffer: &mut PartitionBuffer, offset: i64) -> Admit {
    if offset < buffer.next_offset {
        return Admit::Skip;
    }
    if offset == buffer.next_offset || !buffer.anchored {
        return Admit::Take;
    }
    if buffer.seek_pending {
        return Admit::Skip;
    }
    if buffer.gap_reread == Some(buffer.next_offset) {
        return Admit::Take;
    }
    let expected = buffer.next_offset;
    buffer.gap_reread = Some(expected);
    buffer.seek_pending = true;
    Admit::Reread(expected)
}

/// Run the decoded rows of one partition through the plugin; `taking` is
/// the run being taken (not yet in `buffer.runs`), if any.
fn run_plugin(
    runner: &mut PluginRunner,
    buffer: &mut PartitionBuffer,
    taking: Option<&RawMessages>,
    layout: &FileLayout,
    metrics: Option<&Metrics>,
) {
    if buffer.decoder.is_empty() {
        return;
    }
    let batch = buffer.decoder.flush();
    let started = metrics.map(|_| Instant::now());
    let processed = runner.process(&batch);
    if let (Some(m), Some(started)) = (metrics, started) {
        m.plugin_batch_seconds.observe(started.elapsed());
        let drops = processed
            .excluded
            .iter()
            .filter(|e| e.verdict == Verdict::Drop);
        m.dropped(drops.map(|e| &*e.reason));
    }
    for e in processed.excluded {
        match e.verdict {
            Verdict::Drop => buffer.dropped += 1,
            Verdict::Reject => {
                let (run, row) = buffer.decoded[e.row];
                let Some(messages) = buffer.runs.get(run as usize).or(taking) else {
                    continue;
                };
                let (offset, kafka_timestamp, payload) = messages.get(row as usize);
                if buffer.resume.dead.is_some_and(|d| offset <= d) {
                    continue;
                }
                buffer.dead_letter(DeadLetter {
                    topic: buffer.topic.clone(),
                    partition: buffer.partition,
                    offset,
                    kafka_timestamp,
                    stage: "plugin",
                    reason: e.reason.to_string(),
                    payload: payload.to_vec(),
                });
            }
        }
    }
    buffer.runs.clear();
    buffer.decoded.clear();
    buffer.keep(&processed.batch, layout);
}

/// How `runner`'s output becomes files in `pipeline`'s lake.
fn layout_of(pipeline: &Pipeline, runner: &PluginRunner, partition_column: usize) -> FileLayout {
    FileLayout::new(
        &pipeline.config.lake,
        &runner.plugin().digest,
        partition_column,
        runner.output_schema().fields().len(),
    )
}

/// Finish one partition's files and encode its dead letters (not yet
/// written), with its share of the cycle's commit.
fn encode(
    key: &PartitionKey,
    buffer: &mut PartitionBuffer,
    layout: &FileLayout,
) -> Result<Staged, Failure> {
    let lake = &layout.lake;
    let first = buffer.first_offset.unwrap_or(buffer.last_offset);
    let last = buffer.last_offset;
    let meta = buffer.files.metadata(last, || {
        file_metadata(&buffer.topic, buffer.partition, first, last, &layout.digest)
    });
    let finished = buffer.files.finish(layout, &meta)?;
    let mut part = PartitionFlush {
        topic: buffer.topic.to_string(),
        partition: buffer.partition,
        expected: buffer.resume,
        last_offset: buffer.last_offset,
        data_files: Vec::new(),
        dead_files: Vec::new(),
    };
    let mut files = Vec::with_capacity(finished.len() + 1);
    for file in finished {
        part.data_files.push(StagedFile {
            path: file.path.clone(),
            partition_value: Some(file.value),
            rows: file.rows,
            bytes: file.bytes.len() as u64,
        });
        files.push(FileBytes {
            table: TableKind::Data,
            path: file.path,
            bytes: file.bytes,
        });
    }
    if !buffer.dead.is_empty() {
        let batch = dead_letters_batch(&buffer.dead);
        let path = meta.dead_letter_path();
        let bytes = encode_parquet(&[batch], lake.into(), &meta).map_err(|e| Failure {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        part.dead_files.push(StagedFile {
            path: path.clone(),
            partition_value: None,
            rows: buffer.dead.len() as u64,
            bytes: bytes.len() as u64,
        });
        files.push(FileBytes {
            table: TableKind::DeadLetters,
            path,
            bytes,
        });
    }
    let counts = Counts {
        read: buffer.read,
        kept: buffer.kept_rows as u64,
        dropped: buffer.dropped,
        dead_lettered: buffer.dead.len() as u64,
        files: files.len() as u64,
        bytes: files.iter().map(|f| f.bytes.len() as u64).sum(),
    };
    Ok(Staged {
        key: key.clone(),
        part,
        files,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{DeclaredSchema, FieldSpec, FieldType};

    fn buffer(resume: Resume) -> PartitionBuffer {
        let schema =
            DeclaredSchema::new(vec![FieldSpec::new("event_id", FieldType::String, false)])
                .unwrap();
        PartitionBuffer::new("t".into(), 0, resume, resume.next_offset(), &schema, 16)
    }

    fn take(b: &mut PartitionBuffer, offset: i64) -> Admit {
        let admitted = admit(b, offset);
        if admitted == Admit::Take {
            b.note_message(offset);
        }
        admitted
    }

    #[test]
    fn a_fresh_partition_takes_whatever_offset_comes_first() {
        let mut b = buffer(Resume::default());
        assert_eq!(take(&mut b, 7), Admit::Take); // compacted or retained from 7
        assert_eq!(take(&mut b, 8), Admit::Take);
        assert_eq!(take(&mut b, 8), Admit::Skip);
    }

    #[test]
    fn a_gap_is_reread_once_and_nothing_past_it_taken_until_the_seek() {
        let mut b = buffer(Resume {
            data: Some(9),
            dead: None,
        });
        assert_eq!(take(&mut b, 5), Admit::Skip, "in the lake already");
        assert_eq!(take(&mut b, 10), Admit::Take);
        assert_eq!(take(&mut b, 13), Admit::Reread(11));
        // fetched before the seek: not taken, not asked again
        assert_eq!(take(&mut b, 14), Admit::Skip);
        assert_eq!(take(&mut b, 15), Admit::Skip);
        // the seek was made; the gap comes back: it is the log's own
        b.seek_pending = false;
        assert_eq!(take(&mut b, 13), Admit::Take);
        assert_eq!(b.next_offset, 14);
        // a later gap asks again
        assert_eq!(take(&mut b, 20), Admit::Reread(14));
    }

    #[test]
    fn after_the_seek_the_expected_offset_is_taken() {
        let mut b = buffer(Resume {
            data: Some(0),
            dead: None,
        });
        assert_eq!(take(&mut b, 3), Admit::Reread(1));
        b.seek_pending = false;
        for offset in 1..=3 {
            assert_eq!(take(&mut b, offset), Admit::Take);
        }
        assert_eq!(b.read, 3);
    }

    #[test]
    fn a_staged_partition_goes_on_from_where_it_stood() {
        let mut b = buffer(Resume {
            data: Some(9),
            dead: None,
        });
        for offset in 10..=12 {
            assert_eq!(take(&mut b, offset), Admit::Take);
        }
        b.detach();
        assert!(b.is_empty());
        assert_eq!(b.next_offset, 13);
        assert_eq!(take(&mut b, 12), Admit::Skip, "staged already");
        assert_eq!(take(&mut b, 13), Admit::Take);
        assert_eq!((b.first_offset, b.read), (Some(13), 1));
        // the staged rows are in: the next stage expects this version
        b.committed(Resume {
            data: Some(12),
            dead: None,
        });
        assert_eq!(b.resume.data, Some(12));
        assert_eq!(b.first_offset, Some(13), "what came after stays");
        // another writer won: what came after the stage goes as well
        b.reset(
            Resume {
                data: Some(20),
                dead: None,
            },
            21,
        );
        assert!(b.is_empty());
        assert_eq!(take(&mut b, 14), Admit::Skip);
        assert_eq!(take(&mut b, 21), Admit::Take);
    }

    #[test]
    fn counts_add_up_and_name_what_the_commit_records() {
        let mut total = Counts::default();
        let one = Counts {
            read: 5,
            kept: 3,
            dropped: 1,
            dead_lettered: 1,
            files: 2,
            bytes: 100,
        };
        total.add(&one);
        total.add(&one);
        assert_eq!(total.read, 10);
        assert_eq!(total.bytes, 200);
        let map = total.as_map();
        assert_eq!(
            map.keys().copied().collect::<Vec<_>>(),
            ["dead_lettered", "dropped", "kept", "read"]
        );
        assert_eq!(map["kept"], 6);
    }
}
