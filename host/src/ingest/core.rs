//! The coordinator of ingest: it owns the Kafka side and the lake, and the
//! [`Workers`] own the data. Messages are routed in runs to the worker that
//! holds their partition; a flush cycle asks the workers holding the
//! partitions due to stage their files (all workers at once, after which
//! they go on taking messages), then uploads every file concurrently and
//! makes one Delta commit per table for all of them (a `txn` action per
//! Kafka partition) in a task on the runtime ([`super::cycle`]), while
//! consumption goes on. One cycle is in flight at a time: the next waits
//! for it, and its outcome tells each worker where its partitions now
//! stand. A partition another host committed first is dropped (with what
//! came after its stage) and resumes after the winner. The rebalance
//! callback reaches the workers through the same commands.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::runtime::Handle;

use super::buffer::RawMessages;
use super::cycle::{Finished, Held, RetryPolicy, files_of, staged_bytes, upload_and_commit};
use super::worker::{Command, Event, StageError, StageReplies, WorkerGone, Workers};
pub(crate) use super::writer::PartitionKey;
use super::writer::{Counts, Writer};
use crate::lake::{
    CommitReport, Lake, LakeError, PartitionOutcome, Provenance, Resume, SchemaChange, TableKind,
    dead_letter_schema,
};
use crate::pipeline::{DeclaredSchema, Pipeline};
use crate::plugin::PluginRunner;

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
    /// milliseconds of them spent on the final flush, after the last
    /// message was read: the uploads and commit nothing overlaps any more.
    pub final_flush_ms: Option<u64>,
    /// workers that ran (decode, plugin, Parquet).
    pub workers: usize,
}

/// How long a seek may wait for the fetcher to take the new position.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stop without a deadline waits for the lake's read-back of
/// its last commits (see [`Core::finish_reads`]).
const FINISH_READS: Duration = Duration::from_secs(10);

/// Messages of one partition gathered before they go to its worker. A run
/// is one send on the worker's channel and one wake-up of the thread on the
/// other side (a futex wake, which costs tens of microseconds on a virtual
/// machine): runs of 4096 spend a quarter of what runs of 1024 did on them,
/// a batch of the plugin's worth of messages each.
pub(crate) const RUN_MESSAGES: usize = 4096;

/// What the coordinator needs of its source of messages: send a partition
/// back to an offset, and hear that offsets up to one were committed.
pub(crate) trait Positions {
    /// Deliver `key` again from `offset`.
    fn seek(&self, key: &PartitionKey, offset: i64) -> Result<(), String>;
    /// Everything of `key` before `next` is in the lake.
    fn committed(&self, key: &PartitionKey, next: i64);
}

impl<C: ConsumerContext> Positions for BaseConsumer<C> {
    fn seek(&self, key: &PartitionKey, offset: i64) -> Result<(), String> {
        Consumer::seek(self, &key.0, key.1, Offset::Offset(offset), SEEK_TIMEOUT)
            .map_err(|e| e.to_string())
    }

    fn committed(&self, key: &PartitionKey, next: i64) {
        // a hint for the group: the table's `txn` versions are the truth
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(&key.0, key.1, Offset::Offset(next));
        if let Err(e) = self.commit(&tpl, CommitMode::Async) {
            tracing::debug!(partition = %format!("{}/{}", key.0, key.1), error = %e, "kafka offset hint not committed");
        }
    }
}

/// A source read once from start to end (a file): nothing to seek.
pub(crate) struct ReadOnce;

impl Positions for ReadOnce {
    fn seek(&self, _: &PartitionKey, offset: i64) -> Result<(), String> {
        Err(format!(
            "a source read once cannot go back to offset {offset}"
        ))
    }

    fn committed(&self, _: &PartitionKey, _: i64) {}
}

/// Why a flush cycle did not commit.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FlushError {
    /// The lake refused or stayed unreachable past the retry window.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// A worker stopped.
    #[error(transparent)]
    Gone(#[from] WorkerGone),
    /// The task uploading and committing a cycle stopped (the runtime shut
    /// down, or a bug).
    #[error("the flush task stopped")]
    Task(#[source] tokio::task::JoinError),
}

impl From<StageError> for FlushError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::Lake(e) => FlushError::Lake(e),
            StageError::Gone(e) => FlushError::Gone(e),
        }
    }
}

/// A cycle the workers were asked to stage.
struct Staging {
    replies: StageReplies,
    /// its partitions, each with its worker.
    owned: Vec<(usize, PartitionKey)>,
    /// per partition: the messages and bytes routed to it for this cycle.
    read: Vec<(u64, usize)>,
    /// when the stage was asked for.
    started: Instant,
}

impl Staging {
    /// The bytes of the files staged by the workers that answered (the
    /// others still count what they hold among the workers' memory).
    fn bytes(&self) -> usize {
        staged_bytes(&self.replies.staged)
    }
}

/// What the coordinator knows of one assigned partition: its worker, the
/// messages not yet sent to it, and what was read since its last stage.
pub(crate) struct Track {
    pub key: PartitionKey,
    worker: usize,
    pending: RawMessages,
    /// messages and bytes routed since the last stage.
    read: u64,
    bytes: usize,
    /// when the first of them arrived.
    since: Option<Instant>,
    /// one past the highest offset routed.
    pub routed_next: i64,
    /// one past the last offset in the data table.
    pub committed_next: i64,
}

impl Track {
    /// Whether anything was read since the last stage.
    pub fn is_empty(&self) -> bool {
        self.read == 0
    }

    /// Count `messages` of `bytes` routed to this partition, up to offset
    /// `last`.
    fn routed(&mut self, messages: u64, bytes: usize, last: i64) {
        self.since.get_or_insert_with(Instant::now);
        self.read += messages;
        self.bytes += bytes;
        self.routed_next = self.routed_next.max(last + 1);
    }

    /// Forget what was read since the last stage.
    fn forget(&mut self) {
        self.read = 0;
        self.bytes = 0;
        self.since = None;
    }
}

/// The coordinator's state, shared by the consume loop and the rebalance
/// callback (both on the consumer's thread).
pub(crate) struct Core {
    pub pipeline: Pipeline,
    /// the lake (a cycle's task holds the lock while it uploads and commits).
    lake: Arc<tokio::sync::Mutex<Lake>>,
    /// the cycle the workers are staging.
    staging: Option<Staging>,
    /// the cycle staged and not yet committed (in flight, or refused).
    held: Option<Held>,
    /// the task uploading and committing `held`.
    task: Option<tokio::task::JoinHandle<Finished>>,
    pub rt: Handle,
    workers: Workers,
    /// assigned partitions (few: a linear search beats hashing per message).
    pub partitions: Vec<Track>,
    pub summary: IngestSummary,
    /// the plugin version the workers run.
    digest: String,
    output: DeclaredSchema,
    /// give up retrying after this instant (set at shutdown).
    pub deadline: Option<Instant>,
    /// where counters and latencies go, inside the service.
    pub metrics: Option<Arc<crate::telemetry::Metrics>>,
}

impl Core {
    /// Start `pipeline.config.ingest.workers` workers, each with its own
    /// instance of `runner`'s plugin.
    pub fn new(
        pipeline: Pipeline,
        lake: Lake,
        runner: PluginRunner,
        rt: Handle,
        metrics: Option<Arc<crate::telemetry::Metrics>>,
    ) -> Result<Self, String> {
        let count = pipeline.config.ingest.worker_count();
        let digest = runner.plugin().digest.clone();
        let output = runner.output_schema().clone();
        let mut writers = Vec::with_capacity(count);
        for _ in 1..count {
            let another = runner.another().map_err(|e| e.to_string())?;
            writers.push(Writer::new(&pipeline, another, metrics.clone())?);
        }
        writers.push(Writer::new(&pipeline, runner, metrics.clone())?);
        let workers = Workers::start(&pipeline, writers)
            .map_err(|e| format!("cannot start the ingest workers: {e}"))?;
        tracing::info!(workers = workers.len(), "ingest workers started");
        Ok(Core {
            summary: IngestSummary {
                workers: workers.len(),
                ..IngestSummary::default()
            },
            pipeline,
            lake: Arc::new(tokio::sync::Mutex::new(lake)),
            staging: None,
            held: None,
            task: None,
            rt,
            workers,
            partitions: Vec::new(),
            digest,
            output,
            deadline: None,
            metrics,
        })
    }

    /// The plugin version the workers run, and its output schema.
    pub fn running(&self) -> (&str, &DeclaredSchema) {
        (&self.digest, &self.output)
    }

    /// Switch to another plugin (validated by the caller); every partition
    /// must have been committed. The digest now in use, or why not.
    pub fn replace_runner(&mut self, runner: PluginRunner) -> Result<String, String> {
        super::writer::partition_column(&self.pipeline, runner.output_schema())
            .map_err(|problem| format!("the new version: {problem}"))?;
        if self.partitions.iter().any(|t| !t.is_empty()) || self.cycle_open() {
            return Err("rows of the old version are still buffered".into());
        }
        let mut lake = self.rt.block_on(self.lake.lock());
        // the table must take the new version's output: the same columns,
        // or (plugin.allow_schema_change) new nullable ones added to it
        let schema = runner.output_schema().arrow().clone();
        let change = SchemaChange::allowed(self.pipeline.config.plugin.allow_schema_change);
        let table = lake.table_mut(TableKind::Data);
        let accepted = match change {
            SchemaChange::AddNullableColumns => self.rt.block_on(table.evolve(&schema)).map(|_| ()),
            SchemaChange::Refuse => table.check_schema(&schema),
        };
        accepted.map_err(|e| format!("the lake refuses the new version's output: {e}"))?;
        let digest = runner.plugin().digest.clone();
        let output = runner.output_schema().clone();
        let mut runners = Vec::with_capacity(self.workers.len());
        for _ in 1..self.workers.len() {
            runners.push(
                runner
                    .another()
                    .map_err(|e| format!("the new version: {e}"))?,
            );
        }
        runners.push(runner);
        self.workers.swap(runners)?;
        let old = std::mem::replace(&mut self.digest, digest.clone());
        self.output = output;
        tracing::info!(old = %old, new = %digest, "plugin switched at a batch boundary");
        Ok(digest)
    }

    /// Memory held for what is not yet committed: the messages gathered
    /// here and not yet sent to a worker, what the workers hold (messages
    /// queued to them, rows waiting for the plugin, its output as Arrow
    /// holds it, dead letters), and the files of the cycle being staged or
    /// staged and not yet committed.
    pub fn buffered_bytes(&self) -> usize {
        let gathered: usize = self.partitions.iter().map(|t| t.pending.bytes()).sum();
        gathered
            + self.workers.held_bytes()
            + self.staging.as_ref().map_or(0, Staging::bytes)
            + self.held.as_ref().map_or(0, Held::bytes)
    }

    /// Whether the memory held is past `ingest.max_buffer_bytes`: then every
    /// partition should flush in one cycle (which waits for the cycle in
    /// flight: the backpressure).
    pub fn over_buffer_cap(&self) -> bool {
        let buffered = self.buffered_bytes();
        let over = buffered > self.pipeline.config.ingest.max_buffer_bytes;
        if over {
            tracing::debug!(buffered, "buffer cap reached: every partition flushes");
        }
        over
    }

    /// Whether a cycle the lake refused waits to be tried again.
    pub fn retry_pending(&self) -> bool {
        self.staging.is_none() && self.task.is_none() && self.held.is_some()
    }

    /// Whether a cycle is being staged, or staged and not yet committed.
    pub fn cycle_open(&self) -> bool {
        self.staging.is_some() || self.held.is_some()
    }

    /// The index of a partition assigned here.
    fn find(&self, topic: &str, partition: i32) -> Option<usize> {
        self.partitions
            .iter()
            .position(|t| t.key.1 == partition && &*t.key.0 == topic)
    }

    /// One message from Kafka, routed to its partition's worker (in runs).
    /// The partition's index, or `None` when it is not assigned here.
    pub fn on_message(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        payload: &[u8],
    ) -> Result<Option<usize>, WorkerGone> {
        let Some(i) = self.find(topic, partition) else {
            tracing::debug!(
                topic,
                partition,
                offset,
                "message of a partition not assigned here; ignored"
            );
            return Ok(None);
        };
        let track = &mut self.partitions[i];
        track.routed(1, payload.len(), offset);
        track.pending.push(offset, timestamp, payload);
        if track.pending.len() >= RUN_MESSAGES {
            self.send_pending(i)?;
        }
        Ok(Some(i))
    }

    /// A run of partition `i`'s messages the caller gathered itself (a
    /// file read a block at a time), sent to its worker as it is, after
    /// any gathered here. Offsets must follow those routed before.
    pub fn on_run(&mut self, i: usize, run: RawMessages) -> Result<(), WorkerGone> {
        let Some(last) = run.last_offset() else {
            return Ok(());
        };
        self.send_pending(i)?;
        let track = &mut self.partitions[i];
        track.routed(run.len() as u64, run.bytes(), last);
        self.workers
            .send(track.worker, Command::Messages(track.key.clone(), run))
    }

    /// Send partition `i`'s gathered messages to its worker.
    fn send_pending(&mut self, i: usize) -> Result<(), WorkerGone> {
        let track = &mut self.partitions[i];
        if track.pending.is_empty() {
            return Ok(());
        }
        // the next run is sized like this one: no regrowth per message
        let room = RawMessages::with_capacity(RUN_MESSAGES, track.pending.bytes());
        let run = std::mem::replace(&mut track.pending, room);
        self.workers
            .send(track.worker, Command::Messages(track.key.clone(), run))
    }

    /// Send every partition's gathered messages to its worker.
    pub fn send_all_pending(&mut self) -> Result<(), WorkerGone> {
        for i in 0..self.partitions.len() {
            self.send_pending(i)?;
        }
        Ok(())
    }

    /// Serve what the workers asked for: re-reads after skipped offsets.
    pub fn serve_events(&mut self, consumer: &impl Positions) -> Result<(), WorkerGone> {
        while let Some(event) = self.workers.event() {
            match event {
                Event::Reread(key, offset) => self.reread(consumer, &key, offset)?,
            }
        }
        Ok(())
    }

    /// Send the consumer of `key` back to `offset` and tell its worker
    /// whether the seek was made (when not, the next gap asks again).
    pub fn reread(
        &mut self,
        consumer: &impl Positions,
        key: &PartitionKey,
        offset: i64,
    ) -> Result<(), WorkerGone> {
        let Some(i) = self.find(&key.0, key.1) else {
            return Ok(());
        };
        // what was gathered was fetched before the seek
        self.partitions[i].pending = RawMessages::default();
        let made = match consumer.seek(key, offset) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(partition = %format!("{}/{}", key.0, key.1), offset, error = %e, "seek failed; retried at the next gap");
                false
            }
        };
        let worker = self.partitions[i].worker;
        self.workers
            .send(worker, Command::Seeked(key.clone(), made))
    }

    /// Whether partition `i` should roll now: by count or size, and with
    /// `by_age` also by the age of its oldest event (the periodic sweep asks
    /// for that; the per-message check skips the clock read).
    pub fn due(&self, i: usize, by_age: bool) -> bool {
        self.partitions
            .get(i)
            .is_some_and(|t| self.past(t, 1, by_age))
    }

    /// Whether `t` holds something and is past `1/share` of its count or
    /// size limit, or (with `by_age`) of its age limit.
    fn past(&self, t: &Track, share: usize, by_age: bool) -> bool {
        let cfg = &self.pipeline.config.ingest;
        let age = Duration::from_millis(cfg.flush_age_ms / share as u64);
        !t.is_empty()
            && (t.read as usize >= cfg.flush_rows / share
                || t.bytes >= cfg.flush_bytes / share
                || (by_age && t.since.is_some_and(|s| s.elapsed() >= age)))
    }

    /// The partitions a flush cycle takes: every one due, plus those past
    /// half of any limit (count, size or age). They ride along instead of
    /// costing a commit of their own soon after, and partitions filling at
    /// the same rate stage together, so their workers encode at the same
    /// time instead of one encoding while the other waits for messages the
    /// coordinator cannot send past the first's full queue. Empty when none
    /// is due, or while a cycle is open (rows gather, up to the buffer cap,
    /// and go with the next).
    pub fn cycle(&self) -> Vec<PartitionKey> {
        if self.cycle_open() || !(0..self.partitions.len()).any(|i| self.due(i, true)) {
            return Vec::new();
        }
        self.partitions
            .iter()
            .filter(|t| self.past(t, 2, true))
            .map(|t| t.key.clone())
            .collect()
    }

    /// The cycle to start after a message of partition `i`: empty unless
    /// it is due by count or size (no clock read) and no cycle is open.
    pub fn rolling(&self, i: usize) -> Vec<PartitionKey> {
        if !self.due(i, false) {
            return Vec::new();
        }
        self.cycle()
    }

    /// Every partition holding something.
    pub fn non_empty(&self) -> Vec<PartitionKey> {
        self.partitions
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| t.key.clone())
            .collect()
    }

    /// Start a flush cycle for the partitions `keys`. The cycle before it
    /// is settled first (waited for, and tried again if the lake refused
    /// it); then their workers are asked to stage their files (all at once,
    /// each after the messages routed to it so far), and once they have,
    /// the uploads and the commit go on in a task. Consumption goes on
    /// meanwhile: [`Core::collect`] moves the cycle along, [`Core::settle`]
    /// waits for it.
    pub fn flush(
        &mut self,
        keys: &[PartitionKey],
        consumer: &impl Positions,
    ) -> Result<(), FlushError> {
        self.settle(consumer)?;
        let mut owned = Vec::with_capacity(keys.len());
        let mut read = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(i) = self.find(&key.0, key.1) else {
                continue;
            };
            if self.partitions[i].is_empty() {
                continue;
            }
            self.send_pending(i)?;
            let t = &self.partitions[i];
            read.push((t.read, t.bytes));
            owned.push((t.worker, key.clone()));
        }
        if owned.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            partitions = owned.len(),
            buffered = self.buffered_bytes(),
            "staging a cycle"
        );
        let replies = self.workers.stage(&owned)?;
        // staged as of the command: what is routed from now on is the next
        // cycle's (a worker that fails to stage gets its share back)
        self.clear(&owned);
        self.staging = Some(Staging {
            replies,
            owned,
            read,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Flush `keys` and wait until the cycle is committed.
    pub fn flush_now(
        &mut self,
        keys: &[PartitionKey],
        consumer: &impl Positions,
    ) -> Result<(), FlushError> {
        self.flush(keys, consumer)?;
        self.settle(consumer)
    }

    /// Before the runtime stops: wait (up to the shutdown deadline, or
    /// [`FINISH_READS`] without one) for the lake's read-back of its last
    /// commits. A failure is logged: the commits are in the log already.
    pub fn finish_reads(&self) {
        let within = self.deadline.map_or(FINISH_READS, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if let Err(e) = self
            .rt
            .block_on(async { self.lake.lock().await.finish_reads(within).await })
        {
            tracing::warn!(error = %e, "reading the lake's last commits back failed");
        }
    }

    /// Move the open cycle along without waiting: launch its uploads and
    /// commit once every worker staged, apply its outcome once committed.
    pub fn collect(&mut self, consumer: &impl Positions) -> Result<(), FlushError> {
        self.staged(false)?;
        if self.task.as_ref().is_some_and(|t| t.is_finished()) {
            self.join(consumer)?;
        }
        Ok(())
    }

    /// Wait for the open cycle and apply its outcome; a cycle the lake
    /// refused earlier is tried again first. Afterwards no cycle is open,
    /// or the error says why the lake refused it (it is kept).
    pub fn settle(&mut self, consumer: &impl Positions) -> Result<(), FlushError> {
        self.staged(true)?;
        if self.task.is_none() {
            match self.held.take() {
                Some(held) => self.launch(held),
                None => return Ok(()),
            }
        }
        self.join(consumer)
    }

    /// Gather the workers' stage answers (all of them with `wait`); once
    /// every worker answered, upload and commit what they staged. A worker
    /// that could not stage keeps its rows, and its partitions are counted
    /// as read again (the next cycle takes them).
    fn staged(&mut self, wait: bool) -> Result<(), FlushError> {
        let answered = self
            .staging
            .as_mut()
            .is_some_and(|staging| staging.replies.gather(wait));
        let Some(staging) = self.staging.take_if(|_| answered) else {
            return Ok(());
        };
        let Staging {
            replies,
            owned,
            read,
            started,
        } = staging;
        let mut failure = None;
        for (worker, error) in replies.failed {
            for ((w, key), (messages, size)) in owned.iter().zip(&read) {
                if *w != worker {
                    continue;
                }
                if let Some(i) = self.find(&key.0, key.1) {
                    let t = &mut self.partitions[i];
                    t.read += messages;
                    t.bytes += size;
                    t.since.get_or_insert_with(Instant::now);
                }
            }
            failure.get_or_insert(error);
        }
        if !replies.staged.is_empty() {
            let parts = replies.staged.iter().map(|s| s.part.clone()).collect();
            self.launch(Held {
                staged: replies.staged,
                parts,
                started,
            });
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Upload and commit `held` in a task on the runtime.
    fn launch(&mut self, mut held: Held) {
        let mut counts = Counts::default();
        for s in &held.staged {
            counts.add(&s.counts);
        }
        let provenance = Provenance {
            plugin_digest: self.digest.clone(),
            counts: counts.as_map(),
        };
        let policy = self.retry_policy();
        let parts = std::mem::take(&mut held.parts);
        let files = files_of(&held.staged);
        tracing::debug!(
            events = counts.read,
            files = counts.files,
            file_bytes = counts.bytes,
            workers_hold = self.workers.held_bytes(),
            "cycle staged; uploading and committing"
        );
        self.task = Some(self.rt.spawn(upload_and_commit(
            self.lake.clone(),
            files,
            parts,
            provenance,
            policy,
        )));
        self.held = Some(held);
    }

    /// Wait for the cycle in flight (if any) and apply its outcome.
    fn join(&mut self, consumer: &impl Positions) -> Result<(), FlushError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        let finished = self.rt.block_on(task).map_err(FlushError::Task)?;
        let Some(mut held) = self.held.take() else {
            return Ok(());
        };
        held.parts = finished.parts;
        match finished.result {
            Ok(report) => {
                if let Some(m) = &self.metrics {
                    m.flush_seconds
                        .observe(finished.uploaded.saturating_duration_since(held.started));
                    m.commit_seconds
                        .observe(finished.done.saturating_duration_since(finished.uploaded));
                }
                self.apply(held, &report, consumer)
            }
            Err(e) => {
                self.held = Some(held);
                Err(e.into())
            }
        }
    }

    /// Tell each partition of a committed cycle where it stands: its
    /// worker, the consumer (the offset hint, or a seek when another
    /// writer won) and the summary.
    fn apply(
        &mut self,
        held: Held,
        report: &CommitReport,
        consumer: &impl Positions,
    ) -> Result<(), FlushError> {
        let mut counts = Counts::default();
        for (s, (part, outcome)) in held
            .staged
            .iter()
            .zip(held.parts.iter().zip(&report.outcomes))
        {
            let label = format!("{}/{}", s.key.0, s.key.1);
            let found = self.find(&s.key.0, s.key.1);
            match *outcome {
                PartitionOutcome::Committed => {
                    counts.add(&s.counts);
                    self.summary.add(&s.counts);
                    if let Some(m) = &self.metrics {
                        record_commit(m, &s.counts);
                    }
                    let mut resume = part.expected;
                    resume.data = Some(part.last_offset);
                    tracing::debug!(
                        partition = %label, last = part.last_offset, kept = s.counts.kept,
                        dead_lettered = s.counts.dead_lettered, files = s.counts.files, "committed"
                    );
                    let next = part.last_offset + 1;
                    consumer.committed(&s.key, next);
                    if let Some(i) = found {
                        self.partitions[i].committed_next = next;
                        let worker = self.partitions[i].worker;
                        self.workers
                            .send(worker, Command::Committed(s.key.clone(), resume))?;
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
                    let Some(i) = found else {
                        continue;
                    };
                    // what was read after the stage goes too
                    let t = &mut self.partitions[i];
                    t.committed_next = next;
                    t.routed_next = next;
                    t.pending = RawMessages::default();
                    t.forget();
                    let worker = t.worker;
                    self.workers
                        .send(worker, Command::Reset(s.key.clone(), resume, next))?;
                    // messages fetched past the resume point before the seek
                    // took are refused as a gap (see `Writer::take`)
                    if let Err(e) = consumer.seek(&s.key, next) {
                        tracing::warn!(partition = %label, offset = next, error = %e, "seek failed; retried at the next gap");
                    }
                }
            }
        }
        if report.data_version.is_some() {
            self.summary.commits += 1;
            if let Some(m) = &self.metrics {
                m.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        tracing::info!(
            partitions = held.staged.len(), version = ?report.data_version, dead_letters_version = ?report.dead_version,
            kept = counts.kept, dead_lettered = counts.dead_lettered, files = counts.files,
            elapsed_ms = held.started.elapsed().as_millis() as u64, "flush cycle committed"
        );
        Ok(())
    }

    /// Forget what was read since the last stage of each of `owned`.
    fn clear(&mut self, owned: &[(usize, PartitionKey)]) {
        for (_, key) in owned {
            if let Some(i) = self.find(&key.0, key.1) {
                self.partitions[i].forget();
            }
        }
    }

    /// Create the lake's tables unless they exist (the data table with the
    /// plugin's output schema).
    pub fn ensure_tables(&mut self) -> Result<(), LakeError> {
        let schema = self.output.arrow().clone();
        let change = SchemaChange::allowed(self.pipeline.config.plugin.allow_schema_change);
        let policy = self.retry_policy();
        self.rt.block_on(async {
            let mut lake = self.lake.lock().await;
            let mut retry = policy.start();
            loop {
                match lake
                    .ensure_tables(&schema, &dead_letter_schema(), change)
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(e @ LakeError::Schema { .. }) => return Err(e),
                    Err(e) => retry.wait("tables", e).await?,
                }
            }
        })
    }

    /// How lake operations are retried now.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::new(&self.pipeline.config.ingest, self.deadline)
    }

    /// New partitions: resume each from the tables' `txn` versions (Kafka's
    /// committed offsets are only a hint) and give it to a worker; the
    /// consumer is sent to where each resumes.
    pub fn assign<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        assigned: &TopicPartitionList,
    ) -> Result<(), FlushError> {
        let wanted = assigned
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect::<Vec<_>>();
        let mut tpl = TopicPartitionList::new();
        for (key, resume) in self.take_partitions(&wanted, consumer)? {
            let offset = match resume.data {
                None => Offset::Beginning,
                Some(_) => Offset::Offset(resume.next_offset()),
            };
            let _ = tpl.add_partition_offset(&key.0, key.1, offset);
        }
        if let Err(e) = consumer.assign(&tpl) {
            tracing::error!(error = %e, "assigning partitions failed");
        }
        Ok(())
    }

    /// Take partitions: each resumes from the tables' `txn` versions and
    /// goes to the worker holding fewest. Those whose versions cannot be
    /// read are left out (and not consumed). The cycle in flight is
    /// settled first, so the versions include it.
    pub fn take_partitions(
        &mut self,
        wanted: &[(String, i32)],
        consumer: &impl Positions,
    ) -> Result<Vec<(PartitionKey, Resume)>, FlushError> {
        match self.settle(consumer) {
            Ok(()) => {}
            Err(FlushError::Lake(e)) => {
                tracing::warn!(error = %e, "the cycle in flight was not committed; it is tried again later")
            }
            Err(e) => return Err(e),
        }
        let policy = self.retry_policy();
        let lake = self.lake.clone();
        let read = self.rt.block_on(async {
            let mut lake = lake.lock().await;
            let mut retry = policy.start();
            loop {
                match lake.refresh().await {
                    Ok(()) => break,
                    Err(e) => retry.wait("assign", e).await?,
                }
            }
            let mut resumes = Vec::with_capacity(wanted.len());
            for (topic, partition) in wanted {
                resumes.push(lake.resume(topic, *partition).await);
            }
            Ok::<_, LakeError>(resumes)
        });
        let resumes = match read {
            Ok(resumes) => resumes,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the lake's tables; not consuming the assigned partitions");
                return Ok(Vec::new());
            }
        };
        let mut taken = Vec::with_capacity(wanted.len());
        for ((topic, partition), resume) in wanted.iter().zip(resumes) {
            let label = format!("{topic}/{partition}");
            let resume = match resume {
                Ok(resume) => resume,
                Err(e) => {
                    tracing::error!(partition = %label, error = %e, "cannot read the table's txn versions; not consuming this partition");
                    continue;
                }
            };
            let next = resume.next_offset();
            let key: PartitionKey = (topic.as_str().into(), *partition);
            if let Some(i) = self.find(topic, *partition) {
                // assigned again without a revoke in between: start over
                let old = self.partitions.swap_remove(i);
                self.workers.unplace(old.worker);
                self.workers.send(old.worker, Command::Remove(old.key))?;
            }
            let worker = self.workers.place();
            tracing::info!(partition = %label, resume_at = next, dead_letters_at = ?resume.dead, worker, "partition assigned");
            self.workers
                .send(worker, Command::Assign(key.clone(), resume, next))?;
            self.partitions.push(Track {
                key: key.clone(),
                worker,
                pending: RawMessages::default(),
                read: 0,
                bytes: 0,
                since: None,
                routed_next: next,
                committed_next: next,
            });
            taken.push((key, resume));
        }
        Ok(taken)
    }

    /// Partitions taken away: flush and commit what belongs to them, then
    /// take them from their workers.
    pub fn revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        revoked: &TopicPartitionList,
    ) -> Result<(), FlushError> {
        let keys: Vec<PartitionKey> = revoked
            .elements()
            .iter()
            .filter_map(|elem| self.find(elem.topic(), elem.partition()))
            .map(|i| self.partitions[i].key.clone())
            .collect();
        match self.flush_now(&keys, consumer) {
            Ok(()) => {}
            Err(FlushError::Lake(e)) => {
                tracing::warn!(error = %e, "flush on revoke failed; the next owner re-reads the range")
            }
            Err(e) => return Err(e),
        }
        for key in &keys {
            if let Some(i) = self.find(&key.0, key.1) {
                let track = self.partitions.swap_remove(i);
                self.workers.unplace(track.worker);
                self.workers
                    .send(track.worker, Command::Remove(track.key))?;
            }
            tracing::info!(partition = %format!("{}/{}", key.0, key.1), "partition revoked");
        }
        if let Err(e) = consumer.unassign() {
            tracing::error!(error = %e, "unassigning partitions failed");
        }
        Ok(())
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
