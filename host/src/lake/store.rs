//! Opening the object store behind a lake URL, and the lake's file and
//! commit operations on it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};

use super::commit::{CommitRecord, CommittedFile};
use crate::pipeline::LakeConfig;

/// A lake operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The lake URL cannot be used.
    #[error("lake url `{url}`: {message}")]
    Url {
        /// the URL.
        url: String,
        /// what is wrong.
        message: String,
    },
    /// The object store failed (network, permissions, outage).
    #[error("object store, key `{key}`: {error}")]
    Store {
        /// the object key.
        key: String,
        /// the store's error.
        error: object_store::Error,
    },
    /// A commit record cannot be parsed.
    #[error("commit record `{key}` is corrupt: {message}")]
    CorruptCommit {
        /// the object key.
        key: String,
        /// parser message.
        message: String,
    },
}

/// The result of trying to create a commit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The record is now the partition's latest.
    Committed,
    /// A record with that key exists: another writer owns the range.
    Conflict,
}

/// The lake of one pipeline.
#[derive(Clone, Debug)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
}

impl Lake {
    /// Open the lake at `config.url`.
    pub fn open(config: &LakeConfig) -> Result<Self, LakeError> {
        let url = config.url.clone();
        let bad = |message: String| LakeError::Url {
            url: url.clone(),
            message,
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("expected s3://bucket/prefix".into()));
            }
            let s3 = &config.s3;
            let timeout = Duration::from_secs(s3.request_timeout_secs.max(1));
            let client = ClientOptions::new()
                .with_timeout(timeout)
                .with_connect_timeout(Duration::from_secs(5));
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_client_options(client)
                .with_retry(RetryConfig {
                    max_retries: s3.client_retries,
                    retry_timeout: timeout * (s3.client_retries as u32 + 1),
                    ..RetryConfig::default()
                });
            if let Some(region) = &s3.region {
                builder = builder.with_region(region);
            }
            if let Some(endpoint) = &s3.endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            builder = builder.with_allow_http(s3.allow_http);
            if let (Some(key), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                builder = builder
                    .with_access_key_id(key)
                    .with_secret_access_key(secret);
            }
            let store = builder.build().map_err(|e| bad(e.to_string()))?;
            return Ok(Lake {
                store: Arc::new(store),
                root: Path::from(prefix),
                url,
            });
        }
        let local = url.strip_prefix("file://").unwrap_or(&url);
        if local.contains("://") {
            return Err(bad(
                "expected a local path, file:///path or s3://bucket/prefix".into(),
            ));
        }
        std::fs::create_dir_all(local).map_err(|e| bad(format!("cannot create directory: {e}")))?;
        let store = LocalFileSystem::new_with_prefix(local).map_err(|e| bad(e.to_string()))?;
        Ok(Lake {
            store: Arc::new(store),
            root: Path::default(),
            url,
        })
    }

    /// The lake URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object store key of a path relative to the lake root.
    pub fn key(&self, relative: &str) -> Path {
        if self.root.as_ref().is_empty() {
            Path::from(relative)
        } else {
            Path::from(format!("{}/{relative}", self.root))
        }
    }

    /// A path relative to the lake root from a store key.
    pub fn relative(&self, key: &Path) -> String {
        let key = key.as_ref();
        let root = self.root.as_ref();
        if root.is_empty() {
            key.to_string()
        } else {
            key.strip_prefix(root)
                .unwrap_or(key)
                .trim_start_matches('/')
                .to_string()
        }
    }

    /// The underlying store (for readers).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Write (or overwrite) a file.
    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<(), LakeError> {
        let key = self.key(relative);
        self.store
            .put(&key, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|error| LakeError::Store {
                key: key.to_string(),
                error,
            })
    }

    /// Create a commit record unless its key exists.
    pub async fn commit(&self, record: &CommitRecord) -> Result<CommitOutcome, LakeError> {
        let key = self.key(&record.key());
        let body = serde_json::to_vec_pretty(record).expect("commit records serialize");
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&key, PutPayload::from(body), options)
            .await
        {
            Ok(_) => Ok(CommitOutcome::Committed),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(CommitOutcome::Conflict),
            Err(error) => Err(LakeError::Store {
                key: key.to_string(),
                error,
            }),
        }
    }

    async fn read_commit(&self, key: &Path) -> Result<CommitRecord, LakeError> {
        let bytes = self
            .store
            .get(key)
            .await
            .map_err(|error| LakeError::Store {
                key: key.to_string(),
                error,
            })?
            .bytes()
            .await
            .map_err(|error| LakeError::Store {
                key: key.to_string(),
                error,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| LakeError::CorruptCommit {
            key: key.to_string(),
            message: e.to_string(),
        })
    }

    async fn list(&self, relative: &str) -> Result<Vec<object_store::ObjectMeta>, LakeError> {
        let prefix = self.key(relative);
        self.store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|error| LakeError::Store {
                key: prefix.to_string(),
                error,
            })
    }

    /// Record `record` as its partition's newest (a hint: readers verify it
    /// by listing what comes after it).
    pub async fn set_latest_hint(&self, record: &CommitRecord) -> Result<(), LakeError> {
        let hint = CommitRecord::latest_hint(&record.topic, record.partition);
        self.put(&hint, Bytes::from(record.key())).await
    }

    /// The latest commit record of one Kafka partition. With a hint, only the
    /// records after it are listed; without one (or with a hint naming a
    /// record that does not exist), all of them.
    pub async fn last_commit(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<CommitRecord>, LakeError> {
        let relative = CommitRecord::partition_prefix(topic, partition);
        let hint_key = self.key(&CommitRecord::latest_hint(topic, partition));
        let store_error = |key: &Path| {
            let key = key.to_string();
            move |error| LakeError::Store { key, error }
        };
        let hint = match self.store.get(&hint_key).await {
            Ok(found) => Some(self.key(&String::from_utf8_lossy(
                &found.bytes().await.map_err(store_error(&hint_key))?,
            ))),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(error) => return Err(store_error(&hint_key)(error)),
        };
        if let Some(hinted) = &hint {
            let prefix = self.key(&relative);
            let mut newer: Vec<object_store::ObjectMeta> = self
                .store
                .list_with_offset(Some(&prefix), hinted)
                .try_collect()
                .await
                .map_err(store_error(&prefix))?;
            newer.retain(|m| m.location.as_ref().ends_with(".json"));
            if let Some(meta) = newer.into_iter().max_by(|a, b| a.location.cmp(&b.location)) {
                return Ok(Some(self.read_commit(&meta.location).await?));
            }
            match self.read_commit(hinted).await {
                Ok(record) => return Ok(Some(record)),
                Err(LakeError::Store {
                    error: object_store::Error::NotFound { .. },
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut metas = self.list(&relative).await?;
        metas.retain(|m| m.location.as_ref().ends_with(".json"));
        match metas.into_iter().max_by(|a, b| a.location.cmp(&b.location)) {
            Some(meta) => Ok(Some(self.read_commit(&meta.location).await?)),
            None => Ok(None),
        }
    }

    /// Every commit record, ordered by topic, partition and offset.
    pub async fn commits(&self) -> Result<Vec<CommitRecord>, LakeError> {
        let mut metas = self.list(CommitRecord::PREFIX).await?;
        metas.retain(|m| m.location.as_ref().ends_with(".json"));
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        let mut records = Vec::with_capacity(metas.len());
        for meta in metas {
            records.push(self.read_commit(&meta.location).await?);
        }
        Ok(records)
    }

    /// Committed files (data and dead letters), optionally of one partition value.
    pub async fn committed_files(
        &self,
        partition_value: Option<&str>,
    ) -> Result<Vec<CommittedFile>, LakeError> {
        let files = self.commits().await?.into_iter().flat_map(|c| c.files);
        Ok(files
            .filter(|f| {
                partition_value.is_none() || f.partition_value.as_deref() == partition_value
            })
            .collect())
    }

    /// Files under `relative` with their age, for vacuum.
    pub(crate) async fn listing(
        &self,
        relative: &str,
    ) -> Result<Vec<object_store::ObjectMeta>, LakeError> {
        self.list(relative).await
    }

    /// Delete one file.
    pub(crate) async fn delete(&self, key: &Path) -> Result<(), LakeError> {
        self.store
            .delete(key)
            .await
            .map_err(|error| LakeError::Store {
                key: key.to_string(),
                error,
            })
    }
}
