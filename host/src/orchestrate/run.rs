//! The orchestrator: S3 events on the data table's `_delta_log/` and
//! polling of its log (from the last version seen) feed the planner;
//! ready partitions are leased, aggregated (the batch job, in-process) with
//! retries, checkpointed, and notified on final failure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Serialize;

use super::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, Status};
use super::config::{CheckpointsConfig, OrchestratorConfig};
use super::dynamo::DynamoStore;
use super::event::ObjectEvent;
use super::file_store::FileStore;
use super::notify::{FailureNotice, Notifier};
use super::planner::{Debouncer, LakeLocation, Touched, classify};
use crate::aggregate::{Selection, position, position_version};
use crate::batch::{BatchError, BatchJob, BatchOptions};
use crate::lake::{LakeError, TableKind};
use crate::pipeline::Pipeline;
use crate::telemetry::Metrics;
use std::sync::atomic::Ordering;

/// Why the orchestrator cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum OrchestrateError {
    /// The pipeline lacks or misconfigures a section.
    #[error("{file}: {message}")]
    Config {
        /// the pipeline file.
        file: String,
        /// what is wrong.
        message: String,
    },
    /// The batch job cannot be opened.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The checkpoint store failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// What one run of a partition came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RunOutcome {
    /// aggregated and loaded.
    Loaded {
        /// attempts it took.
        attempts: u32,
    },
    /// no commit changed the date's data since the version loaded.
    Unchanged,
    /// the table holds no files for the date.
    NoData,
    /// another orchestrator holds the lease.
    Busy,
    /// failed after every attempt (notified).
    Failed {
        /// attempts made.
        attempts: u32,
        /// the last error.
        error: String,
    },
    /// the lease was lost while running (the load itself is idempotent).
    LeaseLost,
}

/// What an intake of events did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Intake {
    /// dates touched.
    pub dates: Vec<String>,
    /// objects ignored (other buckets, prefixes, dead letters, ...).
    pub ignored: usize,
    /// notifications seen before.
    pub duplicates: usize,
}

/// One orchestrator process.
pub struct Orchestrator {
    pipeline: Pipeline,
    config: OrchestratorConfig,
    job: Arc<BatchJob>,
    store: CheckpointStore,
    notifier: Notifier,
    owner: String,
    location: LakeLocation,
    debouncer: Mutex<Debouncer>,
    /// where runs and failures are counted.
    metrics: Arc<Metrics>,
    /// consecutive runs per date that could not start (store unreachable).
    errors: Mutex<BTreeMap<String, u32>>,
    /// the data table's version the last poll read up to.
    cursor: tokio::sync::Mutex<Option<i64>>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("owner", &self.owner)
            .finish()
    }
}

/// Open the checkpoint store a `[checkpoints]` section names.
pub async fn open_store(config: &CheckpointsConfig) -> Result<CheckpointStore, CheckpointError> {
    crate::pipeline::orchestrate::check_checkpoints_url(&config.url)
        .map_err(|_| CheckpointError::Url(config.url.clone()))?;
    match config.url.strip_prefix("dynamodb://") {
        Some(table) => Ok(CheckpointStore::Dynamo(
            DynamoStore::open(table, &config.aws.settings()).await?,
        )),
        None => {
            let path = config.url.strip_prefix("file://").unwrap_or(&config.url);
            Ok(CheckpointStore::File(FileStore::new(path.into())))
        }
    }
}

impl Orchestrator {
    /// Open everything the pipeline's orchestrator needs.
    pub async fn open(
        pipeline: &Pipeline,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, OrchestrateError> {
        let file = pipeline.file.display().to_string();
        let checkpoints =
            pipeline
                .config
                .checkpoints
                .clone()
                .ok_or_else(|| OrchestrateError::Config {
                    file: file.clone(),
                    message: "no [checkpoints] section: where should checkpoints live?".into(),
                })?;
        let config = pipeline.config.orchestrator.clone().unwrap_or_default();
        let job = Arc::new(BatchJob::open(pipeline).await?);
        let store = open_store(&checkpoints).await?;
        let notifier = Notifier::new(
            config.notify.lambda_function.as_deref(),
            &config.notify.aws.settings(),
        )
        .await;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let owner = format!("{}-{}-{:x}", host.trim(), std::process::id(), nonce());
        Ok(Arc::new(Orchestrator {
            location: LakeLocation::of(
                &pipeline.config.lake.url,
                &pipeline.config.lake.partition_by,
            ),
            debouncer: Mutex::new(Debouncer::new(Duration::from_millis(config.quiet_ms))),
            pipeline: pipeline.clone(),
            config,
            job,
            store,
            notifier,
            owner,
            metrics,
            errors: Mutex::default(),
            cursor: tokio::sync::Mutex::new(None),
        }))
    }

    /// [`Orchestrator::open`], retrying with backoff while the checkpoint
    /// store is unreachable (a service should wait for DynamoDB rather than
    /// exit into a crash loop); other errors return at once. `None` when
    /// `stop` was cancelled while waiting.
    pub async fn open_patiently(
        pipeline: &Pipeline,
        metrics: Arc<Metrics>,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Option<Arc<Self>>, OrchestrateError> {
        let max = Duration::from_secs(30);
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(max)
            .without_max_times()
            .build();
        loop {
            match Self::open(pipeline, metrics.clone()).await {
                Ok(o) => return Ok(Some(o)),
                Err(OrchestrateError::Checkpoint(e)) => {
                    let delay = delays.next().unwrap_or(max);
                    tracing::error!(error = %e, retry_in_s = delay.as_secs(), "checkpoint store unreachable; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The orchestrator's settings.
    pub fn config(&self) -> &OrchestratorConfig {
        &self.config
    }

    /// The batch job it runs.
    pub fn job(&self) -> &Arc<BatchJob> {
        &self.job
    }

    /// The checkpoint store.
    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.pipeline.config.name
    }

    /// Classify object events and queue the dates they touch (debounced).
    pub async fn intake(&self, events: &[ObjectEvent]) -> Intake {
        let mut intake = Intake::default();
        for event in events {
            if self.debouncer.lock().expect("debouncer").duplicate(event) {
                intake.duplicates += 1;
                continue;
            }
            let dates = match classify(&self.location, event) {
                Touched::Commit(version) => match self.commit_dates(version).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(key = %event.key, error = %e, "commit named by an event could not be read; polling will find it");
                        Vec::new()
                    }
                },
                Touched::Ignored(why) => {
                    tracing::debug!(bucket = %event.bucket, key = %event.key, why, "event ignored");
                    intake.ignored += 1;
                    Vec::new()
                }
            };
            let now = Instant::now();
            for d in dates {
                self.debouncer
                    .lock()
                    .expect("debouncer")
                    .touch(d.clone(), now);
                if !intake.dates.contains(&d) {
                    intake.dates.push(d);
                }
            }
        }
        intake
    }

    /// The dates whose data commit `version` changed (none for a
    /// compaction).
    async fn commit_dates(&self, version: i64) -> Result<Vec<String>, LakeError> {
        let lake = self.job.lake().await;
        let dates = lake
            .data()
            .commit_dates(&self.pipeline.config.lake.partition_by, version)
            .await?;
        Ok(dates.into_iter().flatten().collect())
    }

    /// Read the data table's log from the last version seen and queue
    /// every date a newer commit changed (compactions change none), or
    /// whose last run failed at an older version. The first poll compares
    /// the whole snapshot with the checkpoints, reading only the commits
    /// after the oldest checkpointed version.
    pub async fn poll(&self) -> Result<Vec<String>, OrchestrateError> {
        let partition_by = self.pipeline.config.lake.partition_by.clone();
        let mut cursor = self.cursor.lock().await;
        let stored: BTreeMap<String, Checkpoint> = self
            .store
            .list(self.name())
            .await?
            .into_iter()
            .map(|c| (c.partition.clone(), c))
            .collect();
        // the version each date was last loaded (or failed) at
        let loaded_at = |c: &Checkpoint| {
            let at = match c.status {
                Status::Succeeded => c.position.as_deref(),
                Status::Failed => c.failed_position.as_deref(),
                _ => c.position.as_deref(),
            };
            at.and_then(position_version)
        };
        let mut lake = self.job.lake().await;
        let table = lake.table_mut(TableKind::Data);
        table.refresh().await.map_err(BatchError::Lake)?;
        let mut candidates: BTreeMap<String, i64> = BTreeMap::new();
        match *cursor {
            Some(seen) => {
                let changes = table
                    .changes_since(&partition_by, Some(seen))
                    .await
                    .map_err(BatchError::Lake)?;
                candidates.extend(changes.dates);
            }
            None => {
                let dates = table
                    .partition_values(&partition_by)
                    .await
                    .map_err(BatchError::Lake)?;
                let oldest = dates
                    .iter()
                    .filter_map(|d| stored.get(d).and_then(loaded_at))
                    .min();
                let changes = match oldest {
                    Some(v) => table
                        .changes_since(&partition_by, Some(v))
                        .await
                        .map_err(BatchError::Lake)?,
                    None => Default::default(),
                };
                let current = table.version().unwrap_or(0);
                for date in dates {
                    let changed = match stored.get(&date).and_then(loaded_at) {
                        None => Some(current),
                        Some(_) if changes.incomplete => Some(current),
                        Some(_) => changes.dates.get(&date).copied(),
                    };
                    if let Some(v) = changed {
                        candidates.insert(date, v);
                    }
                }
            }
        }
        *cursor = table.version();
        drop(lake);
        let mut queued = Vec::new();
        let now = Instant::now();
        for (date, changed_at) in candidates {
            let done = stored
                .get(&date)
                .and_then(loaded_at)
                .is_some_and(|at| at >= changed_at);
            if !done {
                self.debouncer
                    .lock()
                    .expect("debouncer")
                    .touch(date.clone(), now);
                queued.push(date);
            }
        }
        Ok(queued)
    }

    /// Dates whose quiet period has passed.
    pub fn ready(&self) -> Vec<String> {
        self.debouncer
            .lock()
            .expect("debouncer")
            .ready(Instant::now())
    }

    /// Queue a date to become ready no sooner than `delay` from now.
    pub fn requeue_after(&self, date: &str, delay: Duration) {
        let quiet = Duration::from_millis(self.config.quiet_ms);
        let at = Instant::now() + delay.saturating_sub(quiet);
        self.debouncer
            .lock()
            .expect("debouncer")
            .touch(date.to_string(), at);
    }

    /// Queue a date again (after `Busy`).
    pub fn requeue(&self, date: &str) {
        self.debouncer
            .lock()
            .expect("debouncer")
            .touch(date.to_string(), Instant::now());
    }

    /// Lease, aggregate with retries, checkpoint. `force` runs even when the
    /// position was already loaded (`weir orchestrate retry`).
    pub async fn run_partition(
        &self,
        date: &str,
        force: bool,
    ) -> Result<RunOutcome, OrchestrateError> {
        let ttl = self.config.lease_ttl_ms as i64;
        let Some((mut held, previous)) = self
            .store
            .acquire(self.name(), date, &self.owner, ttl)
            .await?
        else {
            tracing::info!(partition = date, "another orchestrator holds the lease");
            return Ok(RunOutcome::Busy);
        };
        let day = date
            .parse::<chrono::NaiveDate>()
            .map_err(|_| OrchestrateError::Config {
                file: self.pipeline.file.display().to_string(),
                message: format!("partition `{date}` is not a date"),
            })?;
        let selection = Selection::Dates(vec![day]);
        let plans = match self.job.plan(&selection).await {
            Ok(p) => p,
            Err(e) => {
                self.store.finish(&held, |c| c.status = previous).await?;
                return Err(e.into());
            }
        };
        let Some(plan) = plans.into_iter().find(|p| !p.files.is_empty()) else {
            self.store.finish(&held, |c| c.status = previous).await?;
            return Ok(RunOutcome::NoData);
        };
        let version = plan.version.unwrap_or(0);
        let position = position(version);
        if !force && previous == Status::Succeeded {
            let at = held.position.as_deref().and_then(position_version);
            let unchanged = match at {
                Some(at) if at >= version => true,
                Some(at) => {
                    let lake = self.job.lake().await;
                    let changes = lake
                        .data()
                        .changes_since(&self.pipeline.config.lake.partition_by, Some(at))
                        .await;
                    matches!(changes, Ok(c) if !c.incomplete && !c.dates.contains_key(date))
                }
                None => false,
            };
            if unchanged {
                self.store
                    .finish(&held, |c| c.status = Status::Succeeded)
                    .await?;
                return Ok(RunOutcome::Unchanged);
            }
        }
        // every attempt loads what this snapshot names, so the checkpoint
        // records exactly the version that was loaded
        let options = BatchOptions {
            selection,
            replace_empty: false,
        };
        let mut last_error = String::new();
        for attempt in 1..=self.config.max_attempts.max(1) {
            self.metrics
                .orchestrator_runs
                .fetch_add(1, Ordering::Relaxed);
            let run = self.job.run_on(
                vec![plan.clone()],
                &options,
                Arc::new(|_: &crate::aggregate::Progress| {}),
            );
            let (result, renewed) = self.with_lease(run, held.clone(), ttl).await;
            let Some(renewed) = renewed else {
                tracing::warn!(
                    partition = date,
                    "lease lost while running; the next owner re-checks the position"
                );
                return Ok(RunOutcome::LeaseLost);
            };
            held = renewed;
            match result {
                Ok(summary) if summary.failed() == 0 => {
                    let pos = position.clone();
                    let kept = self
                        .store
                        .finish(&held, |c| {
                            c.status = Status::Succeeded;
                            c.position = Some(pos);
                            c.attempts = attempt;
                            c.last_error = None;
                            c.failed_position = None;
                        })
                        .await?;
                    tracing::info!(partition = date, attempt, position = %position, "partition loaded and checkpointed");
                    return Ok(if kept {
                        RunOutcome::Loaded { attempts: attempt }
                    } else {
                        RunOutcome::LeaseLost
                    });
                }
                Ok(summary) => {
                    last_error = summary
                        .partitions
                        .iter()
                        .filter_map(|p| p.error.clone())
                        .collect::<Vec<_>>()
                        .join("; ");
                }
                Err(e) => last_error = e.to_string(),
            }
            tracing::warn!(partition = date, attempt, max = self.config.max_attempts, error = %last_error, "run failed");
            if attempt < self.config.max_attempts {
                tokio::time::sleep(self.backoff(attempt)).await;
                match self.store.renew(&held, ttl).await? {
                    Some(r) => held = r,
                    None => return Ok(RunOutcome::LeaseLost),
                }
            }
        }
        let attempts = self.config.max_attempts.max(1);
        let error = last_error.clone();
        self.store
            .finish(&held, |c| {
                c.status = Status::Failed;
                c.attempts = attempts;
                c.last_error = Some(error);
                c.failed_position = Some(position.clone());
            })
            .await?;
        self.metrics
            .orchestrator_failures
            .fetch_add(1, Ordering::Relaxed);
        self.notifier
            .notify(&FailureNotice {
                pipeline: self.name().into(),
                partition: date.into(),
                attempts,
                error: last_error.clone(),
                time: chrono::Utc::now().to_rfc3339(),
            })
            .await;
        Ok(RunOutcome::Failed {
            attempts,
            error: last_error,
        })
    }

    /// Drive `work` while renewing the lease every third of its duration;
    /// the result and the renewed checkpoint (`None` when the lease was lost).
    async fn with_lease<F: std::future::Future>(
        &self,
        work: F,
        mut held: Checkpoint,
        ttl: i64,
    ) -> (F::Output, Option<Checkpoint>) {
        let mut work = std::pin::pin!(work);
        let mut tick = tokio::time::interval(Duration::from_millis((ttl / 3).max(100) as u64));
        tick.tick().await;
        let mut lost = false;
        loop {
            tokio::select! {
                out = &mut work => return (out, (!lost).then_some(held)),
                _ = tick.tick(), if !lost => match self.store.renew(&held, ttl).await {
                    Ok(Some(r)) => held = r,
                    Ok(None) => lost = true,
                    Err(e) => tracing::warn!(error = %e, "lease not renewed; retrying"),
                },
            }
        }
    }

    /// Exponential backoff with jitter for `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let max = Duration::from_millis(self.config.retry_max_ms);
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.config.retry_initial_ms))
            .with_max_delay(max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(max)
    }

    /// Run every ready date once; `Busy` dates are queued again.
    pub async fn run_ready(&self) -> Vec<(String, RunOutcome)> {
        let mut out = Vec::new();
        for date in self.ready() {
            let outcome = match self.run_partition(&date, false).await {
                Ok(o) => {
                    self.errors.lock().expect("errors").remove(&date);
                    o
                }
                Err(e) => {
                    // the checkpoint store or the lake is unreachable: back off per date
                    let failures = {
                        let mut errors = self.errors.lock().expect("errors");
                        let n = errors.entry(date.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    let delay = self.backoff(failures.min(20));
                    tracing::error!(partition = %date, error = %e, retry_in_ms = delay.as_millis() as u64,
                        "run could not start (nothing was checkpointed); retrying with backoff");
                    self.requeue_after(&date, delay);
                    continue;
                }
            };
            if outcome == RunOutcome::Busy {
                self.requeue(&date);
            }
            out.push((date, outcome));
        }
        out
    }
}

/// A random number (for owner names and jitter).
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}
