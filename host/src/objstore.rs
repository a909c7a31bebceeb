//! One parsed location for every URL weir reads or writes (the lake, the
//! dead-letter table, a plugin, a staging prefix): a local path,
//! `file:///path` or `s3://bucket/prefix`, opened as an object store whose
//! root is the file system root or the bucket, plus the key prefix inside it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use url::Url;

use crate::pipeline::S3Config;

/// A URL that cannot be opened, or a request that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL cannot be used.
    #[error("url `{url}`: {message}")]
    Url {
        /// the URL.
        url: String,
        /// what is wrong, and what was expected.
        message: String,
    },
    /// The object store failed (network, permissions, outage, missing key).
    #[error("object store, key `{key}`: {source}")]
    Request {
        /// the object key.
        key: String,
        /// the store's error.
        #[source]
        source: object_store::Error,
    },
}

/// An opened location: the store (rooted at `/` or at the bucket), the
/// prefix of the location inside it, and its canonical URL.
#[derive(Clone, Debug)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: Url,
}

/// Check that `url` is one [`Location::open`] takes (a local path,
/// `file:///path` or `s3://bucket/prefix`), without opening it: the error is
/// the one opening it would give.
pub fn check_url(url: &str) -> Result<(), StoreError> {
    let bad = |message: &str| StoreError::Url {
        url: url.to_string(),
        message: message.to_string(),
    };
    if let Some(rest) = url.strip_prefix("s3://") {
        let bucket = rest.split_once('/').map_or(rest, |(b, _)| b);
        return if bucket.is_empty() {
            Err(bad("expected s3://bucket/prefix"))
        } else {
            Ok(())
        };
    }
    if url.strip_prefix("file://").unwrap_or(url).contains("://") {
        return Err(bad(
            "expected a local path, file:///path or s3://bucket/prefix",
        ));
    }
    Ok(())
}

impl Location {
    /// Open `url` (a local path, `file:///path` or `s3://bucket/prefix`).
    /// Local directories are created.
    pub fn open(url: &str, s3: &S3Config) -> Result<Self, StoreError> {
        let bad = |message: String| StoreError::Url {
            url: url.to_string(),
            message,
        };
        check_url(url)?;
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let store = s3_store(bucket, s3).map_err(|e| bad(e.to_string()))?;
            let prefix = prefix.trim_matches('/');
            let parsed = Url::parse(&format!("s3://{bucket}/{prefix}"))
                .map_err(|e| bad(format!("not a URL: {e}")))?;
            return Ok(Location {
                store: Arc::new(store),
                prefix: Path::from(prefix),
                url: parsed,
            });
        }
        let local = url.strip_prefix("file://").unwrap_or(url);
        std::fs::create_dir_all(local).map_err(|e| bad(format!("cannot create directory: {e}")))?;
        let absolute = std::fs::canonicalize(local)
            .map_err(|e| bad(format!("cannot resolve the directory: {e}")))?;
        let parsed = Url::from_directory_path(&absolute)
            .map_err(|()| bad("not an absolute directory".into()))?;
        let prefix = Path::from_absolute_path(&absolute).map_err(|e| bad(e.to_string()))?;
        Ok(Location {
            store: Arc::new(LocalFileSystem::new()),
            prefix,
            url: parsed,
        })
    }

    /// A location below this one (`child("_dead_letters")`).
    pub fn child(&self, relative: &str) -> Result<Self, StoreError> {
        let relative = relative.trim_matches('/');
        let mut url = self.url.clone();
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let url = url
            .join(&format!("{relative}/"))
            .map_err(|e| StoreError::Url {
                url: format!("{}/{relative}", self.url),
                message: e.to_string(),
            })?;
        if url.scheme() == "file"
            && let Ok(path) = url.to_file_path()
        {
            std::fs::create_dir_all(&path).map_err(|e| StoreError::Url {
                url: url.to_string(),
                message: format!("cannot create directory: {e}"),
            })?;
        }
        Ok(Location {
            store: self.store.clone(),
            prefix: self.key(relative),
            url,
        })
    }

    /// The canonical URL (`file:///abs/dir/` or `s3://bucket/prefix`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The store, rooted at `/` (local) or at the bucket (S3).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Replace the store (same root), for example with an instrumented one.
    pub fn with_store(mut self, store: Arc<dyn ObjectStore>) -> Self {
        self.store = store;
        self
    }

    /// The key of a path relative to this location.
    pub fn key(&self, relative: &str) -> Path {
        let relative = relative.trim_start_matches('/');
        if self.prefix.as_ref().is_empty() {
            Path::from(relative)
        } else if relative.is_empty() {
            self.prefix.clone()
        } else {
            Path::from(format!("{}/{relative}", self.prefix))
        }
    }

    /// Write (or overwrite) a file.
    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<(), StoreError> {
        let key = self.key(relative);
        self.store
            .put(&key, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|source| StoreError::Request {
                key: key.to_string(),
                source,
            })
    }

    /// Read a whole file.
    pub async fn get(&self, relative: &str) -> Result<Bytes, StoreError> {
        let key = self.key(relative);
        let fail = |source| StoreError::Request {
            key: key.to_string(),
            source,
        };
        self.store
            .get(&key)
            .await
            .map_err(fail)?
            .bytes()
            .await
            .map_err(fail)
    }
}

/// An S3 store for one bucket, with weir's timeouts and retries.
fn s3_store(
    bucket: &str,
    s3: &S3Config,
) -> Result<object_store::aws::AmazonS3, object_store::Error> {
    let timeout = Duration::from_secs(s3.request_timeout_secs.max(1));
    let client = ClientOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(Duration::from_secs(5))
        .with_allow_http(s3.allow_http);
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
    if let (Some(key), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
        builder = builder
            .with_access_key_id(key)
            .with_secret_access_key(secret);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_s3_locations() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Location::open(dir.path().to_str().unwrap(), &S3Config::default()).unwrap();
        assert_eq!(lake.url().scheme(), "file");
        let dead = lake.child("_dead_letters").unwrap();
        assert!(dead.url().as_str().ends_with("/_dead_letters/"));
        assert!(dir.path().join("_dead_letters").is_dir());
        assert!(
            dead.key("a.parquet")
                .as_ref()
                .ends_with("_dead_letters/a.parquet")
        );
        let s3 = S3Config {
            region: Some("us-east-1".into()),
            ..S3Config::default()
        };
        let remote = Location::open("s3://bucket/weir/lake", &s3).unwrap();
        assert_eq!(remote.url().as_str(), "s3://bucket/weir/lake");
        assert_eq!(remote.key("x").as_ref(), "weir/lake/x");
        assert!(Location::open("gs://b/x", &s3).is_err());
    }
}
