//! A partition's next data files, encoded as the plugin's output comes:
//! one Parquet encoder per partition value. A stage then only finishes
//! them, so a worker never stops taking messages to encode a whole
//! cycle's rows at once (the other workers would wait for the coordinator
//! meanwhile), and what waits for the stage is encoded pages, not Arrow
//! arrays.

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use crate::lake::{FileMetadata, LakeError, ParquetEncoder, split_by_partition};
use crate::pipeline::LakeConfig;

/// How a worker's kept rows become data files: the lake's settings, the
/// plugin's digest, and where the partition column is in its output.
pub(crate) struct FileLayout {
    pub lake: LakeConfig,
    pub digest: String,
    pub partition_column: usize,
    /// the output's columns the files store: all but the partition column
    /// (Delta keeps partition values in the log).
    stored: Vec<usize>,
}

impl FileLayout {
    /// The layout of a plugin's output of `columns` columns.
    pub fn new(lake: &LakeConfig, digest: &str, partition_column: usize, columns: usize) -> Self {
        FileLayout {
            lake: lake.clone(),
            digest: digest.to_string(),
            partition_column,
            stored: (0..columns).filter(|i| *i != partition_column).collect(),
        }
    }
}

/// Write `part` (rows of one partition value) into that value's file,
/// opened with `meta` if it is the first.
fn write_part(
    files: &mut BTreeMap<String, ParquetEncoder>,
    value: &str,
    part: &RecordBatch,
    layout: &FileLayout,
    meta: &FileMetadata,
) -> Result<(), String> {
    let part = part.project(&layout.stored).map_err(|e| e.to_string())?;
    let encoder = match files.get_mut(value) {
        Some(encoder) => encoder,
        None => {
            let encoder = ParquetEncoder::new(part.schema(), (&layout.lake).into(), meta)
                .map_err(|e| e.to_string())?;
            files.entry(value.to_string()).or_insert(encoder)
        }
    };
    encoder.write(&part).map_err(|e| e.to_string())
}

/// One finished data file.
pub(crate) struct FinishedFile {
    /// its partition value.
    pub value: String,
    /// its path relative to the data table.
    pub path: String,
    pub rows: u64,
    pub bytes: Bytes,
}

/// A file that could not be encoded, and why.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub path: String,
    pub reason: String,
}

impl From<Failure> for LakeError {
    fn from(f: Failure) -> Self {
        LakeError::Encode {
            path: f.path,
            reason: f.reason,
        }
    }
}

/// The data files of one partition's next stage, open for more rows.
#[derive(Default)]
pub(crate) struct OpenFiles {
    /// the files' metadata, from the first row written (the last offset
    /// is set when they are finished).
    meta: Option<FileMetadata>,
    by_value: BTreeMap<String, ParquetEncoder>,
    /// the first file that could not be encoded, and why: every stage
    /// reports it from then on (the rows it lost are not committed as
    /// done; ingest stops making progress on this partition, loudly).
    failed: Option<Failure>,
}

impl OpenFiles {
    /// Encode a batch of the plugin's output into the files of its
    /// partition values (opened as needed with `meta`, a new file's
    /// metadata). A failure is kept for the stage to report.
    pub fn write(
        &mut self,
        batch: &RecordBatch,
        layout: &FileLayout,
        meta: impl FnOnce() -> FileMetadata,
    ) {
        if self.failed.is_some() || batch.num_rows() == 0 {
            return;
        }
        let meta = self.meta.get_or_insert_with(meta);
        for (value, part) in split_by_partition(batch, layout.partition_column) {
            if let Err(reason) = write_part(&mut self.by_value, &value, &part, layout, meta) {
                let path = meta.data_path(&layout.lake.partition_by, &value);
                self.failed = Some(Failure { path, reason });
                return;
            }
        }
    }

    /// The memory the files hold: encoded row groups and the ones in
    /// progress.
    pub fn memory(&self) -> usize {
        self.by_value.values().map(ParquetEncoder::memory).sum()
    }

    /// The metadata of the files, opened or not: what they were opened
    /// with (or `fresh`), with `last_offset` as the last offset.
    pub fn metadata(&self, last_offset: i64, fresh: impl FnOnce() -> FileMetadata) -> FileMetadata {
        let mut meta = self.meta.clone().unwrap_or_else(fresh);
        meta.last_offset = last_offset;
        meta
    }

    /// Why the files cannot be staged, if a file failed to encode.
    pub fn failure(&self) -> Option<&Failure> {
        self.failed.as_ref()
    }

    /// Fail every later stage with `failure` (a file staged with these
    /// could not be finished, so these cannot be committed either).
    pub fn poison(&mut self, failure: &Failure) {
        self.failed.get_or_insert_with(|| failure.clone());
    }

    /// Finish every file with `meta` (see [`Self::metadata`]). They are
    /// gone afterwards; after a failure so is every later stage of them.
    pub fn finish(
        &mut self,
        layout: &FileLayout,
        meta: &FileMetadata,
    ) -> Result<Vec<FinishedFile>, Failure> {
        if let Some(failed) = &self.failed {
            return Err(failed.clone());
        }
        self.meta = None;
        let mut files = Vec::with_capacity(self.by_value.len());
        for (value, encoder) in std::mem::take(&mut self.by_value) {
            let path = meta.data_path(&layout.lake.partition_by, &value);
            let rows = encoder.rows();
            match encoder.finish(meta.last_offset) {
                Ok(bytes) => files.push(FinishedFile {
                    value,
                    path,
                    rows,
                    bytes,
                }),
                Err(e) => {
                    let failed = Failure {
                        path,
                        reason: e.to_string(),
                    };
                    self.failed = Some(failed.clone());
                    return Err(failed);
                }
            }
        }
        Ok(files)
    }

    /// Drop every file (a stage took them, or another writer won), and
    /// any failure with them.
    pub fn clear(&mut self) {
        *self = OpenFiles::default();
    }
}
