//! The aggregation pushed down to Redshift (`aggregate.engine =
//! "warehouse"` with a `redshift://` warehouse): the cleaned rows reach
//! the cluster by `COPY ... FORMAT AS PARQUET` from S3, never through this
//! host.
//!
//! For each date, a manifest under `warehouse.copy.staging_url` names the
//! Parquet files Redshift copies:
//! - the Delta snapshot's own files, when every one of them was written by
//!   the running plugin's digest (the same compiled plugin produced them;
//!   applying it again is a no-op) and the lake is on S3;
//! - otherwise files weir writes first: the date's rows re-cleaned by the
//!   running plugin, in the same layout (the table's columns without the
//!   partition column, which Delta keeps in the log).
//!
//! In the load's transaction, each manifest is copied into a temporary raw
//! table and moved into the temporary table `events` with its date; the
//! aggregation's statements then run over `events`. The statements are
//! unit-tested here; they have not been run against a live Redshift.

use bytes::Bytes;
use chrono::NaiveDate;
use serde::Serialize;

use super::WarehouseError;
use super::config::CopyConfig;
use super::table::{TableSpec, literal, quote, quote_name};
use crate::objstore::Location;
use crate::pipeline::S3Config;

/// The temporary table each manifest is copied into.
pub const RAW_TABLE: &str = "weir_events_raw";

/// One file of a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// `s3://bucket/key`.
    pub url: String,
    /// its size (Redshift requires it for Parquet).
    pub bytes: u64,
}

/// Where a date's staged files came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StagedFrom {
    /// the snapshot's own files (written by the running plugin's digest).
    Snapshot,
    /// files of the date's rows re-cleaned by the running plugin.
    Recleaned,
}

/// One date ready for `COPY`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StagedDate {
    /// the date.
    pub date: NaiveDate,
    /// `s3://.../<date>.manifest`.
    pub manifest_url: String,
    /// where its files came from.
    pub from: StagedFrom,
    /// files the manifest names.
    pub files: usize,
}

/// The manifest Redshift's `COPY ... MANIFEST` reads: every file
/// mandatory, with its `content_length` (required for Parquet).
pub fn manifest_json(entries: &[ManifestEntry]) -> String {
    let entries: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "url": e.url,
                "mandatory": true,
                "meta": { "content_length": e.bytes },
            })
        })
        .collect();
    serde_json::json!({ "entries": entries }).to_string()
}

/// The statements filling the temporary table `events` (described by
/// `events`, partition column included) from the staged dates: the raw
/// table holds the files' columns (the others, in order); each date is
/// copied into it, moved into `events` with its date, and cleared.
pub fn fill_statements(copy: &CopyConfig, events: &TableSpec, dates: &[StagedDate]) -> Vec<String> {
    let names = events.column_list_but(&events.partition_column);
    let mut statements = vec![
        events.session_temp_create_sql(),
        format!(
            "CREATE TEMP TABLE {} ({})",
            quote(RAW_TABLE),
            events.column_defs_but(&events.partition_column)
        ),
    ];
    for date in dates {
        let mut copy_sql = format!(
            "COPY {} FROM {} IAM_ROLE {} FORMAT AS PARQUET MANIFEST",
            quote(RAW_TABLE),
            literal(&date.manifest_url),
            literal(&copy.iam_role)
        );
        if let Some(region) = &copy.region {
            copy_sql.push_str(&format!(" REGION {}", literal(region)));
        }
        statements.push(copy_sql);
        statements.push(format!(
            "INSERT INTO {} ({names}, {}) SELECT {names}, DATE '{}' FROM {}",
            quote_name(&events.name),
            quote(&events.partition_column),
            date.date,
            quote(RAW_TABLE)
        ));
        // TRUNCATE would commit the transaction in Redshift
        statements.push(format!("DELETE FROM {}", quote(RAW_TABLE)));
    }
    statements
}

/// Writes one load's manifests and re-cleaned files under
/// `<staging_url>/<table>/<load id>/`.
pub struct Stager {
    store: Location,
    /// the prefix relative to the store.
    prefix: String,
    /// `staging_url` without its trailing slash.
    url: String,
}

impl Stager {
    /// A stager for one load of `table`.
    pub fn open(
        copy: &CopyConfig,
        s3: &S3Config,
        table: &str,
        load_id: &str,
    ) -> Result<Self, WarehouseError> {
        if !copy.staging_url.starts_with("s3://") {
            return Err(WarehouseError::Staging {
                url: copy.staging_url.clone(),
                error: "Redshift copies from S3: expected an s3:// staging_url".into(),
            });
        }
        let store = Location::open(&copy.staging_url, s3).map_err(|e| WarehouseError::Staging {
            url: copy.staging_url.clone(),
            error: e.to_string(),
        })?;
        Ok(Stager {
            store,
            prefix: format!("{}/{load_id}", table.replace('.', "_")),
            url: copy.staging_url.trim_end_matches('/').to_string(),
        })
    }

    fn fail(&self, key: &str, error: impl std::fmt::Display) -> WarehouseError {
        WarehouseError::Staging {
            url: format!("{}/{key}", self.url),
            error: error.to_string(),
        }
    }

    /// Where re-cleaned files are written: the store and the path of the
    /// `n`th file of `date` in it.
    pub fn store(&self) -> &Location {
        &self.store
    }

    /// The path (relative to [`Stager::store`]) of the `n`th re-cleaned
    /// Parquet file of `date`.
    pub fn part_path(&self, date: NaiveDate, n: usize) -> String {
        format!("{}/{date}/part-{n:05}.parquet", self.prefix)
    }

    /// The manifest entry of a file written at `path` in the store.
    pub fn entry(&self, path: &str, bytes: u64) -> ManifestEntry {
        ManifestEntry {
            url: format!("{}/{path}", self.url),
            bytes,
        }
    }

    /// Write the manifest of `date`.
    pub async fn put_manifest(
        &self,
        date: NaiveDate,
        from: StagedFrom,
        entries: &[ManifestEntry],
    ) -> Result<StagedDate, WarehouseError> {
        let key = format!("{}/{date}.manifest", self.prefix);
        self.store
            .put(&key, Bytes::from(manifest_json(entries)))
            .await
            .map_err(|e| self.fail(&key, e))?;
        Ok(StagedDate {
            date,
            manifest_url: format!("{}/{key}", self.url),
            from,
            files: entries.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::SqlType;

    #[test]
    fn manifests_name_every_file_with_its_length() {
        let json = manifest_json(&[
            ManifestEntry {
                url: "s3://lake/web/event_date=2026-11-20/a.parquet".into(),
                bytes: 1234,
            },
            ManifestEntry {
                url: "s3://lake/web/event_date=2026-11-20/b.parquet".into(),
                bytes: 5,
            },
        ]);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"entries": [
                {"url": "s3://lake/web/event_date=2026-11-20/a.parquet", "mandatory": true, "meta": {"content_length": 1234}},
                {"url": "s3://lake/web/event_date=2026-11-20/b.parquet", "mandatory": true, "meta": {"content_length": 5}},
            ]})
        );
    }

    #[test]
    fn each_date_is_copied_from_its_manifest_and_given_its_date() {
        let events = TableSpec {
            name: "events".into(),
            columns: vec![
                ("event_id".into(), SqlType::Text),
                ("event_date".into(), SqlType::Date),
                ("tti_ms".into(), SqlType::Double),
            ],
            partition_column: "event_date".into(),
        };
        let copy = CopyConfig {
            staging_url: "s3://staging/weir".into(),
            iam_role: "arn:aws:iam::123456789012:role/redshift-copy".into(),
            region: Some("eu-west-1".into()),
        };
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let dates = [
            StagedDate {
                date: d("2026-11-20"),
                manifest_url: "s3://staging/weir/t/l1/2026-11-20.manifest".into(),
                from: StagedFrom::Snapshot,
                files: 2,
            },
            StagedDate {
                date: d("2026-11-21"),
                manifest_url: "s3://staging/weir/t/l1/2026-11-21.manifest".into(),
                from: StagedFrom::Recleaned,
                files: 1,
            },
        ];
        let role = "IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-copy'";
        assert_eq!(
            fill_statements(&copy, &events, &dates),
            [
                "CREATE TEMP TABLE \"events\" (\"event_id\" VARCHAR(65535), \"event_date\" DATE, \"tti_ms\" DOUBLE PRECISION)".to_string(),
                "CREATE TEMP TABLE \"weir_events_raw\" (\"event_id\" VARCHAR(65535), \"tti_ms\" DOUBLE PRECISION)".into(),
                format!("COPY \"weir_events_raw\" FROM 's3://staging/weir/t/l1/2026-11-20.manifest' {role} FORMAT AS PARQUET MANIFEST REGION 'eu-west-1'"),
                "INSERT INTO \"events\" (\"event_id\", \"tti_ms\", \"event_date\") SELECT \"event_id\", \"tti_ms\", DATE '2026-11-20' FROM \"weir_events_raw\"".into(),
                "DELETE FROM \"weir_events_raw\"".into(),
                format!("COPY \"weir_events_raw\" FROM 's3://staging/weir/t/l1/2026-11-21.manifest' {role} FORMAT AS PARQUET MANIFEST REGION 'eu-west-1'"),
                "INSERT INTO \"events\" (\"event_id\", \"tti_ms\", \"event_date\") SELECT \"event_id\", \"tti_ms\", DATE '2026-11-21' FROM \"weir_events_raw\"".into(),
                "DELETE FROM \"weir_events_raw\"".into(),
            ]
        );
    }
}
