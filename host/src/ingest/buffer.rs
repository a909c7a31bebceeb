//! What one Kafka partition holds between two commits: decoded rows waiting
//! for the plugin, the plugin's kept output, dead letters, offsets.

use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;

use crate::decode::JsonDecoder;
use crate::lake::{DeadLetter, Resume};
use crate::pipeline::DeclaredSchema;

/// The raw messages behind the decoded rows waiting for the plugin (to
/// dead-letter the rows it rejects), in buffers reused from batch to batch:
/// no allocation per message.
#[derive(Default)]
pub(crate) struct RawMessages {
    data: Vec<u8>,
    ends: Vec<usize>,
    offsets: Vec<i64>,
    timestamps: Vec<Option<i64>>,
}

impl RawMessages {
    /// Remember the message behind the next decoded row.
    pub fn push(&mut self, offset: i64, timestamp: Option<i64>, payload: &[u8]) {
        self.data.extend_from_slice(payload);
        self.ends.push(self.data.len());
        self.offsets.push(offset);
        self.timestamps.push(timestamp);
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Offset, Kafka timestamp and payload of row `row`.
    pub fn get(&self, row: usize) -> (i64, Option<i64>, &[u8]) {
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        (
            self.offsets[row],
            self.timestamps[row],
            &self.data[start..self.ends[row]],
        )
    }

    /// Forget every row (keeping the buffers).
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.offsets.clear();
        self.timestamps.clear();
    }
}

/// The uncommitted state of one assigned Kafka partition.
pub(crate) struct PartitionBuffer {
    pub topic: Arc<str>,
    pub partition: i32,
    /// the tables' `txn` versions this writer resumed from (and committed
    /// since); dead letters at or below `resume.dead` are already committed.
    pub resume: Resume,
    /// next offset expected; anything lower is already in the lake.
    pub next_offset: i64,
    /// whether `next_offset` is a position the consumer was sent to (a
    /// table's `txn` version or a message seen), so that a later offset
    /// means offsets were skipped; not so after a seek to the beginning.
    pub anchored: bool,
    /// the `next_offset` a gap already sent the consumer back to: a gap
    /// that comes back after that is the log's own (compaction,
    /// transaction markers) and is accepted.
    pub gap_reread: Option<i64>,
    /// a re-read was asked for and the consumer not yet sent back: later
    /// offsets are not taken (they come again after the seek).
    pub seek_pending: bool,
    /// first and last offsets buffered since the last commit.
    pub first_offset: Option<i64>,
    pub last_offset: i64,
    pub decoder: JsonDecoder,
    pub decoded_raw: RawMessages,
    pub kept: Vec<RecordBatch>,
    pub kept_rows: usize,
    pub dead: Vec<DeadLetter>,
    pub bytes: usize,
    pub read: u64,
    pub dropped: u64,
    pub since: Option<Instant>,
}

impl PartitionBuffer {
    pub fn new(
        topic: Arc<str>,
        partition: i32,
        resume: Resume,
        next_offset: i64,
        schema: &DeclaredSchema,
        batch_rows: usize,
    ) -> Self {
        PartitionBuffer {
            topic,
            partition,
            resume,
            next_offset,
            anchored: resume.data.is_some(),
            gap_reread: None,
            seek_pending: false,
            first_offset: None,
            last_offset: -1,
            decoder: JsonDecoder::new(schema, batch_rows),
            decoded_raw: RawMessages::default(),
            kept: Vec::new(),
            kept_rows: 0,
            dead: Vec::new(),
            bytes: 0,
            read: 0,
            dropped: 0,
            since: None,
        }
    }

    /// Whether anything is waiting to be committed.
    pub fn is_empty(&self) -> bool {
        self.first_offset.is_none()
    }

    /// Forget everything since the last commit: the tables now stand at
    /// `resume`, consumption goes on at `next_offset`.
    pub fn reset(&mut self, resume: Resume, next_offset: i64) {
        self.resume = resume;
        self.next_offset = next_offset;
        self.anchored = true;
        self.gap_reread = None;
        self.seek_pending = false;
        self.first_offset = None;
        self.last_offset = -1;
        self.decoder.flush();
        self.decoded_raw.clear();
        self.kept.clear();
        self.kept_rows = 0;
        self.dead.clear();
        self.bytes = 0;
        self.read = 0;
        self.dropped = 0;
        self.since = None;
    }

    /// Account for one message at `offset`.
    pub fn note_message(&mut self, offset: i64, size: usize) {
        if self.first_offset.is_none() {
            self.first_offset = Some(offset);
            self.since = Some(Instant::now());
        }
        self.last_offset = offset;
        self.next_offset = offset + 1;
        self.anchored = true;
        self.read += 1;
        self.bytes += size;
    }

    pub fn label(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}
