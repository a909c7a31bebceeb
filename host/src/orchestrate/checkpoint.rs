//! Checkpoints and leases per (pipeline, date partition), behind one
//! interface with two stores: DynamoDB and a local directory. Every write is
//! a compare-and-swap on the record's version, so two orchestrators never
//! hold the same lease and a stale worker cannot overwrite a newer
//! checkpoint.

use serde::{Deserialize, Serialize};

use super::dynamo::DynamoStore;
use super::file_store::FileStore;

/// Where a partition stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// never run.
    #[default]
    Pending,
    /// leased and running.
    Running,
    /// the last run loaded the recorded position.
    Succeeded,
    /// the last run failed after every attempt.
    Failed,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(text: &str) -> Status {
        match text {
            "running" => Status::Running,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            _ => Status::Pending,
        }
    }
}

/// One partition's checkpoint and lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// pipeline name.
    pub pipeline: String,
    /// the date partition.
    pub partition: String,
    /// the data table version last loaded (`v<version>`).
    pub position: Option<String>,
    /// where it stands.
    pub status: Status,
    /// failed attempts of the current or last run.
    pub attempts: u32,
    /// the last error.
    pub last_error: Option<String>,
    /// the commit position the last failed run tried (polling does not
    /// retry it again; a new event or `weir orchestrate retry` does).
    #[serde(default)]
    pub failed_position: Option<String>,
    /// when it last finished (RFC 3339).
    pub last_run: Option<String>,
    /// who holds the lease.
    pub lease_owner: Option<String>,
    /// when the lease expires (epoch ms).
    pub lease_expires_ms: i64,
    /// compare-and-swap version (0 = not stored yet).
    pub version: u64,
}

/// Why a checkpoint store failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store is unreachable or refused the request.
    #[error("checkpoints {store}: {error}")]
    Store {
        /// which store (table or directory).
        store: String,
        /// what went wrong.
        error: String,
    },
    /// The store's URL cannot be used.
    #[error(
        "checkpoints.url `{url}`: {expected}",
        url = .0,
        expected = crate::pipeline::orchestrate::CHECKPOINTS_URL_EXPECTED
    )]
    Url(String),
}

/// The two stores.
#[derive(Debug)]
pub enum CheckpointStore {
    /// DynamoDB.
    Dynamo(DynamoStore),
    /// a local directory.
    File(FileStore),
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl CheckpointStore {
    /// Read one checkpoint (a default one when never stored).
    pub async fn get(
        &self,
        pipeline: &str,
        partition: &str,
    ) -> Result<Checkpoint, CheckpointError> {
        let found = match self {
            CheckpointStore::Dynamo(d) => d.get(pipeline, partition).await?,
            CheckpointStore::File(f) => f.get(pipeline, partition)?,
        };
        Ok(found.unwrap_or_else(|| Checkpoint {
            pipeline: pipeline.into(),
            partition: partition.into(),
            ..Default::default()
        }))
    }

    /// Every checkpoint of a pipeline, by partition.
    pub async fn list(&self, pipeline: &str) -> Result<Vec<Checkpoint>, CheckpointError> {
        let mut all = match self {
            CheckpointStore::Dynamo(d) => d.list(pipeline).await?,
            CheckpointStore::File(f) => f.list(pipeline)?,
        };
        all.sort_by(|a, b| a.partition.cmp(&b.partition));
        Ok(all)
    }

    /// Write `next` if the stored version is still `next.version`; the
    /// stored version becomes `next.version + 1`. `false` when another
    /// writer got there first.
    pub async fn swap(&self, next: &Checkpoint) -> Result<bool, CheckpointError> {
        match self {
            CheckpointStore::Dynamo(d) => d.swap(next).await,
            CheckpointStore::File(f) => f.swap(next),
        }
    }

    /// Take the partition's lease for `ttl_ms` if it is free, expired or
    /// already ours: the leased checkpoint and the status it had before.
    /// `None` when someone else holds it.
    pub async fn acquire(
        &self,
        pipeline: &str,
        partition: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<Option<(Checkpoint, Status)>, CheckpointError> {
        for _ in 0..5 {
            let current = self.get(pipeline, partition).await?;
            let now = now_ms();
            let held_by_other = current.lease_owner.as_deref().is_some_and(|o| o != owner)
                && current.lease_expires_ms > now;
            if held_by_other {
                return Ok(None);
            }
            let mut next = current.clone();
            next.lease_owner = Some(owner.into());
            next.lease_expires_ms = now + ttl_ms;
            next.status = Status::Running;
            if self.swap(&next).await? {
                next.version += 1;
                let previous = if current.status == Status::Running {
                    Status::Pending
                } else {
                    current.status
                };
                return Ok(Some((next, previous)));
            }
        }
        Ok(None)
    }

    /// Extend a held lease by `ttl_ms`; the renewed checkpoint, or `None`
    /// when the lease was lost.
    pub async fn renew(
        &self,
        held: &Checkpoint,
        ttl_ms: i64,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let mut next = held.clone();
        next.lease_expires_ms = now_ms() + ttl_ms;
        if self.swap(&next).await? {
            next.version += 1;
            Ok(Some(next))
        } else {
            Ok(None)
        }
    }

    /// Write the outcome of a run under our lease and release it. `false`
    /// when the lease was lost (expired and taken): nothing is written.
    pub async fn finish(
        &self,
        held: &Checkpoint,
        update: impl FnOnce(&mut Checkpoint),
    ) -> Result<bool, CheckpointError> {
        let mut next = held.clone();
        update(&mut next);
        next.lease_owner = None;
        next.lease_expires_ms = 0;
        next.last_run = Some(chrono::Utc::now().to_rfc3339());
        self.swap(&next).await
    }
}
