//! The state shared by the consume loop and the rebalance callback: the
//! partition buffers, the plugin, the lake. Flushing a partition writes its
//! data and dead-letter files, then one commit record with a create-only
//! put; a conflict means another host owns the range, so the buffer is
//! dropped and the partition resumes after the winner's commit.

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
    CommitOutcome, CommitRecord, CommittedFile, DeadLetter, FileKind, FileMetadata, Lake,
    LakeError, dead_letters_batch, encode_parquet, split_by_partition,
};
use crate::pipeline::Pipeline;
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
    /// commit records written.
    pub commits: u64,
    /// flushes abandoned because another host had committed the range.
    pub conflicts: u64,
    /// milliseconds from the first message to the end of the run.
    pub busy_ms: Option<u64>,
}

pub(crate) type PartitionKey = (Arc<str>, i32);

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

impl Core {
    pub fn new(
        pipeline: Pipeline,
        lake: Lake,
        runner: PluginRunner,
        rt: Handle,
    ) -> Result<Self, String> {
        let column = &pipeline.config.lake.partition_by;
        let partition_column = runner
            .output_schema()
            .fields()
            .iter()
            .position(|f| &f.name == column)
            .ok_or_else(|| {
                format!(
                    "lake.partition_by: the plugin's output has no column `{column}` (output: {})",
                    runner.output_schema()
                )
            })?;
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
        let column = &self.pipeline.config.lake.partition_by;
        let position = runner
            .output_schema()
            .fields()
            .iter()
            .position(|f| &f.name == column)
            .ok_or_else(|| format!("the new version's output has no column `{column}`"))?;
        if self.partitions.values().any(|b| !b.is_empty()) {
            return Err("rows of the old version are still buffered".into());
        }
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

    /// One message from Kafka; returns the partition it belongs to (if assigned here).
    pub fn on_message(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        payload: &[u8],
    ) -> Option<PartitionKey> {
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
            return None;
        };
        let buffer = self.partitions.get_mut(&key).expect("found above");
        if offset < buffer.next_offset {
            return Some(key); // already in the lake or in this buffer (a replay after seek)
        }
        buffer.note_message(offset, payload.len());
        match buffer.decoder.push(payload) {
            Ok(()) => buffer.decoded_raw.push(offset, timestamp, payload),
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
        Some(key)
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

    /// Flush and commit one partition. Storage failures are retried with
    /// backoff until they pass (or until the shutdown deadline).
    pub fn flush<C: ConsumerContext>(
        &mut self,
        key: &PartitionKey,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), LakeError> {
        if self.partitions.get(key).is_none_or(|b| b.is_empty()) {
            return Ok(());
        }
        self.run_plugin(key);
        let started = Instant::now();
        let files = self.encode(key);
        let buffer = self.partitions.get(key).expect("assigned partition");
        let first = buffer.first_offset.expect("not empty");
        let record = CommitRecord {
            version: 1,
            pipeline: self.pipeline.config.name.clone(),
            topic: buffer.topic.to_string(),
            partition: buffer.partition,
            chain_offset: buffer.chain_offset,
            first_offset: first,
            last_offset: buffer.last_offset,
            next_offset: buffer.last_offset + 1,
            files: files.iter().map(|(f, _)| f.clone()).collect(),
            plugin_digest: self.runner.plugin().digest.clone(),
            weir_version: crate::VERSION.to_string(),
            committed_at: chrono::Utc::now().to_rfc3339(),
            read: buffer.read,
            kept: buffer.kept_rows as u64,
            dropped: buffer.dropped,
            dead_lettered: buffer.dead.len() as u64,
        };
        let label = buffer.label();
        for (file, bytes) in &files {
            self.retry(&label, || self.lake.put(&file.path, bytes.clone()))?;
        }
        let flushed = started.elapsed();
        let outcome = self.retry(&label, || self.lake.commit(&record))?;
        if let Some(m) = &self.metrics {
            m.flush_seconds.observe(flushed);
            m.commit_seconds.observe(started.elapsed() - flushed);
            record_commit(m, &record, outcome);
        }
        match outcome {
            CommitOutcome::Committed => {
                let s = &mut self.summary;
                s.read += record.read;
                s.kept += record.kept;
                s.dropped += record.dropped;
                s.dead_lettered += record.dead_lettered;
                s.files += record.files.len() as u64;
                s.bytes += record.files.iter().map(|f| f.bytes).sum::<u64>();
                s.commits += 1;
                tracing::info!(
                    partition = %label, first = record.first_offset, last = record.last_offset, kept = record.kept,
                    dead_lettered = record.dead_lettered, files = record.files.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64, "committed"
                );
                if let Err(e) = self.rt.block_on(self.lake.set_latest_hint(&record)) {
                    tracing::debug!(partition = %label, error = %e, "latest-commit hint not written (readers list instead)");
                }
                let buffer = self.partitions.get_mut(key).expect("assigned partition");
                buffer.reset(record.next_offset, record.next_offset);
                let mut tpl = TopicPartitionList::new();
                let _ = tpl.add_partition_offset(
                    &record.topic,
                    record.partition,
                    Offset::Offset(record.next_offset),
                );
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    tracing::debug!(partition = %label, error = %e, "kafka offset hint not committed");
                }
            }
            CommitOutcome::Conflict => {
                self.summary.conflicts += 1;
                let last = self.retry(&label, || {
                    self.lake.last_commit(&record.topic, record.partition)
                })?;
                let next = last.map_or(0, |c| c.next_offset);
                tracing::warn!(
                    partition = %label, chain_offset = record.chain_offset, resume_at = next,
                    "another host committed this range first; dropping uncommitted work"
                );
                let buffer = self.partitions.get_mut(key).expect("assigned partition");
                buffer.reset(next, next);
                if let Err(e) = consumer.seek(
                    &record.topic,
                    record.partition,
                    Offset::Offset(next),
                    Duration::from_secs(5),
                ) {
                    tracing::debug!(partition = %label, error = %e, "seek after conflict failed");
                }
            }
        }
        Ok(())
    }

    /// Encode one partition's buffered output as files (not yet written).
    fn encode(&self, key: &PartitionKey) -> Vec<(CommittedFile, bytes::Bytes)> {
        let buffer = &self.partitions[key];
        let lake = &self.pipeline.config.lake;
        let first = buffer.first_offset.expect("not empty");
        let meta = FileMetadata {
            plugin_digest: self.runner.plugin().digest.clone(),
            topic: buffer.topic.to_string(),
            partition: buffer.partition,
            first_offset: first,
            last_offset: buffer.last_offset,
        };
        let mut by_value: std::collections::BTreeMap<String, Vec<RecordBatch>> = Default::default();
        for batch in &buffer.kept {
            for (value, part) in split_by_partition(batch, self.partition_column) {
                by_value.entry(value).or_default().push(part);
            }
        }
        let mut files = Vec::new();
        for (value, batches) in by_value {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let bytes = encode_parquet(&batches, &lake.compression, lake.row_group_rows, &meta)
                .expect("encoding in memory");
            let path = meta.data_path(&lake.partition_by, &value);
            files.push((
                CommittedFile {
                    path,
                    kind: FileKind::Data,
                    partition_value: Some(value),
                    rows: rows as u64,
                    bytes: bytes.len() as u64,
                },
                bytes,
            ));
        }
        if !buffer.dead.is_empty() {
            let batch = dead_letters_batch(&buffer.dead);
            let bytes = encode_parquet(&[batch], &lake.compression, lake.row_group_rows, &meta)
                .expect("encoding in memory");
            let path = meta.dead_letter_path();
            files.push((
                CommittedFile {
                    path,
                    kind: FileKind::DeadLetters,
                    partition_value: None,
                    rows: buffer.dead.len() as u64,
                    bytes: bytes.len() as u64,
                },
                bytes,
            ));
        }
        files
    }

    /// Run `op` until it succeeds, backing off between failures, for at most
    /// `ingest.retry_window_ms` (and never past the shutdown deadline).
    fn retry<T, F, Fut>(&self, label: &str, op: F) -> Result<T, LakeError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, LakeError>>,
    {
        let cfg = &self.pipeline.config.ingest;
        let mut delay = Duration::from_millis(cfg.retry_initial_ms);
        let mut attempt = 1u32;
        let give_up = Instant::now() + Duration::from_millis(cfg.retry_window_ms);
        loop {
            match self.rt.block_on(op()) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let next = Instant::now() + delay;
                    if next > give_up || self.deadline.is_some_and(|d| next > d) {
                        return Err(e);
                    }
                    tracing::warn!(partition = label, attempt, retry_in_ms = delay.as_millis() as u64, error = %e, "lake write failed; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(cfg.retry_max_ms));
                    attempt += 1;
                }
            }
        }
    }

    /// New partitions: resume each after its last commit record.
    pub fn assign<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        assigned: &TopicPartitionList,
    ) {
        let mut tpl = TopicPartitionList::new();
        for elem in assigned.elements() {
            let (topic, partition) = (elem.topic().to_string(), elem.partition());
            let label = format!("{topic}/{partition}");
            let last = match self.retry(&label, || self.lake.last_commit(&topic, partition)) {
                Ok(last) => last,
                Err(e) => {
                    tracing::error!(partition = %label, error = %e, "cannot read the commit log; not consuming this partition");
                    continue;
                }
            };
            let (chain, next) = last.map_or((0, 0), |c| (c.next_offset, c.next_offset));
            let offset = if next == 0 {
                Offset::Beginning
            } else {
                Offset::Offset(next)
            };
            let _ = tpl.add_partition_offset(&topic, partition, offset);
            tracing::info!(partition = %label, resume_at = next, "partition assigned");
            let buffer = PartitionBuffer::new(
                topic.as_str().into(),
                partition,
                chain,
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
        for elem in revoked.elements() {
            let Some(key) = self
                .partitions
                .keys()
                .find(|(t, p)| &**t == elem.topic() && *p == elem.partition())
                .cloned()
            else {
                continue;
            };
            if let Err(e) = self.flush(&key, consumer) {
                tracing::warn!(partition = %format!("{}/{}", key.0, key.1), error = %e, "flush on revoke failed; the next owner re-reads the range");
            }
            self.partitions.remove(&key);
            tracing::info!(partition = %format!("{}/{}", key.0, key.1), "partition revoked");
        }
        if let Err(e) = consumer.unassign() {
            tracing::error!(error = %e, "unassigning partitions failed");
        }
    }
}

/// Count a commit (or a conflict) in the metrics.
fn record_commit(m: &crate::telemetry::Metrics, record: &CommitRecord, outcome: CommitOutcome) {
    use std::sync::atomic::Ordering::Relaxed;
    if outcome != CommitOutcome::Committed {
        m.commit_conflicts.fetch_add(1, Relaxed);
        return;
    }
    m.events_read.fetch_add(record.read, Relaxed);
    m.events_kept.fetch_add(record.kept, Relaxed);
    m.events_dropped.fetch_add(record.dropped, Relaxed);
    m.events_dead_lettered
        .fetch_add(record.dead_lettered, Relaxed);
    m.files_written
        .fetch_add(record.files.len() as u64, Relaxed);
    m.bytes_written
        .fetch_add(record.files.iter().map(|f| f.bytes).sum::<u64>(), Relaxed);
    m.commits.fetch_add(1, Relaxed);
}
