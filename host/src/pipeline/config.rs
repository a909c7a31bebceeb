//! The pipeline file: one TOML document describing source, schema, plugin,
//! lake, dead letters and ingest tuning.
//!
//! Unknown keys are errors. Any key can be overridden from the environment
//! (`WEIR_SOURCE__BROKERS=...`: sections separated by a double underscore)
//! or on the command line (`--set source.brokers=...`); command-line values
//! win over the environment, which wins over the file. Every error names the
//! file, the key and what was expected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::aggregate::AggregateConfig;
use super::orchestrate::{CheckpointsConfig, OrchestratorConfig};
use super::schema::{DeclaredSchema, FieldSpec};
use super::warehouse::WarehouseConfig;
use crate::plugin::Limits;

/// A whole pipeline definition.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// pipeline name, used in logs, metrics and checkpoints.
    pub name: String,
    /// where events come from.
    pub source: SourceConfig,
    /// the declared event schema.
    pub schema: SchemaConfig,
    /// the preprocessing plugin.
    pub plugin: PluginConfig,
    /// the Parquet lake.
    pub lake: LakeConfig,
    /// tuning of the streaming path.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// the batch aggregation (`weir aggregate`).
    pub aggregate: Option<AggregateConfig>,
    /// where aggregates are loaded.
    pub warehouse: Option<WarehouseConfig>,
    /// where the orchestrator keeps checkpoints and leases.
    pub checkpoints: Option<CheckpointsConfig>,
    /// the orchestrator (`weir orchestrate`).
    pub orchestrator: Option<OrchestratorConfig>,
}

/// The Kafka source.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// bootstrap servers (`host:port,...`), or `embedded`: a real broker
    /// (tansu, in memory) that weir starts, owns and stops.
    pub brokers: String,
    /// topic to read (several: comma-separated).
    pub topic: String,
    /// consumer group shared by every host of this pipeline.
    pub group: String,
    /// partitions to create when `brokers = "embedded"`.
    #[serde(default = "default_partitions")]
    pub embedded_partitions: i32,
    /// librdkafka client settings passed through as they are
    /// (`"security.protocol" = "SASL_SSL"`, `"sasl.mechanism"`, ...).
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
}

fn default_partitions() -> i32 {
    3
}

impl SourceConfig {
    /// The topics, split from `topic`.
    pub fn topics(&self) -> Vec<String> {
        self.topic
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    }
}

/// `[schema]`: the fields every event is decoded into.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// fields in column order.
    pub fields: Vec<FieldSpec>,
}

/// `[plugin]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// the component: a file path (relative to the pipeline file) or an
    /// object store URL (`s3://bucket/key.wasm`).
    pub path: String,
    /// key/value configuration handed to the plugin's `init`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// sandbox limits.
    #[serde(default)]
    pub limits: Limits,
    /// how often `weir run` checks the plugin for a new version (file
    /// modification time, or the object's ETag), in milliseconds; 0 turns
    /// the watch off (`POST /plugins/reload` and SIGHUP still work).
    #[serde(default = "default_watch_interval")]
    pub watch_interval_ms: u64,
    /// accept a new version whose output schema differs from the running
    /// one's (the lake then holds files of both schemas).
    #[serde(default)]
    pub allow_schema_change: bool,
}

fn default_watch_interval() -> u64 {
    2000
}

/// `[lake]`: a Delta Lake table (and a second one for dead letters).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// the data table: a local path (relative paths are relative to the
    /// pipeline file), `file:///...` or `s3://bucket/prefix`. Created on
    /// first use with the plugin's output schema.
    pub url: String,
    /// the dead-letter table (default `<url>/_dead_letters`).
    #[serde(default)]
    pub dead_letters_url: Option<String>,
    /// output column whose value partitions the data (`event_date=.../`).
    #[serde(default = "default_partition_by")]
    pub partition_by: String,
    /// Parquet compression: `zstd` (default), `snappy`, `lz4`, `none`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// rows per Parquet row group.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// output columns written without Parquet min/max statistics (every
    /// other column has them per page): columns of unique or long strings
    /// such as ids and user agents, whose range in a row group prunes no
    /// query while keeping it costs two string comparisons per value.
    #[serde(default)]
    pub skip_statistics: Vec<String>,
    /// S3 settings (region, endpoint, ...); credentials come from the usual
    /// AWS chain (environment, profile, instance role) unless set here.
    #[serde(default)]
    pub s3: S3Config,
    /// a Delta checkpoint is written every this many commits (the table
    /// property `delta.checkpointInterval`, set when the table is created):
    /// readers load the checkpoint plus at most this many commits.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: u64,
    /// attempts of one commit against concurrent writers of other
    /// partitions before the flush is retried as a whole.
    #[serde(default = "default_commit_retries")]
    pub commit_retries: usize,
    /// `weir lake optimize` compacts a date's files into files of about this size.
    #[serde(default = "default_optimize_target")]
    pub optimize_target_bytes: u64,
    /// hours a file no table version references must be old before
    /// `weir lake vacuum` removes it (Delta's default is 168, a week; time
    /// travel to versions older than this stops working).
    #[serde(default = "default_vacuum_retention")]
    pub vacuum_retention_hours: u64,
}

fn default_partition_by() -> String {
    "event_date".into()
}
fn default_compression() -> String {
    "zstd".into()
}
fn default_row_group_rows() -> usize {
    128 * 1024
}
fn default_checkpoint_interval() -> u64 {
    100
}
fn default_commit_retries() -> usize {
    15
}
fn default_optimize_target() -> u64 {
    128 * 1024 * 1024
}
fn default_vacuum_retention() -> u64 {
    168
}

/// `[lake.s3]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// AWS region.
    pub region: Option<String>,
    /// endpoint of an S3-compatible store (implies path-style requests).
    pub endpoint: Option<String>,
    /// allow `http://` endpoints.
    #[serde(default)]
    pub allow_http: bool,
    /// access key (else the AWS chain).
    pub access_key_id: Option<String>,
    /// secret key (else the AWS chain).
    pub secret_access_key: Option<String>,
    /// timeout of one request, in seconds (large Parquet uploads need room).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// retries of one request inside the S3 client before weir's own
    /// backoff (which never gives up while running) takes over.
    #[serde(default = "default_client_retries")]
    pub client_retries: usize,
}

fn default_request_timeout() -> u64 {
    60
}
fn default_client_retries() -> usize {
    3
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            region: None,
            endpoint: None,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            request_timeout_secs: default_request_timeout(),
            client_retries: default_client_retries(),
        }
    }
}

/// `[ingest]`: batching, rolling and memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// events per plugin call.
    pub batch_rows: usize,
    /// roll (flush and commit) a Kafka partition's files at this many rows.
    pub flush_rows: usize,
    /// ... or at this many buffered bytes.
    pub flush_bytes: usize,
    /// ... or when its oldest buffered event is this old (quiet partitions).
    pub flush_age_ms: u64,
    /// cap on all buffered data; past it the largest partition is flushed.
    pub max_buffer_bytes: usize,
    /// first retry delay when the object store fails; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// longest retry delay.
    pub retry_max_ms: u64,
    /// how long one flush keeps retrying before consumption is paused (the
    /// consumer keeps polling, so the group keeps this host; flushes are
    /// retried with backoff and consumption resumes when one succeeds).
    pub retry_window_ms: u64,
    /// how long shutdown may take to flush and commit.
    pub shutdown_timeout_ms: u64,
    /// partition-parallel workers (decode, plugin, Parquet), each with its
    /// own plugin instance; 0 (the default) means one per core. A Kafka
    /// partition belongs to one worker at a time.
    pub workers: usize,
}

impl IngestConfig {
    /// The number of workers to run: `workers`, or one per core.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch_rows: 4096,
            flush_rows: 500_000,
            flush_bytes: 128 << 20,
            flush_age_ms: 30_000,
            max_buffer_bytes: 384 << 20,
            retry_initial_ms: 200,
            retry_max_ms: 10_000,
            retry_window_ms: 30_000,
            shutdown_timeout_ms: 30_000,
            workers: 0,
        }
    }
}

/// A pipeline file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{file}: cannot read: {error}")]
    Read {
        /// the file.
        file: PathBuf,
        /// why.
        error: std::io::Error,
    },
    /// Not TOML.
    #[error("{file}: not valid TOML: {message}")]
    Syntax {
        /// the file.
        file: PathBuf,
        /// the parser's message.
        message: String,
    },
    /// A key is unknown, missing or of the wrong type.
    #[error("{file}: key `{key}`: {message}")]
    Key {
        /// the file.
        file: PathBuf,
        /// dotted key path.
        key: String,
        /// what was expected.
        message: String,
    },
    /// An override is not `section.key=value`.
    #[error("override `{0}`: expected section.key=value")]
    Override(String),
}

/// A loaded pipeline: the config plus where it came from.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// the file it was read from.
    pub file: PathBuf,
    /// the validated configuration.
    pub config: PipelineConfig,
    /// the declared schema.
    pub schema: DeclaredSchema,
}

impl Pipeline {
    /// Read `file`, apply `WEIR_*` environment overrides then `--set`
    /// overrides, and validate.
    pub fn load(file: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|error| ConfigError::Read {
            file: file.into(),
            error,
        })?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::parse(file, &text, &env, overrides)
    }

    /// Parse `text` (as if read from `file`) with the given environment.
    pub fn parse(
        file: &Path,
        text: &str,
        env: &[(String, String)],
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.into(),
            message: one_line(&e.to_string()),
        })?;
        for (name, value) in env {
            let Some(path) = name.strip_prefix("WEIR_") else {
                continue;
            };
            if !path.contains("__") {
                continue; // WEIR_LOG_FORMAT and friends are not pipeline keys
            }
            let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
            set_key(&mut doc, &keys, value);
        }
        for o in overrides {
            let (key, value) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::Override(o.clone()))?;
            let keys: Vec<String> = key.trim().split('.').map(str::to_string).collect();
            if keys.iter().any(String::is_empty) {
                return Err(ConfigError::Override(o.clone()));
            }
            set_key(&mut doc, &keys, value);
        }
        let config: PipelineConfig = serde_path_to_error::deserialize(toml::Value::Table(doc))
            .map_err(|e| ConfigError::Key {
                file: file.into(),
                key: e.path().to_string(),
                message: one_line(&e.inner().to_string()),
            })?;
        let key_error = |key: &str, message: String| ConfigError::Key {
            file: file.into(),
            key: key.into(),
            message,
        };
        let schema = DeclaredSchema::new(config.schema.fields.clone())
            .map_err(|e| key_error("schema.fields", e.to_string()))?;
        if config.source.topics().is_empty() {
            return Err(key_error(
                "source.topic",
                "expected at least one topic name".into(),
            ));
        }
        if config.source.group.trim().is_empty() {
            return Err(key_error(
                "source.group",
                "expected a consumer group name".into(),
            ));
        }
        if !["zstd", "snappy", "lz4", "none"].contains(&config.lake.compression.as_str()) {
            return Err(key_error(
                "lake.compression",
                format!(
                    "expected zstd, snappy, lz4 or none, got `{}`",
                    config.lake.compression
                ),
            ));
        }
        let ingest = &config.ingest;
        for (key, value) in [
            ("ingest.batch_rows", ingest.batch_rows),
            ("ingest.flush_rows", ingest.flush_rows),
            ("lake.row_group_rows", config.lake.row_group_rows),
        ] {
            if value == 0 {
                return Err(key_error(key, "expected a positive number".into()));
            }
        }
        if let Some(aggregate) = &config.aggregate {
            aggregate
                .validate(&config.lake.partition_by)
                .map_err(|(key, message)| key_error(&key, message))?;
        }
        if let Some(w) = &config.warehouse {
            if !["postgres://", "postgresql://", "redshift://", "sqlite://"]
                .iter()
                .any(|p| w.url.starts_with(p))
            {
                return Err(key_error(
                    "warehouse.url",
                    format!(
                        "expected postgres://, redshift:// or sqlite://, got `{}`",
                        redact(&w.url)
                    ),
                ));
            }
            if w.table.trim().is_empty() {
                return Err(key_error("warehouse.table", "expected a table name".into()));
            }
        }
        // every URL a run opens, checked now with the message the run gives
        let mut urls = vec![
            ("lake.url", Some(&config.lake.url)),
            (
                "lake.dead_letters_url",
                config.lake.dead_letters_url.as_ref(),
            ),
            ("plugin.path", Some(&config.plugin.path)),
        ];
        if let Some(w) = &config.warehouse {
            urls.push((
                "warehouse.copy.staging_url",
                w.copy.as_ref().map(|c| &c.staging_url),
            ));
        }
        for (key, url) in urls {
            if let Some(url) = url {
                crate::objstore::check_url(url).map_err(|e| key_error(key, e.to_string()))?;
            }
        }
        if let Some(c) = &config.checkpoints {
            super::orchestrate::check_checkpoints_url(&c.url)
                .map_err(|message| key_error("checkpoints.url", message))?;
        }
        let mut config = config;
        // relative local paths (lake directory, SQLite file, checkpoint
        // directory) are relative to the pipeline file, like the plugin path
        let base = file.parent().unwrap_or(Path::new("."));
        let resolve = |path: &str| -> String {
            if Path::new(path).is_absolute() {
                path.to_string()
            } else {
                base.join(path).display().to_string()
            }
        };
        if !config.lake.url.contains("://") {
            config.lake.url = resolve(&config.lake.url);
        }
        if let Some(url) = config.lake.dead_letters_url.as_mut()
            && !url.contains("://")
        {
            *url = resolve(url);
        }
        if config.lake.checkpoint_interval == 0 {
            return Err(key_error(
                "lake.checkpoint_interval",
                "expected at least 1 (commits between Delta checkpoints)".into(),
            ));
        }
        if let Some(w) = config.warehouse.as_mut()
            && let Some(path) = w.url.strip_prefix("sqlite://")
        {
            w.url = format!("sqlite://{}", resolve(path));
        }
        if let Some(c) = config.checkpoints.as_mut()
            && !c.url.contains("://")
        {
            c.url = resolve(&c.url);
        }
        Ok(Pipeline {
            file: file.to_path_buf(),
            config,
            schema,
        })
    }

    /// The plugin location: object store URLs as they are, file paths
    /// resolved against the pipeline file's directory.
    pub fn plugin_location(&self) -> String {
        let path = &self.config.plugin.path;
        if path.contains("://") || Path::new(path).is_absolute() {
            return path.clone();
        }
        let base = self.file.parent().unwrap_or(Path::new("."));
        base.join(path).display().to_string()
    }

    /// The plugin configuration as pairs.
    pub fn plugin_config(&self) -> Vec<(String, String)> {
        self.config
            .plugin
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A URL with its password (if any) replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Set a dotted key, creating tables; the value is parsed as TOML when it
/// can be (numbers, booleans, arrays), else taken as a string.
fn set_key(doc: &mut toml::Table, keys: &[String], raw: &str) {
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut table = doc;
    for key in &keys[..keys.len() - 1] {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        table = entry.as_table_mut().expect("made a table above");
    }
    table.insert(keys[keys.len() - 1].clone(), value);
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
[source]
brokers = "embedded"
topic = "events"
group = "g"
[schema]
fields = [{ name = "event_id", type = "string", nullable = false }]
[plugin]
path = "p.wasm"
[lake]
url = "/tmp/lake"
"#;

    fn parse(text: &str, env: &[(&str, &str)], sets: &[&str]) -> Result<Pipeline, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Pipeline::parse(Path::new("pipe.toml"), text, &env, &sets)
    }

    #[test]
    fn overrides_apply_in_order() {
        let p = parse(
            MINIMAL,
            &[
                ("WEIR_SOURCE__BROKERS", "env:9092"),
                ("WEIR_INGEST__BATCH_ROWS", "7"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(p.config.source.brokers, "env:9092");
        assert_eq!(p.config.ingest.batch_rows, 7);
        let p = parse(
            MINIMAL,
            &[("WEIR_SOURCE__BROKERS", "env:9092")],
            &["source.brokers=cli:9092"],
        )
        .unwrap();
        assert_eq!(p.config.source.brokers, "cli:9092");
        assert_eq!(p.plugin_location(), "p.wasm");
        let p = parse(MINIMAL, &[], &["lake.url=lake"]).unwrap();
        assert_eq!(
            p.config.lake.url, "lake",
            "relative to pipe.toml's (empty) directory"
        );
        let sets = ["lake.url=../lake".to_string()];
        let p = Pipeline::parse(Path::new("/etc/weir/pipe.toml"), MINIMAL, &[], &sets).unwrap();
        assert_eq!(p.config.lake.url, "/etc/weir/../lake");
        let sets = [
            "warehouse.url=sqlite://wh.db".to_string(),
            "warehouse.table=t".to_string(),
            "checkpoints.url=ckpt".to_string(),
        ];
        let p = Pipeline::parse(Path::new("/etc/weir/pipe.toml"), MINIMAL, &[], &sets).unwrap();
        assert_eq!(p.config.warehouse.unwrap().url, "sqlite:///etc/weir/wh.db");
        assert_eq!(p.config.checkpoints.unwrap().url, "/etc/weir/ckpt");
    }

    #[test]
    fn errors_name_file_and_key() {
        let err = parse(
            &MINIMAL.replace("group = \"g\"", "group = \"g\"\ncolour = 1"),
            &[],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("pipe.toml: key `source.colour`: unknown field `colour`"),
            "{err}"
        );
        let err = parse(MINIMAL, &[], &["ingest.batch_rows=many"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key `ingest.batch_rows`") && err.contains("expected usize"),
            "{err}"
        );
        let err = parse(&MINIMAL.replace("topic = \"events\"\n", ""), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `topic`"), "{err}");
        let err = parse(MINIMAL, &[], &["lake.compression=gzip"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `lake.compression`"), "{err}");
    }
}
