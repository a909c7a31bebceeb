//! Dead letters: every message that could not become a clean event, with
//! its raw payload, the reason, and where it came from in Kafka.

use std::sync::Arc;

use arrow::array::{
    BinaryBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

/// One rejected message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Kafka topic.
    pub topic: Arc<str>,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// Kafka message timestamp (ms), if any.
    pub kafka_timestamp: Option<i64>,
    /// `decode` or `plugin`.
    pub stage: &'static str,
    /// why it was rejected.
    pub reason: String,
    /// the message value as received.
    pub payload: Vec<u8>,
}

/// The Arrow schema of dead-letter files.
pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "kafka_timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("stage", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("payload", DataType::Binary, false),
    ]))
}

/// Dead letters as one record batch.
pub fn dead_letters_batch(letters: &[DeadLetter]) -> RecordBatch {
    let n = letters.len();
    let mut topic = StringBuilder::with_capacity(n, n * 16);
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut stage = StringBuilder::with_capacity(n, n * 8);
    let mut reason = StringBuilder::with_capacity(n, n * 32);
    let mut payload =
        BinaryBuilder::with_capacity(n, letters.iter().map(|l| l.payload.len()).sum());
    for l in letters {
        topic.append_value(&*l.topic);
        partition.append_value(l.partition);
        offset.append_value(l.offset);
        ts.append_option(l.kafka_timestamp);
        stage.append_value(l.stage);
        reason.append_value(&l.reason);
        payload.append_value(&l.payload);
    }
    RecordBatch::try_new(
        dead_letter_schema(),
        vec![
            Arc::new(topic.finish()),
            Arc::new(partition.finish()),
            Arc::new(offset.finish()),
            Arc::new(ts.finish()),
            Arc::new(stage.finish()),
            Arc::new(reason.finish()),
            Arc::new(payload.finish()),
        ],
    )
    .expect("columns follow the dead-letter schema")
}
