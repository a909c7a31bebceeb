//! What one Kafka partition holds between two commits: decoded rows waiting
//! for the plugin, the plugin's kept output (encoded into its files as it
//! comes), dead letters, offsets.

use std::io::Read;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use super::files::{FileLayout, OpenFiles};
use crate::decode::JsonDecoder;
use crate::lake::{DeadLetter, FileMetadata, Resume};
use crate::pipeline::DeclaredSchema;

/// A run of one partition's raw messages, as the coordinator gathers them
/// and a worker keeps them behind the decoded rows waiting for the plugin
/// (to dead-letter the rows it rejects): one buffer per run, no allocation
/// per message.
#[derive(Default)]
pub(crate) struct RawMessages {
    data: Vec<u8>,
    /// where each message's payload starts and ends in `data`.
    spans: Vec<(usize, usize)>,
    offsets: Vec<i64>,
    timestamps: Vec<Option<i64>>,
}

impl RawMessages {
    /// An empty run with room for `messages` messages of `bytes` in all.
    pub fn with_capacity(messages: usize, bytes: usize) -> Self {
        RawMessages {
            data: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(messages),
            offsets: Vec::with_capacity(messages),
            timestamps: Vec::with_capacity(messages),
        }
    }

    /// Bytes of payload held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Remember the message behind the next decoded row.
    pub fn push(&mut self, offset: i64, timestamp: Option<i64>, payload: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.spans.push((start, self.data.len()));
        self.offsets.push(offset);
        self.timestamps.push(timestamp);
    }

    /// Read lines of `reader` straight into this run until it holds `max`
    /// messages or the input ends, at offsets counting up from `*next`
    /// (advanced past them): the bytes go from the reader into the run's
    /// buffer, with no copy in between. `carry` holds bytes an earlier run
    /// read past its last line; they come first, and on return `carry`
    /// holds what this run read past its own. Each read asks for what the
    /// lines still wanted should take, and at least `min_read` bytes. A
    /// message is a line without its end (`\n` or `\r\n`, or none for the
    /// input's last line); empty lines are skipped and take no offset.
    pub fn read_lines(
        &mut self,
        reader: &mut impl Read,
        max: usize,
        next: &mut i64,
        carry: &mut Vec<u8>,
        min_read: usize,
    ) -> std::io::Result<()> {
        self.data.extend_from_slice(carry);
        carry.clear();
        // where the lines not yet taken start
        let mut from = 0;
        loop {
            from = self.index_lines(from, max, next);
            if self.len() >= max {
                carry.extend_from_slice(&self.data[from..]);
                self.data.truncate(from);
                return Ok(());
            }
            // as much as the lines still wanted should take, within the
            // room left when there is some: growing the buffer copies it
            let line = if self.is_empty() {
                512
            } else {
                from / self.len() + 1
            };
            let mut want = ((max - self.len()) * line).max(min_read);
            let room = self.data.capacity() - self.data.len();
            if room >= min_read {
                want = want.min(room);
            } else {
                self.data.reserve(want);
            }
            if reader
                .by_ref()
                .take(want as u64)
                .read_to_end(&mut self.data)?
                == 0
            {
                // the input's last line may have no line end
                if self.data.len() > from {
                    self.data.push(b'\n');
                    self.index_lines(from, max, next);
                }
                return Ok(());
            }
        }
    }

    /// Take the complete lines of `data[from..]` as messages, up to `max`
    /// in the run, in place. Where the lines not taken start.
    fn index_lines(&mut self, from: usize, max: usize, next: &mut i64) -> usize {
        let mut used = from;
        for end in memchr::memchr_iter(b'\n', &self.data[from..]).map(|end| from + end) {
            if self.offsets.len() >= max {
                break;
            }
            let line_end = if end > used && self.data[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            if line_end > used {
                self.spans.push((used, line_end));
                self.offsets.push(*next);
                self.timestamps.push(None);
                *next += 1;
            }
            used = end + 1;
        }
        used
    }

    /// The messages at `offset` and after (a resumed source skips what is
    /// in the lake already).
    pub fn starting_at(self, offset: i64) -> RawMessages {
        if self.offsets.first().is_none_or(|first| *first >= offset) {
            return self;
        }
        let mut rest = RawMessages::default();
        for row in 0..self.len() {
            let (at, timestamp, payload) = self.get(row);
            if at >= offset {
                rest.push(at, timestamp, payload);
            }
        }
        rest
    }

    /// The offset of the last message, if any.
    pub fn last_offset(&self) -> Option<i64> {
        self.offsets.last().copied()
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
        let (start, end) = self.spans[row];
        (
            self.offsets[row],
            self.timestamps[row],
            &self.data[start..end],
        )
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
    /// the runs of messages behind the rows waiting for the plugin (kept
    /// as they came from the coordinator: no copy per message).
    pub runs: Vec<RawMessages>,
    /// per row waiting for the plugin: its run (an index into `runs`, or
    /// `runs.len()` for the run being taken) and its row in that run.
    pub decoded: Vec<(u32, u32)>,
    /// the plugin's kept output, encoded into the next stage's files.
    pub files: OpenFiles,
    pub kept_rows: usize,
    pub dead: Vec<DeadLetter>,
    /// memory of `dead` (see [`Self::held_bytes`]).
    dead_bytes: usize,
    pub read: u64,
    pub dropped: u64,
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
            runs: Vec::new(),
            decoded: Vec::new(),
            files: OpenFiles::default(),
            kept_rows: 0,
            dead: Vec::new(),
            dead_bytes: 0,
            read: 0,
            dropped: 0,
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
        self.decoder.flush();
        self.detach();
    }

    /// The rows up to `last_offset` were staged (their files and commit
    /// are on their way): forget them, keep the position and the `txn`
    /// versions (the commit's outcome updates those: [`Self::committed`],
    /// or [`Self::reset`] when another writer won).
    pub fn detach(&mut self) {
        self.first_offset = None;
        self.last_offset = -1;
        self.runs.clear();
        self.decoded.clear();
        self.files.clear();
        self.kept_rows = 0;
        self.dead.clear();
        self.dead_bytes = 0;
        self.read = 0;
        self.dropped = 0;
    }

    /// Keep a batch of the plugin's output until the next stage: encode
    /// it into the files laid out by `layout`.
    pub fn keep(&mut self, batch: &RecordBatch, layout: &FileLayout) {
        if batch.num_rows() == 0 {
            return;
        }
        self.kept_rows += batch.num_rows();
        let first_offset = self.first_offset.unwrap_or(self.last_offset);
        let (topic, partition) = (&self.topic, self.partition);
        self.files.write(batch, layout, || {
            file_metadata(topic, partition, first_offset, -1, &layout.digest)
        });
    }

    /// Keep a dead letter until the next stage.
    pub fn dead_letter(&mut self, letter: DeadLetter) {
        self.dead_bytes +=
            std::mem::size_of::<DeadLetter>() + letter.payload.len() + letter.reason.len();
        self.dead.push(letter);
    }

    /// The memory this partition holds for the next stage: the messages
    /// behind rows waiting for the plugin, the plugin's kept output (as its
    /// files hold it, encoded or in progress) and the dead letters.
    pub fn held_bytes(&self) -> usize {
        self.runs.iter().map(RawMessages::bytes).sum::<usize>()
            + self.files.memory()
            + self.dead_bytes
    }

    /// A staged flush is in the tables, which now stand at `resume`.
    pub fn committed(&mut self, resume: Resume) {
        self.resume = resume;
    }

    /// Account for one message at `offset`.
    pub fn note_message(&mut self, offset: i64) {
        if self.first_offset.is_none() {
            self.first_offset = Some(offset);
        }
        self.last_offset = offset;
        self.next_offset = offset + 1;
        self.anchored = true;
        self.read += 1;
    }

    pub fn label(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

/// The metadata of a new file of partition `topic`/`partition` holding
/// offsets `first_offset..=last_offset`, written by plugin `digest`.
pub(crate) fn file_metadata(
    topic: &str,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    digest: &str,
) -> FileMetadata {
    FileMetadata {
        plugin_digest: digest.to_string(),
        topic: topic.to_string(),
        partition,
        first_offset,
        last_offset,
        writer_token: FileMetadata::new_token(),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Date32Array, StringArray};

    use super::*;
    use crate::pipeline::{FieldSpec, FieldType};

    #[test]
    fn held_bytes_count_waiting_messages_kept_output_and_dead_letters_until_staged() {
        let schema =
            DeclaredSchema::new(vec![FieldSpec::new("event_id", FieldType::String, false)])
                .unwrap();
        let mut b = PartitionBuffer::new("t".into(), 0, Resume::default(), 0, &schema, 16);
        assert_eq!(b.held_bytes(), 0);

        let mut run = RawMessages::with_capacity(1, 5);
        run.push(0, None, b"hello");
        b.runs.push(run);
        assert_eq!(b.held_bytes(), 5, "a message waiting for the plugin");

        let ids: ArrayRef = Arc::new(StringArray::from(vec!["x".repeat(1000); 100]));
        let days: ArrayRef = Arc::new(Date32Array::from(vec![20_000; 100]));
        let batch = RecordBatch::try_from_iter([("event_id", ids), ("event_date", days)]).unwrap();
        let lake: crate::pipeline::LakeConfig = toml::from_str("url = \"/lake\"").unwrap();
        let layout = FileLayout::new(&lake, "digest", 1, 2);
        b.note_message(0);
        b.keep(&batch, &layout);
        let memory = b.files.memory();
        assert!(memory > 0, "the output as its file holds it");
        assert_eq!(b.held_bytes(), 5 + memory);
        assert_eq!(b.kept_rows, 100);

        b.dead_letter(DeadLetter {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            kafka_timestamp: None,
            stage: "decode",
            reason: "bad".into(),
            payload: vec![b'{'; 300],
        });
        assert!(b.held_bytes() >= 5 + memory + 303);

        b.detach();
        assert_eq!(b.held_bytes(), 0, "staged: the files hold it now");
    }
}
