//! Encoding record batches as one Parquet file in memory, with weir's
//! key-value metadata (plugin digest, weir version, Kafka offsets).

use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::pipeline::LakeConfig;

/// How a file is encoded: the lake's settings, or a file of its own (a
/// warehouse's staged rows).
#[derive(Clone, Copy, Debug)]
pub struct ParquetOptions<'a> {
    /// `zstd`, `snappy`, `lz4` or `none`.
    pub compression: &'a str,
    /// rows per row group.
    pub row_group_rows: usize,
    /// columns written without min/max statistics.
    pub skip_statistics: &'a [String],
}

impl<'a> ParquetOptions<'a> {
    /// `compression`, in row groups of `row_group_rows`, with statistics
    /// on every column.
    pub fn new(compression: &'a str, row_group_rows: usize) -> Self {
        ParquetOptions {
            compression,
            row_group_rows,
            skip_statistics: &[],
        }
    }
}

impl<'a> From<&'a LakeConfig> for ParquetOptions<'a> {
    fn from(lake: &'a LakeConfig) -> Self {
        ParquetOptions {
            compression: &lake.compression,
            row_group_rows: lake.row_group_rows,
            skip_statistics: &lake.skip_statistics,
        }
    }
}

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
    options: ParquetOptions<'_>,
    meta: &FileMetadata,
) -> Result<Bytes, parquet::errors::ParquetError> {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .expect("at least one batch");
    let mut encoder = ParquetEncoder::new(schema, options, meta)?;
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
    /// A file of `schema`, encoded as `options` say, with `meta` in its
    /// key-value metadata (all but the last offset, which [`Self::finish`]
    /// writes: a file can be opened before its last row is known).
    ///
    /// Every column gets page-level min/max statistics except those in
    /// `options.skip_statistics`: for a string column, statistics cost two
    /// comparisons per value, which buy nothing on ids or user agents (a
    /// row group's range of them prunes no query).
    pub fn new(
        schema: SchemaRef,
        options: ParquetOptions<'_>,
        meta: &FileMetadata,
    ) -> Result<Self, parquet::errors::ParquetError> {
        let compression = match options.compression {
            "snappy" => Compression::SNAPPY,
            "lz4" => Compression::LZ4_RAW,
            "none" => Compression::UNCOMPRESSED,
            _ => Compression::ZSTD(ZstdLevel::default()),
        };
        let kv = |k: &str, v: String| KeyValue::new(k.to_string(), v);
        let mut props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
            .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
            .set_key_value_metadata(Some(vec![
                kv("weir.version", crate::VERSION.to_string()),
                kv("weir.plugin_digest", meta.plugin_digest.clone()),
                kv("weir.kafka_topic", meta.topic.clone()),
                kv("weir.kafka_partition", meta.partition.to_string()),
                kv("weir.kafka_first_offset", meta.first_offset.to_string()),
            ]));
        for column in options.skip_statistics {
            props = props.set_column_statistics_enabled(
                ColumnPath::from(column.as_str()),
                EnabledStatistics::None,
            );
        }
        Ok(ParquetEncoder {
            writer: ArrowWriter::try_new(Vec::new(), schema, Some(props.build()))?,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    #[test]
    fn skipped_columns_carry_no_statistics_and_the_others_do() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("page_url", DataType::Utf8, false),
            Field::new("tti_ms", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["b", "a", "c"])),
                Arc::new(StringArray::from(vec!["/y", "/x", "/z"])),
                Arc::new(Int64Array::from(vec![Some(3), None, Some(1)])),
            ],
        )
        .unwrap();
        let skip = vec!["event_id".to_string()];
        let options = ParquetOptions {
            skip_statistics: &skip,
            ..ParquetOptions::new("zstd", 1024)
        };
        let bytes = encode_parquet(&[batch], options, &FileMetadata::default()).unwrap();
        let reader = SerializedFileReader::new(bytes).unwrap();
        let group = reader.metadata().row_group(0);
        assert!(group.column(0).statistics().is_none(), "event_id");
        let url = group.column(1).statistics().expect("page_url statistics");
        assert_eq!(url.min_bytes_opt(), Some(&b"/x"[..]));
        assert_eq!(url.max_bytes_opt(), Some(&b"/z"[..]));
        let tti = group.column(2).statistics().expect("tti_ms statistics");
        assert_eq!(tti.null_count_opt(), Some(1));
        assert_eq!(tti.min_bytes_opt(), Some(&1i64.to_le_bytes()[..]));
    }
}
