//! The Redshift bulk path: the aggregated rows are written as one Parquet
//! file to S3, `COPY ... FORMAT AS PARQUET` loads it into a temporary
//! staging table, and the swap (delete the replaced dates, insert from the
//! stage) happens in the load's transaction. The SQL is unit-tested here;
//! it has not been run against a live Redshift.

use arrow::record_batch::RecordBatch;

use super::WarehouseError;
use super::config::CopyConfig;
use super::table::{literal, quote_name};
use crate::lake::{FileMetadata, ParquetOptions, encode_parquet};
use crate::objstore::Location;
use crate::pipeline::LakeConfig;

/// One staged load: where its Parquet file is and the statements around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    /// the target table.
    pub table: String,
    /// the temporary staging table.
    pub stage: String,
    /// `s3://bucket/prefix/<load id>.parquet`.
    pub s3_uri: String,
    /// the role Redshift assumes to read it.
    pub iam_role: String,
    /// the bucket's region, when given.
    pub region: Option<String>,
}

impl CopyPlan {
    /// Statements that fill the staging table (run inside the transaction,
    /// before the target table is locked).
    pub fn stage_sql(&self) -> Vec<String> {
        let mut copy = format!(
            "COPY {} FROM {} IAM_ROLE {} FORMAT AS PARQUET",
            quote_name(&self.stage),
            literal(&self.s3_uri),
            literal(&self.iam_role)
        );
        if let Some(region) = &self.region {
            copy.push_str(&format!(" REGION {}", literal(region)));
        }
        vec![
            format!(
                "CREATE TEMP TABLE {} (LIKE {})",
                quote_name(&self.stage),
                quote_name(&self.table)
            ),
            copy,
        ]
    }

    /// The statement that moves the staged rows in (after the delete).
    pub fn swap_sql(&self) -> String {
        format!(
            "INSERT INTO {} SELECT * FROM {}",
            quote_name(&self.table),
            quote_name(&self.stage)
        )
    }
}

/// Write `rows` as Parquet under `config.staging_url` and plan the COPY.
pub async fn stage(
    config: &CopyConfig,
    lake: &LakeConfig,
    table: &str,
    load_id: &str,
    rows: &[RecordBatch],
) -> Result<CopyPlan, WarehouseError> {
    let fail = |error: String| WarehouseError::Staging {
        url: config.staging_url.clone(),
        error,
    };
    let store = Location::open(&config.staging_url, &lake.s3).map_err(|e| fail(e.to_string()))?;
    let name = format!("{}/{load_id}.parquet", table.replace('.', "_"));
    if let Some(first) = rows.first() {
        let meta = FileMetadata::default();
        let mut batches = rows.to_vec();
        batches.retain(|b| b.num_rows() > 0);
        if batches.is_empty() {
            batches.push(first.clone());
        }
        let options = ParquetOptions::new("snappy", 1 << 20);
        let bytes = encode_parquet(&batches, options, &meta).map_err(|e| fail(e.to_string()))?;
        store
            .put(&name, bytes)
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    Ok(CopyPlan {
        table: table.into(),
        stage: format!("{}_stage", table.rsplit('.').next().unwrap_or(table)),
        s3_uri: format!("{}/{name}", config.staging_url.trim_end_matches('/')),
        iam_role: config.iam_role.clone(),
        region: config.region.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_and_swap_statements() {
        let plan = CopyPlan {
            table: "analytics.page_metrics_daily".into(),
            stage: "page_metrics_daily_stage".into(),
            s3_uri: "s3://staging/weir/analytics_page_metrics_daily/l1.parquet".into(),
            iam_role: "arn:aws:iam::123456789012:role/redshift-copy".into(),
            region: Some("eu-west-1".into()),
        };
        assert_eq!(
            plan.stage_sql(),
            [
                "CREATE TEMP TABLE \"page_metrics_daily_stage\" (LIKE \"analytics\".\"page_metrics_daily\")",
                "COPY \"page_metrics_daily_stage\" FROM 's3://staging/weir/analytics_page_metrics_daily/l1.parquet' \
                 IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-copy' FORMAT AS PARQUET REGION 'eu-west-1'",
            ]
        );
        assert_eq!(
            plan.swap_sql(),
            "INSERT INTO \"analytics\".\"page_metrics_daily\" SELECT * FROM \"page_metrics_daily_stage\""
        );
    }
}
