//! A flush cycle once its files are staged: the uploads and the Delta
//! commit run as one task on the runtime while the coordinator goes on
//! consuming (the object store's latency stays off the consume path). The
//! task holds the [`Lake`]'s lock while it runs. Lake operations are
//! retried with exponential delays (backon) within
//! `ingest.retry_window_ms`, never past the shutdown deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::future::try_join_all;
use tokio::sync::Mutex;

use super::writer::Staged;
use crate::lake::{CommitReport, Lake, LakeError, PartitionFlush, Provenance, TableKind};
use crate::pipeline::IngestConfig;

/// How lake operations are retried.
#[derive(Clone, Debug)]
pub(crate) struct RetryPolicy {
    /// the first delay.
    initial: Duration,
    /// the longest delay.
    max: Duration,
    /// give up once the next attempt would start past this long.
    window: Duration,
    /// never wait past this instant (set at shutdown).
    deadline: Option<Instant>,
}

impl RetryPolicy {
    /// The policy of `ingest.retry_*`, bounded by `deadline`.
    pub fn new(cfg: &IngestConfig, deadline: Option<Instant>) -> Self {
        RetryPolicy {
            initial: Duration::from_millis(cfg.retry_initial_ms),
            max: Duration::from_millis(cfg.retry_max_ms),
            window: Duration::from_millis(cfg.retry_window_ms),
            deadline,
        }
    }

    /// The delays between attempts: `initial`, doubling up to `max`, with
    /// no limit on their number.
    pub fn delays(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .without_max_times()
            .build()
    }

    /// The longest delay.
    pub fn max_delay(&self) -> Duration {
        self.max
    }

    /// The retries of one operation, starting now.
    pub fn start(&self) -> Retry {
        Retry {
            delays: self.delays(),
            give_up: Instant::now() + self.window,
            deadline: self.deadline,
            attempt: 1,
        }
    }
}

/// The retries of one lake operation.
pub(crate) struct Retry {
    delays: ExponentialBackoff,
    give_up: Instant,
    deadline: Option<Instant>,
    attempt: u32,
}

impl Retry {
    /// Wait before the next attempt, or give `error` back when it would
    /// start past the retry window (or the shutdown deadline).
    pub async fn wait(&mut self, operation: &str, error: LakeError) -> Result<(), LakeError> {
        let Some(delay) = self.delays.next() else {
            return Err(error);
        };
        let next = Instant::now() + delay;
        if next > self.give_up || self.deadline.is_some_and(|d| next > d) {
            return Err(error);
        }
        tracing::warn!(
            operation, attempt = self.attempt, retry_in_ms = delay.as_millis() as u64,
            error = %error, "lake operation failed; retrying"
        );
        tokio::time::sleep(delay).await;
        self.attempt += 1;
        Ok(())
    }
}

/// A staged cycle not yet known to be committed: in flight, or kept after
/// the lake refused it past the retry window (to try again).
pub(crate) struct Held {
    /// every partition's files and counts.
    pub staged: Vec<Staged>,
    /// each partition's share of the commit, as the last attempt left it
    /// (a committed dead-letter half is not committed twice).
    pub parts: Vec<PartitionFlush>,
    /// when the cycle was staged.
    pub started: Instant,
}

impl Held {
    /// The bytes of its files, held until the commit (counted against
    /// `ingest.max_buffer_bytes`; the messages behind them are gone).
    pub fn bytes(&self) -> usize {
        staged_bytes(&self.staged)
    }
}

/// The bytes of the files of `staged`.
pub(crate) fn staged_bytes(staged: &[Staged]) -> usize {
    staged.iter().map(|s| s.counts.bytes as usize).sum()
}

/// What a cycle's task hands back.
pub(crate) struct Finished {
    /// the shares as the commit left them.
    pub parts: Vec<PartitionFlush>,
    /// the commit's outcome per partition, or why the lake refused.
    pub result: Result<CommitReport, LakeError>,
    /// when the files were written (or the task gave up).
    pub uploaded: Instant,
    /// when the commit was made (or the task gave up).
    pub done: Instant,
}

/// Upload every file of `staged` (all at once), then commit `parts` in one
/// commit per table, each step retried by `policy`.
pub(crate) async fn upload_and_commit(
    lake: Arc<Mutex<Lake>>,
    staged: Vec<(TableKind, String, bytes::Bytes)>,
    mut parts: Vec<PartitionFlush>,
    provenance: Provenance,
    policy: RetryPolicy,
) -> Finished {
    let mut lake = lake.lock().await;
    let mut uploaded = None;
    let result = async {
        let mut retry = policy.start();
        loop {
            let puts = staged.iter().map(|(table, path, bytes)| {
                let table = match table {
                    TableKind::Data => lake.data(),
                    TableKind::DeadLetters => lake.dead_letters(),
                };
                table.location().put(path, bytes.clone())
            });
            match try_join_all(puts).await {
                Ok(_) => break,
                Err(e) => retry.wait("files", e.into()).await?,
            }
        }
        uploaded = Some(Instant::now());
        let mut retry = policy.start();
        loop {
            match lake.commit(&mut parts, &provenance).await {
                Ok(report) => return Ok(report),
                Err(e) => retry.wait("commit", e).await?,
            }
        }
    }
    .await;
    let done = Instant::now();
    Finished {
        parts,
        result,
        uploaded: uploaded.unwrap_or(done),
        done,
    }
}

/// The files of `staged`, as the task takes them (the bytes are shared).
pub(crate) fn files_of(staged: &[Staged]) -> Vec<(TableKind, String, bytes::Bytes)> {
    staged
        .iter()
        .flat_map(|s| &s.files)
        .map(|f| (f.table, f.path.clone(), f.bytes.clone()))
        .collect()
}
