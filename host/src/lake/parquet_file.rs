//! Encoding record batches as one Parquet file in memory, with weir's
//! key-value metadata (plugin digest, weir version, Kafka offsets).

use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

/// Provenance written into every file's key-value metadata (all empty by
/// default: files that are not the lake's, such as staged ones).
#[derive(Clone, Debug, Default)]
pub struct FileMetadata {
    /// sha256 of the plugin (empty for dead letters).
    pub plugin_digest: String,
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// first offset of the flush.
    pub first_offset: i64,
    /// last offset of the flush.
    pub last_offset: i64,
    /// unique per written flush, so two writers of one range (a race one
    /// of them loses) never write the same key.
    pub writer_token: String,
}

impl FileMetadata {
    /// `<topic>-p<partition>-o<first>-<last>`, the stem of a flush's files.
    fn stem(&self) -> String {
        format!(
            "{}-p{}-o{:020}-{:020}",
            self.topic, self.partition, self.first_offset, self.last_offset
        )
    }

    /// A fresh writer token.
    pub fn new_token() -> String {
        uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
    }

    /// Where a flush's data file for one partition value goes, relative
    /// to the data table: `<column>=<value>/<stem>-<digest8>-<token>.parquet`.
    pub fn data_path(&self, partition_by: &str, value: &str) -> String {
        format!(
            "{partition_by}={value}/{}-{}-{}.parquet",
            self.stem(),
            self.plugin_digest.get(..8).unwrap_or(&self.plugin_digest),
            self.writer_token
        )
    }

    /// Where a flush's dead letters go, relative to the dead-letter table:
    /// `<stem>-<token>.parquet`.
    pub fn dead_letter_path(&self) -> String {
        format!("{}-{}.parquet", self.stem(), self.writer_token)
    }
}

/// Encode `batches` (one schema) as a Parquet file.
pub fn encode_parquet(
    batches: &[RecordBatch],
    compression: &str,
    row_group_rows: usize,
    meta: &FileMetadata,
) -> Result<Bytes, parquet::errors::ParquetError> {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .expect("at least one batch");
    let mut encoder = ParquetEncoder::new(schema, compression, row_group_rows, meta)?;
    for batch in batches {
        encoder.write(batch)?;
    }
    encoder.finish(meta.last_offset)
}

/// How large a column's dictionary may grow before the column falls back
/// to plain encoding for the rest of its row group. Columns of few values
/// (countries, devices, page groups) stay well under it; nearly unique ones
/// (event ids, timestamps, measurements) reach it after a few thousand
/// values instead of a hundred thousand (the crate's default of 1 MiB),
/// so they are not hashed into a dictionary that saves nothing.
const DICTIONARY_PAGE_BYTES: usize = 64 << 10;

/// One Parquet file being encoded in memory, batch by batch: what it holds
/// is the encoded pages, not the batches written to it (they can be dropped
/// as soon as they are written).
pub struct ParquetEncoder {
    writer: ArrowWriter<Vec<u8>>,
    rows: u64,
}

impl ParquetEncoder {
    /// A file of `schema`, compressed with `compression` (`zstd`, `snappy`,
    /// `lz4` or `none`), in row groups of `row_group_rows`, with `meta` in
    /// its key-value metadata (all but the last offset, which
    /// [`Self::finish`] writes: a file can be opened before its last row
    /// is known).
    pub fn new(
        schema: SchemaRef,
        compression: &str,
        row_group_rows: usize,
        meta: &FileMetadata,
    ) -> Result<Self, parquet::errors::ParquetError> {
        let compression = match compression {
            "snappy" => Compression::SNAPPY,
            "lz4" => Compression::LZ4_RAW,
            "none" => Compression::UNCOMPRESSED,
            _ => Compression::ZSTD(ZstdLevel::default()),
        };
        let kv = |k: &str, v: String| KeyValue::new(k.to_string(), v);
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
            .set_key_value_metadata(Some(vec![
                kv("weir.version", crate::VERSION.to_string()),
                kv("weir.plugin_digest", meta.plugin_digest.clone()),
                kv("weir.kafka_topic", meta.topic.clone()),
                kv("weir.kafka_partition", meta.partition.to_string()),
                kv("weir.kafka_first_offset", meta.first_offset.to_string()),
            ]))
            .build();
        Ok(ParquetEncoder {
            writer: ArrowWriter::try_new(Vec::new(), schema, Some(props))?,
            rows: 0,
        })
    }

    /// Encode one more batch (of the file's schema).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), parquet::errors::ParquetError> {
        self.writer.write(batch)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The memory the file holds so far: its encoded row groups and the
    /// row group in progress.
    pub fn memory(&self) -> usize {
        self.writer.bytes_written() + self.writer.memory_size()
    }

    /// The finished file, its last Kafka offset written in its metadata.
    pub fn finish(mut self, last_offset: i64) -> Result<Bytes, parquet::errors::ParquetError> {
        self.writer.append_key_value_metadata(KeyValue::new(
            "weir.kafka_last_offset".to_string(),
            last_offset.to_string(),
        ));
        Ok(Bytes::from(self.writer.into_inner()?))
    }
}
