//! `[checkpoints]` and `[orchestrator]`: where checkpoints and leases live,
//! and how the orchestrator listens, polls, debounces, retries and notifies.
//!
//! ```toml
//! [checkpoints]
//! url = "dynamodb://weir-checkpoints"   # or a directory (relative to the pipeline file)
//!
//! [orchestrator]
//! listen = "127.0.0.1:7070"
//! max_attempts = 3
//!
//! [orchestrator.notify]
//! lambda_function = "weir-failures"
//! ```

use serde::{Deserialize, Serialize};

use crate::aws::AwsSettings;

/// AWS client settings in the pipeline file; unset values come from the
/// usual AWS chain (environment, profile, instance role).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// region.
    pub region: Option<String>,
    /// endpoint URL (moto, LocalStack, VPC endpoints).
    pub endpoint: Option<String>,
    /// access key.
    pub access_key_id: Option<String>,
    /// secret key.
    pub secret_access_key: Option<String>,
}

impl AwsConfig {
    /// As client settings.
    pub fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
        }
    }
}

/// `[checkpoints]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointsConfig {
    /// `dynamodb://table-name` (created on demand) or a local directory.
    pub url: String,
    /// DynamoDB client settings.
    #[serde(default)]
    pub aws: AwsConfig,
}

/// What `checkpoints.url` may be.
pub const CHECKPOINTS_URL_EXPECTED: &str = "expected dynamodb://table or a directory path";

/// Check `checkpoints.url` (`dynamodb://table` or a local directory); the
/// message is the one opening the store gives.
pub fn check_checkpoints_url(url: &str) -> Result<(), String> {
    let ok = match url.strip_prefix("dynamodb://") {
        Some(table) => !table.is_empty(),
        None => !url.strip_prefix("file://").unwrap_or(url).contains("://"),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("url `{url}`: {CHECKPOINTS_URL_EXPECTED}"))
    }
}

/// `[orchestrator]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// HTTP address of `POST /events` (and, in `weir run`, the other endpoints).
    pub listen: String,
    /// how often the commit log is polled for new data (0: never; then only
    /// notifications trigger runs).
    pub poll_interval_ms: u64,
    /// a date is aggregated once no notification touched it for this long.
    pub quiet_ms: u64,
    /// attempts per run before the partition is marked failed and notified.
    pub max_attempts: u32,
    /// first retry delay; doubles (with jitter) up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// longest retry delay.
    pub retry_max_ms: u64,
    /// lease duration; a running worker renews it every third of it, so a
    /// crashed worker's partition is taken over after at most this long.
    pub lease_ttl_ms: u64,
    /// failure notices.
    pub notify: NotifyConfig,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            listen: "127.0.0.1:7070".into(),
            poll_interval_ms: 10_000,
            quiet_ms: 2_000,
            max_attempts: 3,
            retry_initial_ms: 1_000,
            retry_max_ms: 60_000,
            lease_ttl_ms: 60_000,
            notify: NotifyConfig::default(),
        }
    }
}

/// `[orchestrator.notify]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Lambda function (name or ARN) invoked asynchronously with a JSON
    /// payload when a partition fails after every attempt; without it, an
    /// error log line.
    pub lambda_function: Option<String>,
    /// Lambda client settings.
    #[serde(default)]
    pub aws: AwsConfig,
}
