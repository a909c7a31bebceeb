//! `weir ingest`: the consume loop. Messages are decoded and buffered per
//! Kafka partition, run through the plugin in batches, and rolled into the
//! lake by count, size or age; the buffer over all partitions is capped.
//! Stops on request (SIGINT/SIGTERM via the stop flag) or, with `drain`,
//! once every assigned partition reached the end offset seen at assignment.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::ExponentialBackoff;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use super::broker::{BrokerError, EmbeddedBroker};
pub use super::core::IngestSummary;
use super::core::{Core, FlushError, PartitionKey, Track};
use super::source::{METADATA_TIMEOUT, WeirContext, consumer_config};
use super::worker::WorkerGone;
use crate::lake::{Lake, LakeError};
use crate::objstore::{Location, StoreError};
use crate::pipeline::Pipeline;
use crate::plugin::{PluginEngine, PluginError, PluginRunner};

/// How `weir ingest` runs.
#[derive(Clone, Debug, Default)]
pub struct IngestOptions {
    /// stop once every assigned partition reached its end offset at assignment.
    pub drain: bool,
    /// cancelled to stop (flush, commit, exit).
    pub stop: CancellationToken,
    /// metrics, health and plugin swaps, when run inside the service.
    pub control: Option<Arc<super::control::IngestControl>>,
}

/// Why ingest could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The plugin could not be loaded or initialised.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The lake cannot be opened or written.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// The plugin's object cannot be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Kafka client setup failed.
    #[error("kafka ({brokers}): {error}")]
    Kafka {
        /// the bootstrap servers.
        brokers: String,
        /// the client's error.
        error: rdkafka::error::KafkaError,
    },
    /// The embedded broker could not start.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The pipeline and plugin do not fit together.
    #[error("{file}: {message}")]
    Config {
        /// the pipeline file.
        file: String,
        /// what does not fit.
        message: String,
    },
    /// The async runtime could not start.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    /// A worker stopped (a bug: it panicked).
    #[error(transparent)]
    Worker(#[from] WorkerGone),
    /// The task uploading and committing a flush cycle stopped.
    #[error("ingest: the flush task stopped")]
    FlushTask(#[source] tokio::task::JoinError),
}

impl From<FlushError> for IngestError {
    fn from(e: FlushError) -> Self {
        match e {
            FlushError::Lake(e) => IngestError::Lake(e),
            FlushError::Gone(e) => IngestError::Worker(e),
            FlushError::Task(e) => IngestError::FlushTask(e),
        }
    }
}

/// Load the plugin a pipeline names (file path or object store URL).
pub fn load_plugin(
    pipeline: &Pipeline,
    engine: &PluginEngine,
    rt: &tokio::runtime::Handle,
) -> Result<Arc<crate::plugin::LoadedPlugin>, IngestError> {
    let (name, bytes) = read_plugin(pipeline, rt)?;
    Ok(engine.load_bytes(&name, &bytes)?)
}

/// The bytes of the plugin a pipeline names, and its file name.
pub fn read_plugin(
    pipeline: &Pipeline,
    rt: &tokio::runtime::Handle,
) -> Result<(String, Vec<u8>), IngestError> {
    let location = pipeline.plugin_location();
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let store = Location::open(&format!("s3://{bucket}"), &pipeline.config.lake.s3)?;
        let bytes = rt.block_on(store.get(key))?;
        let name = key.rsplit('/').next().unwrap_or(key);
        return Ok((name.to_string(), bytes.to_vec()));
    }
    let path = std::path::PathBuf::from(location.strip_prefix("file://").unwrap_or(&location));
    let bytes = std::fs::read(&path).map_err(|error| PluginError::Read {
        path: path.clone(),
        error,
    })?;
    let name = path
        .file_name()
        .map_or_else(|| location.clone(), |n| n.to_string_lossy().into_owned());
    Ok((name, bytes))
}

/// `--drain`: how long no message may arrive once every end offset is reached.
const DRAIN_QUIET: Duration = Duration::from_millis(500);
/// `--drain`: the longest it waits for that quiet once every end offset is reached.
const DRAIN_SETTLE_MAX: Duration = Duration::from_secs(3);

/// Run the streaming path until stopped (or drained), on `rt` (the
/// process's one runtime: object-store requests and the embedded broker run
/// there; this thread consumes and coordinates, the workers decode, run the
/// plugin and encode on threads of their own).
pub fn ingest(
    pipeline: Pipeline,
    rt: &tokio::runtime::Handle,
    options: IngestOptions,
) -> Result<IngestSummary, IngestError> {
    let lake = Lake::open(&pipeline.config.lake, &pipeline.config.name)?;
    let engine = PluginEngine::new(pipeline.config.plugin.limits.clone())?;
    let plugin = load_plugin(&pipeline, &engine, rt)?;
    let runner = PluginRunner::new(engine, plugin, &pipeline.schema, &pipeline.plugin_config())?;
    let source = pipeline.config.source.clone();
    let topics = source.topics();
    let _embedded;
    let brokers = if source.brokers == "embedded" {
        let broker = rt.block_on(EmbeddedBroker::start(&topics, source.embedded_partitions))?;
        let address = broker.bootstrap_servers();
        crate::errln!("embedded Kafka listening on {address}");
        _embedded = Some(broker);
        address
    } else {
        _embedded = None;
        source.brokers.clone()
    };
    let file = pipeline.file.display().to_string();
    let metrics = options.control.as_ref().map(|c| c.metrics.clone());
    let mut core = Core::new(pipeline.clone(), lake, runner, rt.clone(), metrics.clone())
        .map_err(|message| IngestError::Config { file, message })?;
    core.ensure_tables()?;
    if let Some(control) = &options.control {
        let (digest, output) = core.running();
        control.set_running(digest, output);
    }
    let core = Arc::new(Mutex::new(core));
    let mut client = consumer_config(&source, &brokers);
    if metrics.is_some() && !source.kafka.contains_key("statistics.interval.ms") {
        client.set("statistics.interval.ms", "2000"); // consumer lag for /metrics
    }
    let consumer: BaseConsumer<WeirContext> = client
        .create_with_context(WeirContext {
            core: core.clone(),
            metrics,
        })
        .map_err(|error| IngestError::Kafka {
            brokers: brokers.clone(),
            error,
        })?;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(|error| IngestError::Kafka {
            brokers: brokers.clone(),
            error,
        })?;
    tracing::info!(pipeline = %pipeline.config.name, %brokers, topics = ?topics, group = %source.group, "ingesting");

    let cfg = pipeline.config.ingest.clone();
    let started = Instant::now();
    let mut drain_targets: HashMap<PartitionKey, i64> = HashMap::new();
    let mut last_sweep = Instant::now();
    let mut first_message: Option<Instant> = None;
    let mut last_message = Instant::now();
    let mut drained_since: Option<Instant> = None;
    let mut stall: Option<Stall> = None;
    // messages since the clock was last read (read once per SWEEP_EVERY)
    let mut unswept = 0usize;
    loop {
        if options.stop.is_cancelled() {
            tracing::info!("stop requested; flushing");
            break;
        }
        let quiet = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                unswept += 1;
                let mut c = core.lock().unwrap_or_else(|p| p.into_inner());
                let routed = c.on_message(
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.timestamp().to_millis(),
                    message.payload().unwrap_or_default(),
                )?;
                if let Some(i) = routed {
                    let cycle = c.rolling(i);
                    if !cycle.is_empty() {
                        flush_or_pause(&mut c, &cycle, &consumer, &mut stall)?;
                    }
                }
                if unswept < SWEEP_EVERY {
                    continue;
                }
                false
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka consumer error");
                true
            }
            None => true,
        };
        let now = Instant::now();
        if unswept > 0 {
            first_message.get_or_insert(now);
            last_message = now;
            unswept = 0;
        }
        let sweep = now.duration_since(last_sweep) >= SWEEP_INTERVAL;
        let mut c = core.lock().unwrap_or_else(|p| p.into_inner());
        // runs gathered go to their workers when full (on_message), and the
        // rest at a quiet poll or a timed sweep: sending them at every look
        // at the clock would cut runs of a few dozen messages
        if quiet || sweep {
            c.send_all_pending()?;
        }
        c.serve_events(&consumer)?;
        let collected = c.collect(&consumer);
        paused_on(&mut c, collected, &consumer, &mut stall)?;
        if !sweep {
            continue;
        }
        last_sweep = now;
        let keys: Vec<PartitionKey> = c.partitions.iter().map(|t| t.key.clone()).collect();
        if let Some(control) = &options.control {
            if let Some(request) = control.take_swap() {
                swap_plugin(&mut c, &keys, &consumer, request, control)?;
            }
            match &stall {
                Some(_) => control.set_health(
                    false,
                    "lake unreachable past the retry window: consumption paused, flushes retried with backoff",
                ),
                None => control.set_health(true, "consuming and committing"),
            }
            control
                .metrics
                .ingest_paused
                .store(u64::from(stall.is_some()), Ordering::Relaxed);
        }
        let cycle = c.cycle();
        if !cycle.is_empty() || c.retry_pending() {
            flush_or_pause(&mut c, &cycle, &consumer, &mut stall)?;
        }
        if stall.is_none() && c.over_buffer_cap() {
            let all = c.non_empty();
            flush_or_pause(&mut c, &all, &consumer, &mut stall)?;
        }
        if options.drain {
            drain_targets.retain(|k, _| keys.contains(k));
            for key in &keys {
                if !drain_targets.contains_key(key) {
                    match consumer.fetch_watermarks(&key.0, key.1, METADATA_TIMEOUT) {
                        Ok((_, high)) => {
                            drain_targets.insert(key.clone(), high);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the end offset; retrying")
                        }
                    }
                }
            }
            let target = |t: &Track| drain_targets.get(&t.key).copied();
            let ready: Vec<PartitionKey> = c
                .partitions
                .iter()
                .filter(|t| !t.is_empty() && target(t).is_some_and(|high| t.routed_next >= high))
                .map(|t| t.key.clone())
                .collect();
            if !ready.is_empty() && !c.cycle_open() {
                flush_or_pause(&mut c, &ready, &consumer, &mut stall)?;
            }
            let done = !c.partitions.is_empty()
                && !c.cycle_open()
                && c.partitions.iter().all(|t| {
                    t.is_empty() && target(t).is_some_and(|high| t.committed_next >= high)
                });
            // the end offsets come from the broker's high watermark; one that
            // reports it a little low (tansu 0.6) still serves what lies past
            // it, so stop only once nothing more arrived for a moment (bounded)
            let since = *drained_since.get_or_insert(now);
            if !done {
                drained_since = None;
            }
            let settled = now.duration_since(last_message) >= DRAIN_QUIET
                || now.duration_since(since) >= DRAIN_SETTLE_MAX;
            // a last look at the end offsets before stopping: one read low at
            // first (tansu 0.6) may have moved on, and a loaded consumer can
            // be quiet for longer than DRAIN_QUIET
            let mut moved = false;
            if done && settled {
                for key in &keys {
                    if let Ok((_, high)) =
                        consumer.fetch_watermarks(&key.0, key.1, METADATA_TIMEOUT)
                        && drain_targets.get(key).is_some_and(|&target| high > target)
                    {
                        drain_targets.insert(key.clone(), high);
                        moved = true;
                    }
                }
            }
            if moved {
                drained_since = None;
            } else if (done && settled)
                || (keys.is_empty() && started.elapsed() > Duration::from_secs(30))
            {
                tracing::info!("drained every assigned partition");
                break;
            }
        }
    }
    let mut c = core.lock().unwrap_or_else(|p| p.into_inner());
    let read = Instant::now();
    c.deadline = Some(read + Duration::from_millis(cfg.shutdown_timeout_ms));
    c.send_all_pending()?;
    let keys = c.non_empty();
    match c.flush_now(&keys, &consumer) {
        Ok(()) => {}
        Err(FlushError::Lake(e)) => {
            tracing::error!(error = %e, "final flush failed; the uncommitted ranges will be re-read")
        }
        Err(e) => return Err(e.into()),
    }
    let mut summary = c.summary.clone();
    summary.busy_ms = first_message.map(|t| t.elapsed().as_millis() as u64);
    summary.final_flush_ms = Some(read.elapsed().as_millis() as u64);
    c.finish_reads();
    drop(c);
    consumer.unsubscribe();
    Ok(summary)
}

/// Messages between two looks at the clock (the first and last message
/// times, whether a sweep is due), so that the hot path reads no clock per
/// message.
const SWEEP_EVERY: usize = 256;

/// Time between two sweeps (partial runs sent, flushes due by age, plugin
/// swaps, health), while messages flow; a quiet poll sweeps too.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Switch plugins at a batch boundary: every partition's rows processed by
/// the old version are flushed and committed first, so no file mixes two
/// digests.
fn swap_plugin(
    c: &mut Core,
    keys: &[PartitionKey],
    consumer: &BaseConsumer<WeirContext>,
    request: super::control::SwapRequest,
    control: &super::control::IngestControl,
) -> Result<(), IngestError> {
    match c.flush_now(keys, consumer) {
        Ok(()) => {}
        Err(FlushError::Lake(e)) => {
            let _ = request.reply.send(Err(format!(
                "the old version's rows could not be committed first ({e}); still running the old version"
            )));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    let reply = c.replace_runner(request.runner);
    if reply.is_ok() {
        let (digest, output) = c.running();
        control.set_running(digest, output);
    }
    let _ = request.reply.send(reply);
    Ok(())
}

/// Consumption paused because the lake stayed unreachable.
struct Stall {
    /// next flush attempt.
    until: Instant,
    /// the delays between attempts (`ingest.retry_initial_ms`, doubling up
    /// to `ingest.retry_max_ms`).
    delays: ExponentialBackoff,
}

/// Flush partitions in one cycle (see [`paused_on`] for a refusal), unless
/// consumption is paused and its next attempt is not due yet.
fn flush_or_pause(
    c: &mut Core,
    keys: &[PartitionKey],
    consumer: &BaseConsumer<WeirContext>,
    stall: &mut Option<Stall>,
) -> Result<(), IngestError> {
    if stall.as_ref().is_some_and(|s| Instant::now() < s.until) {
        return Ok(());
    }
    let flushed = c.flush(keys, consumer);
    paused_on(c, flushed, consumer, stall)
}

/// Act on how a flush cycle went. When the lake stays unreachable past the
/// retry window, pause every assigned partition (the consumer keeps
/// polling, so the group keeps this host and rebalances are served) and
/// try again later with backoff; resume once a flush succeeds. Nothing is
/// dropped: the refused cycle and the buffers stay until committed.
fn paused_on(
    c: &mut Core,
    flushed: Result<(), FlushError>,
    consumer: &BaseConsumer<WeirContext>,
    stall: &mut Option<Stall>,
) -> Result<(), IngestError> {
    match flushed {
        Ok(()) => {
            if stall.is_some() && !c.retry_pending() {
                *stall = None;
                if let Ok(tpl) = consumer.assignment()
                    && let Err(e) = consumer.resume(&tpl)
                {
                    tracing::error!(error = %e, "resuming consumption failed");
                }
                tracing::info!("lake reachable again; consumption resumed");
            }
        }
        Err(FlushError::Lake(e)) => {
            let stall = stall.get_or_insert_with(|| {
                if let Ok(tpl) = consumer.assignment()
                    && let Err(e) = consumer.pause(&tpl)
                {
                    tracing::error!(error = %e, "pausing consumption failed");
                }
                tracing::warn!(error = %e, "lake unreachable past the retry window; consumption paused, flushes retried with backoff");
                Stall {
                    until: Instant::now(),
                    delays: c.retry_policy().delays(),
                }
            });
            let delay = stall.delays.next();
            stall.until = Instant::now() + delay.unwrap_or(c.retry_policy().max_delay());
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
