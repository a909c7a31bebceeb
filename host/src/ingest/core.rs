//! The state shared by the consume loop and the rebalance callback: the
//! partition buffers, the plugin, the lake. A flush cycle writes the data
//! and dead-letter files of every partition due, then makes one Delta commit
//! per table for all of them (a `txn` action per Kafka partition). A
//! partition another host committed first is dropped from the cycle and
//! resumes after the winner.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::runtime::Handle;

use super::buffer::PartitionBuffer;
use crate::lake::{
    DeadLetter, FileMetadata, Lake, LakeError, PartitionFlush, PartitionOutcome, Provenance,
    SchemaChange, StagedFile, TableKind, dead_letter_schema, dead_letters_batch, encode_parquet,
    split_by_partition,
};
use crate::pipeline::{DeclaredSchema, Pipeline};
use crate::plugin::{PluginRunner, Verdict};

/// Counts reported at exit (`--json` keys as named).
#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestSummary {
    /// messages read from Kafka (each counted once per commit).
    pub read: u64,
    /// events kept and written to the lake.
    pub kept: u64,
    /// events the plugin dropped.
    pub dropped: u64,
    /// messages written to the dead letters.
    pub dead_lettered: u64,
    /// files written (data and dead letters).
    pub files: u64,
    /// bytes written.
    pub bytes: u64,
    /// Delta commits of the data table.
    pub commits: u64,
    /// partition flushes dropped because another host had committed them first.
    pub conflicts: u64,
    /// milliseconds from the first message to the end of the run.
    pub busy_ms: Option<u64>,
}

pub(crate) type PartitionKey = (Arc<str>, i32);

/// How long a seek may wait for the fetcher to take the new position.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// What became of one message (see [`Core::on_message`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// buffered for its partition, or skipped as already committed.
    Buffered(PartitionKey),
    /// not taken: offsets before it were skipped; re-read from this one.
    Reread(PartitionKey, i64),
    /// not a partition assigned here.
    NotAssigned,
}

pub(crate) struct Core {
    pub pipeline: Pipeline,
    pub lake: Lake,
    pub runner: PluginRunner,
    pub rt: Handle,
    pub partitions: HashMap<PartitionKey, PartitionBuffer>,
    pub summary: IngestSummary,
    /// position of the partition column in the plugin's output.
    partition_column: usize,
    /// give up retrying after this instant (set at shutdown).
    pub deadline: Option<Instant>,
    /// where counters and latencies go, inside the service.
    pub metrics: Option<Arc<crate::telemetry::Metrics>>,
}

/// The position of the partition column in a plugin's output, or what
/// is wrong with it (the pipeline's requirement, as `weir validate` says it).
fn partition_column(pipeline: &Pipeline, output: &DeclaredSchema) -> Result<usize, String> {
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

impl Core {
    pub fn new(
        pipeline: Pipeline,
        lake: Lake,
        runner: PluginRunner,
        rt: Handle,
    ) -> Result<Self, String> {
        let partition_column = partition_column(&pipeline, runner.output_schema())
            .map_err(|problem| format!("{problem} (output: {})", runner.output_schema()))?;
        Ok(Core {
            pipeline,
            lake,
            runner,
            rt,
            partitions: HashMap::new(),
            summary: IngestSummary::default(),
            partition_column,
            deadline: None,
            metrics: None,
        })
    }

    /// Switch to another plugin (validated by the caller); every buffer
    /// must be empty. The digest now in use, or why not.
    pub fn replace_runner(&mut self, runner: PluginRunner) -> Result<String, String> {
        let position = partition_column(&self.pipeline, runner.output_schema())
            .map_err(|problem| format!("the new version: {problem}"))?;
        if self.partitions.values().any(|b| !b.is_empty()) {
            return Err("rows of the old version are still buffered".into());
        }
        // the table must take the new version's output: the same columns,
        // or (plugin.allow_schema_change) new nullable ones added to it
        let schema = runner.output_schema().arrow().clone();
        let change = SchemaChange::allowed(self.pipeline.config.plugin.allow_schema_change);
        let table = self.lake.table_mut(TableKind::Data);
        let accepted = match change {
            SchemaChange::AddNullableColumns => self.rt.block_on(table.evolve(&schema)).map(|_| ()),
            SchemaChange::Refuse => table.check_schema(&schema),
        };
        accepted.map_err(|e| format!("the lake refuses the new version's output: {e}"))?;
        let old = self.runner.plugin().digest.clone();
        self.runner = runner;
        self.partition_column = position;
        let digest = self.runner.plugin().digest.clone();
        tracing::info!(old = %old, new = %digest, "plugin switched at a batch boundary");
        Ok(digest)
    }

    /// Bytes buffered over all partitions.
    pub fn buffered_bytes(&self) -> usize {
        self.partitions.values().map(|p| p.bytes).sum()
    }

    /// One message from Kafka: buffered for its partition, skipped as
    /// already in the lake, or refused because offsets were skipped before
    /// it (the consumer must re-read from the expected one).
    pub fn on_message(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        payload: &[u8],
    ) -> Taken {
        let batch_rows = self.pipeline.config.ingest.batch_rows;
        let Some(key) = self
            .partitions
            .keys()
            .find(|(t, p)| &**t == topic && *p == partition)
            .cloned()
        else {
            tracing::debug!(
                topic,
                partition,
                offset,
                "message of a partition not assigned here; ignored"
            );
            return Taken::NotAssigned;
        };
        let buffer = self.partitions.get_mut(&key).expect("found above");
        if offset < buffer.next_offset {
            return Taken::Buffered(key); // already in the lake or in this buffer (a replay after seek)
        }
        if offset > buffer.next_offset
            && buffer.anchored
            && buffer.gap_reread != Some(buffer.next_offset)
        {
            // offsets skipped: the consumer ran ahead of this buffer (a seek
            // after a conflict that did not take, or messages fetched before
            // it) or the log has none there. Taking this message would
            // commit the gap as done, so re-read from the expected offset
            // once; a gap that comes back is the log's own.
            let expected = buffer.next_offset;
            buffer.gap_reread = Some(expected);
            tracing::warn!(
                partition = %buffer.label(), expected, received = offset,
                "offsets skipped; re-reading from the expected one"
            );
            return Taken::Reread(key, expected);
        }
        buffer.note_message(offset, payload.len());
        // dead letters up to the dead-letter table's txn version are in it
        // already (a crash between the two commits): a replay skips them
        let dead_done = buffer.resume.dead.is_some_and(|d| offset <= d);
        match buffer.decoder.push(payload) {
            Ok(()) => buffer.decoded_raw.push(offset, timestamp, payload),
            Err(_) if dead_done => {}
            Err(e) => buffer.dead.push(DeadLetter {
                topic: buffer.topic.clone(),
                partition,
                offset,
                kafka_timestamp: timestamp,
                stage: "decode",
                reason: e.reason(),
                payload: payload.to_vec(),
            }),
        }
        if buffer.decoder.len() >= batch_rows {
            self.run_plugin(&key);
        }
        Taken::Buffered(key)
    }

    /// Send the consumer of `key` back to `offset`. When the seek does not
    /// take, the next gap asks again (nothing past `offset` is taken until
    /// the consumer delivers it or the log shows it has none).
    pub fn reread<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        key: &PartitionKey,
        offset: i64,
    ) {
        if let Err(e) = consumer.seek(&key.0, key.1, Offset::Offset(offset), SEEK_TIMEOUT) {
            tracing::warn!(partition = %format!("{}/{}", key.0, key.1), offset, error = %e, "seek failed; retried at the next message");
            if let Some(buffer) = self.partitions.get_mut(key) {
                buffer.gap_reread = None;
            }
        }
    }

    /// Run the decoded rows of one partition through the plugin.
    fn run_plugin(&mut self, key: &PartitionKey) {
        let buffer = self.partitions.get_mut(key).expect("assigned partition");
        if buffer.decoder.is_empty() {
            return;
        }
        let batch = buffer.decoder.flush();
        let started = Instant::now();
        let processed = self.runner.process(&batch);
        if let Some(m) = &self.metrics {
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
                    let (offset, kafka_timestamp, payload) = buffer.decoded_raw.get(e.row);
                    if buffer.resume.dead.is_some_and(|d| offset <= d) {
                        continue;
                    }
                    buffer.dead.push(DeadLetter {
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
        buffer.decoded_raw.clear();
        if processed.batch.num_rows() > 0 {
            buffer.kept_rows += processed.batch.num_rows();
            buffer.kept.push(processed.batch);
        }
    }

    /// Whether a partition should roll now: by count or size, and with
    /// `by_age` also by the age of its oldest event (the periodic sweep asks
    /// for that; the per-message check skips the clock read).
    pub fn due(&self, key: &PartitionKey, by_age: bool) -> bool {
        let Some(b) = self.partitions.get(key) else {
            return false;
        };
        let cfg = &self.pipeline.config.ingest;
        !b.is_empty()
            && (b.read as usize >= cfg.flush_rows
                || b.bytes >= cfg.flush_bytes
                || (by_age
                    && b.since
                        .is_some_and(|s| s.elapsed() >= Duration::from_millis(cfg.flush_age_ms))))
    }

    /// The partitions a flush cycle takes: every one due, plus those past
    /// half their age limit (they ride along instead of costing a commit
    /// of their own soon after). Empty when none is due.
    pub fn cycle(&self) -> Vec<PartitionKey> {
        if !self.partitions.keys().any(|k| self.due(k, true)) {
            return Vec::new();
        }
        let half = Duration::from_millis(self.pipeline.config.ingest.flush_age_ms / 2);
        self.partitions
            .iter()
            .filter(|(k, b)| self.due(k, true) || b.since.is_some_and(|s| s.elapsed() >= half))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every partition holding something.
    pub fn non_empty(&self) -> Vec<PartitionKey> {
        self.partitions
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Flush and commit the partitions `keys` in one cycle: their files
    /// first, then one commit per table. Storage failures are retried with
    /// backoff until they pass (or until the shutdown deadline).
    pub fn flush<C: ConsumerContext>(
        &mut self,
        keys: &[PartitionKey],
        consumer: &BaseConsumer<C>,
    ) -> Result<(), LakeError> {
        let keys: Vec<PartitionKey> = keys
            .iter()
            .filter(|k| self.partitions.get(*k).is_some_and(|b| !b.is_empty()))
            .cloned()
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        for key in &keys {
            self.run_plugin(key);
        }
        let started = Instant::now();
        let mut parts = Vec::with_capacity(keys.len());
        let mut counts = Counts::default();
        let mut per_partition = Vec::with_capacity(keys.len());
        for key in &keys {
            let (part, files) = self.encode(key);
            let label = self.partitions[key].label();
            for (kind, path, bytes) in &files {
                let table = match kind {
                    TableKind::Data => self.lake.data(),
                    TableKind::DeadLetters => self.lake.dead_letters(),
                };
                self.retry(&label, || async {
                    Ok(table.location().put(path, bytes.clone()).await?)
                })?;
            }
            let b = &self.partitions[key];
            let c = Counts {
                read: b.read,
                kept: b.kept_rows as u64,
                dropped: b.dropped,
                dead_lettered: b.dead.len() as u64,
                files: files.len() as u64,
                bytes: files.iter().map(|(_, _, f)| f.len() as u64).sum(),
            };
            counts.add(&c);
            per_partition.push(c);
            parts.push(part);
        }
        let flushed = started.elapsed();
        let provenance = Provenance {
            plugin_digest: self.runner.plugin().digest.clone(),
            counts: counts.as_map(),
        };
        let mut backoff = self.backoff();
        let report = loop {
            match self.rt.block_on(self.lake.commit(&mut parts, &provenance)) {
                Ok(report) => break report,
                Err(e) => backoff.wait("commit", e)?,
            }
        };
        if let Some(m) = &self.metrics {
            m.flush_seconds.observe(flushed);
            m.commit_seconds.observe(started.elapsed() - flushed);
        }
        let mut rereads = Vec::new();
        for ((key, part), (outcome, c)) in keys
            .iter()
            .zip(&parts)
            .zip(report.outcomes.iter().zip(&per_partition))
        {
            let buffer = self.partitions.get_mut(key).expect("assigned partition");
            let label = buffer.label();
            match *outcome {
                PartitionOutcome::Committed => {
                    self.summary.add(c);
                    if let Some(m) = &self.metrics {
                        record_commit(m, c);
                    }
                    let mut resume = part.expected;
                    resume.data = Some(part.last_offset);
                    let next = part.last_offset + 1;
                    buffer.reset(resume, next);
                    tracing::debug!(
                        partition = %label, last = part.last_offset, kept = c.kept,
                        dead_lettered = c.dead_lettered, files = c.files, "committed"
                    );
                    let mut tpl = TopicPartitionList::new();
                    let _ = tpl.add_partition_offset(&key.0, key.1, Offset::Offset(next));
                    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                        tracing::debug!(partition = %label, error = %e, "kafka offset hint not committed");
                    }
                }
                PartitionOutcome::Fenced(resume) => {
                    self.summary.conflicts += 1;
                    if let Some(m) = &self.metrics {
                        m.commit_conflicts
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let next = resume.next_offset();
                    tracing::warn!(
                        partition = %label, resume_at = next,
                        "another host committed this partition first; dropping uncommitted work"
                    );
                    buffer.reset(resume, next);
                    rereads.push((key.clone(), next));
                }
            }
        }
        // messages fetched past a fenced partition's resume point before its
        // seek took are refused as a gap (see `on_message`)
        for (key, next) in rereads {
            self.reread(consumer, &key, next);
        }
        if report.data_version.is_some() {
            self.summary.commits += 1;
            if let Some(m) = &self.metrics {
                m.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        tracing::info!(
            partitions = keys.len(), version = ?report.data_version, dead_letters_version = ?report.dead_version,
            kept = counts.kept, dead_lettered = counts.dead_lettered, files = counts.files,
            elapsed_ms = started.elapsed().as_millis() as u64, "flush cycle committed"
        );
        Ok(())
    }

    /// Encode one partition's buffered output as files (not yet written),
    /// and its share of the cycle's commit.
    #[allow(clippy::type_complexity)]
    fn encode(
        &self,
        key: &PartitionKey,
    ) -> (PartitionFlush, Vec<(TableKind, String, bytes::Bytes)>) {
        let buffer = &self.partitions[key];
        let lake = &self.pipeline.config.lake;
        let first = buffer.first_offset.expect("not empty");
        let meta = FileMetadata {
            plugin_digest: self.runner.plugin().digest.clone(),
            topic: buffer.topic.to_string(),
            partition: buffer.partition,
            first_offset: first,
            last_offset: buffer.last_offset,
            writer_token: FileMetadata::new_token(),
        };
        let mut by_value: std::collections::BTreeMap<String, Vec<RecordBatch>> = Default::default();
        // Delta keeps partition values in the log, not in the files
        let stored: Vec<usize> = (0..self.runner.output_schema().fields().len())
            .filter(|i| *i != self.partition_column)
            .collect();
        for batch in &buffer.kept {
            for (value, part) in split_by_partition(batch, self.partition_column) {
                let part = part.project(&stored).expect("columns in range");
                by_value.entry(value).or_default().push(part);
            }
        }
        let mut part = PartitionFlush {
            topic: buffer.topic.to_string(),
            partition: buffer.partition,
            expected: buffer.resume,
            last_offset: buffer.last_offset,
            data_files: Vec::new(),
            dead_files: Vec::new(),
        };
        let mut files = Vec::new();
        for (value, batches) in by_value {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let bytes = encode_parquet(&batches, &lake.compression, lake.row_group_rows, &meta)
                .expect("encoding in memory");
            let path = meta.data_path(&lake.partition_by, &value);
            part.data_files.push(StagedFile {
                path: path.clone(),
                partition_value: Some(value),
                rows: rows as u64,
                bytes: bytes.len() as u64,
            });
            files.push((TableKind::Data, path, bytes));
        }
        if !buffer.dead.is_empty() {
            let batch = dead_letters_batch(&buffer.dead);
            let bytes = encode_parquet(&[batch], &lake.compression, lake.row_group_rows, &meta)
                .expect("encoding in memory");
            let path = meta.dead_letter_path();
            part.dead_files.push(StagedFile {
                path: path.clone(),
                partition_value: None,
                rows: buffer.dead.len() as u64,
                bytes: bytes.len() as u64,
            });
            files.push((TableKind::DeadLetters, path, bytes));
        }
        (part, files)
    }

    /// Backoff for lake operations: at most `ingest.retry_window_ms`, never
    /// past the shutdown deadline.
    fn backoff(&self) -> Backoff {
        let cfg = &self.pipeline.config.ingest;
        Backoff {
            delay: Duration::from_millis(cfg.retry_initial_ms),
            max: Duration::from_millis(cfg.retry_max_ms),
            give_up: Instant::now() + Duration::from_millis(cfg.retry_window_ms),
            deadline: self.deadline,
            attempt: 1,
        }
    }

    /// Run `op` until it succeeds, backing off between failures.
    fn retry<T, F, Fut>(&self, label: &str, op: F) -> Result<T, LakeError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, LakeError>>,
    {
        let mut backoff = self.backoff();
        loop {
            match self.rt.block_on(op()) {
                Ok(v) => return Ok(v),
                Err(e) => backoff.wait(label, e)?,
            }
        }
    }

    /// Create the lake's tables unless they exist (the data table with the
    /// plugin's output schema).
    pub fn ensure_tables(&mut self) -> Result<(), LakeError> {
        let schema = self.runner.output_schema().arrow().clone();
        let change = SchemaChange::allowed(self.pipeline.config.plugin.allow_schema_change);
        let mut backoff = self.backoff();
        loop {
            match self.rt.block_on(
                self.lake
                    .ensure_tables(&schema, &dead_letter_schema(), change),
            ) {
                Ok(()) => return Ok(()),
                Err(e @ LakeError::Schema { .. }) => return Err(e),
                Err(e) => backoff.wait("tables", e)?,
            }
        }
    }

    /// New partitions: resume each from the tables' `txn` versions (Kafka's
    /// committed offsets are only a hint).
    pub fn assign<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        assigned: &TopicPartitionList,
    ) {
        let mut backoff = self.backoff();
        let refreshed = loop {
            match self.rt.block_on(self.lake.refresh()) {
                Ok(()) => break true,
                Err(e) => {
                    if let Err(e) = backoff.wait("assign", e) {
                        tracing::error!(error = %e, "cannot read the lake's tables; not consuming the assigned partitions");
                        break false;
                    }
                }
            }
        };
        let mut tpl = TopicPartitionList::new();
        for elem in assigned.elements() {
            let (topic, partition) = (elem.topic().to_string(), elem.partition());
            let label = format!("{topic}/{partition}");
            if !refreshed {
                continue;
            }
            let resume = match self.rt.block_on(self.lake.resume(&topic, partition)) {
                Ok(resume) => resume,
                Err(e) => {
                    tracing::error!(partition = %label, error = %e, "cannot read the table's txn versions; not consuming this partition");
                    continue;
                }
            };
            let next = resume.next_offset();
            let offset = if resume.data.is_none() {
                Offset::Beginning
            } else {
                Offset::Offset(next)
            };
            let _ = tpl.add_partition_offset(&topic, partition, offset);
            tracing::info!(partition = %label, resume_at = next, dead_letters_at = ?resume.dead, "partition assigned");
            let buffer = PartitionBuffer::new(
                topic.as_str().into(),
                partition,
                resume,
                next,
                &self.pipeline.schema,
                self.pipeline.config.ingest.batch_rows,
            );
            self.partitions
                .insert((buffer.topic.clone(), partition), buffer);
        }
        if let Err(e) = consumer.assign(&tpl) {
            tracing::error!(error = %e, "assigning partitions failed");
        }
    }

    /// Partitions taken away: flush and commit what belongs to them.
    pub fn revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        revoked: &TopicPartitionList,
    ) {
        let keys: Vec<PartitionKey> = revoked
            .elements()
            .iter()
            .filter_map(|elem| {
                self.partitions
                    .keys()
                    .find(|(t, p)| &**t == elem.topic() && *p == elem.partition())
                    .cloned()
            })
            .collect();
        if let Err(e) = self.flush(&keys, consumer) {
            tracing::warn!(error = %e, "flush on revoke failed; the next owner re-reads the range");
        }
        for key in &keys {
            self.partitions.remove(key);
            tracing::info!(partition = %format!("{}/{}", key.0, key.1), "partition revoked");
        }
        if let Err(e) = consumer.unassign() {
            tracing::error!(error = %e, "unassigning partitions failed");
        }
    }
}

/// Exponential backoff of one lake operation.
struct Backoff {
    delay: Duration,
    max: Duration,
    give_up: Instant,
    deadline: Option<Instant>,
    attempt: u32,
}

impl Backoff {
    /// Sleep before the next attempt, or give `error` back when the retry
    /// window (or the shutdown deadline) would pass.
    fn wait(&mut self, label: &str, error: LakeError) -> Result<(), LakeError> {
        let next = Instant::now() + self.delay;
        if next > self.give_up || self.deadline.is_some_and(|d| next > d) {
            return Err(error);
        }
        tracing::warn!(partition = label, attempt = self.attempt, retry_in_ms = self.delay.as_millis() as u64, error = %error, "lake write failed; retrying");
        std::thread::sleep(self.delay);
        self.delay = (self.delay * 2).min(self.max);
        self.attempt += 1;
        Ok(())
    }
}

/// What one partition's flush carried.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    read: u64,
    kept: u64,
    dropped: u64,
    dead_lettered: u64,
    files: u64,
    bytes: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.read += other.read;
        self.kept += other.kept;
        self.dropped += other.dropped;
        self.dead_lettered += other.dead_lettered;
        self.files += other.files;
        self.bytes += other.bytes;
    }

    fn as_map(&self) -> std::collections::BTreeMap<&'static str, u64> {
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

impl IngestSummary {
    fn add(&mut self, c: &Counts) {
        self.read += c.read;
        self.kept += c.kept;
        self.dropped += c.dropped;
        self.dead_lettered += c.dead_lettered;
        self.files += c.files;
        self.bytes += c.bytes;
    }
}

/// Count a committed partition in the metrics.
fn record_commit(m: &crate::telemetry::Metrics, c: &Counts) {
    use std::sync::atomic::Ordering::Relaxed;
    m.events_read.fetch_add(c.read, Relaxed);
    m.events_kept.fetch_add(c.kept, Relaxed);
    m.events_dropped.fetch_add(c.dropped, Relaxed);
    m.events_dead_lettered.fetch_add(c.dead_lettered, Relaxed);
    m.files_written.fetch_add(c.files, Relaxed);
    m.bytes_written.fetch_add(c.bytes, Relaxed);
}
