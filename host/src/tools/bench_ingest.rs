//! `weir bench ingest`: the streaming path's speed and memory, measured
//! side by side with its floor in the same run.
//!
//! The input is one of:
//! - synthetic events produced to the embedded broker first (not timed; a
//!   tansu child process, so its memory and CPU are not weir's);
//! - a topic of any Kafka-protocol broker (`--brokers ADDR --topic T`);
//! - a file of JSON lines (`--source FILE`): the same worker pipeline with
//!   no Kafka at all, to measure how it scales by itself.
//!
//! Two phases, each timed from its first message to its end:
//! 1. **decode only**: every message decoded into Arrow on one thread (from
//!    Kafka after one unmeasured warm-up pass, or from the file; from a
//!    file, once with each JSON parser, sonic-rs and serde_json);
//! 2. **end to end**: ingest into a fresh local lake (decode, web-vitals
//!    plugin, Parquet, Delta commits) with `--workers` workers.
//!
//! Each phase reports wall-clock events/s, events per CPU-second (user +
//! system time of this process, from `getrusage`) and the process's peak
//! RSS (`VmHWM`, reset before the phase).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::generate::{Generator, GeneratorOptions};
use crate::decode::{JsonDecoder, JsonParser};
use crate::ingest::broker::EmbeddedBroker;
use crate::ingest::produce::EventProducer;
use crate::ingest::source::{METADATA_TIMEOUT, client_config};
use crate::ingest::{IngestError, IngestOptions, for_each_line, ingest, ingest_file, load_plugin};
use crate::pipeline::Pipeline;
use crate::plugin::PluginEngine;

/// One measured phase.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseFigures {
    /// messages handled.
    pub events: u64,
    /// seconds from the first message to the end.
    pub seconds: f64,
    /// events per second, wall clock.
    pub events_per_sec: f64,
    /// user + system CPU seconds of this process during the phase.
    pub cpu_seconds: f64,
    /// events per CPU-second.
    pub events_per_cpu_sec: f64,
    /// peak resident memory of the process during the phase, MiB.
    pub peak_rss_mib: f64,
    /// end to end: seconds of `seconds` spent on the final flush after the
    /// last message was read (uploads and a commit nothing overlaps).
    pub final_flush_seconds: Option<f64>,
}

impl PhaseFigures {
    /// Events per second while messages were being read: the final flush
    /// left out (what a stream that does not end sustains).
    pub fn streaming_events_per_sec(&self) -> Option<f64> {
        let flush = self.final_flush_seconds?;
        Some(self.events as f64 / (self.seconds - flush).max(1e-9))
    }
}

/// What `weir bench ingest` reports.
#[derive(Clone, Debug, Serialize)]
pub struct IngestBenchReport {
    /// where the events came from.
    pub source: String,
    /// bytes of JSON in the input (0 when unknown: an outside broker).
    pub input_bytes: u64,
    /// resident memory of weir before the phases, MiB.
    pub baseline_rss_mib: f64,
    /// workers of the end-to-end phase.
    pub workers: usize,
    /// `ingest.max_buffer_bytes` of the end-to-end phase, MiB.
    pub max_buffer_mib: f64,
    /// decoding alone, one thread (the parser ingest uses: sonic-rs).
    pub decode_only: PhaseFigures,
    /// the same with serde_json, from a file source (the reference).
    pub decode_only_serde_json: Option<PhaseFigures>,
    /// source → decode → plugin → Parquet → commit.
    pub end_to_end: PhaseFigures,
}

/// Where `weir bench ingest` takes its events from.
#[derive(Clone, Debug)]
pub enum BenchSource {
    /// this many synthetic events, produced to the embedded broker.
    Generated(u64),
    /// an existing topic of a Kafka-protocol broker.
    Broker {
        /// bootstrap servers.
        brokers: String,
        /// the topic, read from the beginning.
        topic: String,
    },
    /// a file of JSON lines.
    File(PathBuf),
}

/// CPU seconds (user + system) this process used so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// Figures of a phase that handled `events` in `seconds`, having started
/// at `cpu_before` CPU seconds.
fn figures(events: u64, seconds: f64, cpu_before: f64) -> PhaseFigures {
    let cpu = cpu_seconds() - cpu_before;
    PhaseFigures {
        events,
        seconds,
        events_per_sec: events as f64 / seconds.max(1e-9),
        cpu_seconds: cpu,
        events_per_cpu_sec: events as f64 / cpu.max(1e-9),
        peak_rss_mib: rss_mib("VmHWM"),
        final_flush_seconds: None,
    }
}

/// Run the benchmark from `source` through `pipeline` into the lake at
/// `lake_url` (a fresh one: a local directory, or an S3 prefix with the
/// pipeline's `lake.s3` settings), with `workers` workers when given.
pub fn bench_ingest(
    pipeline: &Pipeline,
    source: &BenchSource,
    workers: Option<usize>,
    lake_url: &str,
) -> Result<IngestBenchReport, IngestError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(IngestError::Runtime)?;
    let mut p = pipeline.clone();
    p.config.lake.url = lake_url.to_string();
    p.config.lake.dead_letters_url = None;
    if let Some(n) = workers {
        p.config.ingest.workers = n;
    }
    // compile the plugin once, unmeasured (later loads hit the cache)
    let engine = PluginEngine::new(p.config.plugin.limits.clone())?;
    load_plugin(&p, &engine, rt.handle())?;
    let workers = p.config.ingest.worker_count();
    let max_buffer_mib = p.config.ingest.max_buffer_bytes as f64 / (1 << 20) as f64;
    let phases = match source {
        BenchSource::File(path) => file_phases(p, rt.handle(), path, workers)?,
        _ => kafka_phases(p, rt.handle(), source)?,
    };
    Ok(IngestBenchReport {
        source: phases.source,
        input_bytes: phases.input_bytes,
        baseline_rss_mib: phases.baseline_rss_mib,
        workers,
        max_buffer_mib,
        decode_only: phases.decode_only,
        decode_only_serde_json: phases.decode_only_serde_json,
        end_to_end: phases.end_to_end,
    })
}

/// What the phases of one source measured.
struct Phases {
    /// the source's label.
    source: String,
    /// its bytes of JSON.
    input_bytes: u64,
    /// weir's RSS before the phases, MiB.
    baseline_rss_mib: f64,
    decode_only: PhaseFigures,
    decode_only_serde_json: Option<PhaseFigures>,
    end_to_end: PhaseFigures,
}

/// Both phases from a file of JSON lines.
fn file_phases(
    p: Pipeline,
    rt: &tokio::runtime::Handle,
    path: &Path,
    workers: usize,
) -> Result<Phases, IngestError> {
    let baseline_rss_mib = rss_mib("VmRSS");
    reset_peak();
    let (input_bytes, decode_only) = decode_file(&p, path, JsonParser::Sonic)?;
    reset_peak();
    let (_, serde_json) = decode_file(&p, path, JsonParser::SerdeJson)?;
    reset_peak();
    let cpu = cpu_seconds();
    let summary = ingest_file(p, rt, path, workers)?;
    let seconds = summary.busy_ms.unwrap_or(0) as f64 / 1e3;
    let end_to_end = PhaseFigures {
        final_flush_seconds: summary.final_flush_ms.map(|ms| ms as f64 / 1e3),
        ..figures(summary.read, seconds, cpu)
    };
    Ok(Phases {
        source: format!("file {}", path.display()),
        input_bytes,
        baseline_rss_mib,
        decode_only,
        decode_only_serde_json: Some(serde_json),
        end_to_end,
    })
}

/// Both phases from Kafka: generated events on the embedded broker, or an
/// existing topic.
fn kafka_phases(
    mut p: Pipeline,
    rt: &tokio::runtime::Handle,
    source: &BenchSource,
) -> Result<Phases, IngestError> {
    let (_kafka, brokers, topic, input_bytes) = match source {
        BenchSource::Generated(events) => {
            let topic = "weir-bench".to_string();
            let partitions = p.config.source.embedded_partitions;
            let kafka = rt.block_on(EmbeddedBroker::start(
                std::slice::from_ref(&topic),
                partitions,
            ))?;
            let brokers = kafka.bootstrap_servers();
            p.config.source.brokers = brokers.clone();
            p.config.source.topic = topic.clone();
            let input_bytes = produce(&p, *events)?;
            (Some(kafka), brokers, topic, input_bytes)
        }
        BenchSource::Broker { brokers, topic } => (None, brokers.clone(), topic.clone(), 0),
        BenchSource::File(_) => unreachable!("file_phases"),
    };
    p.config.source.brokers = brokers.clone();
    p.config.source.topic = topic.clone();
    p.config.source.group = format!("weir-bench-ingest-{}", std::process::id());
    let (partitions, events) = topic_extent(&p, &brokers, &topic)?;
    let baseline_rss_mib = rss_mib("VmRSS");

    // a first decode pass warms the broker's fetch path; the second is measured
    decode_phase(
        &p,
        &brokers,
        &topic,
        partitions,
        events,
        "weir-bench-warmup",
    )?;
    reset_peak();
    let decode_only = decode_phase(
        &p,
        &brokers,
        &topic,
        partitions,
        events,
        "weir-bench-decode",
    )?;
    reset_peak();
    let started = Instant::now();
    let cpu = cpu_seconds();
    let summary = ingest(
        p,
        rt,
        IngestOptions {
            drain: true,
            stop: Default::default(),
            control: None,
        },
    )?;
    let seconds = summary
        .busy_ms
        .map_or_else(|| started.elapsed().as_secs_f64(), |ms| ms as f64 / 1e3);
    let end_to_end = PhaseFigures {
        final_flush_seconds: summary.final_flush_ms.map(|ms| ms as f64 / 1e3),
        ..figures(summary.read, seconds, cpu)
    };
    Ok(Phases {
        source: format!("kafka {brokers} topic {topic}"),
        input_bytes,
        baseline_rss_mib,
        decode_only,
        decode_only_serde_json: None,
        end_to_end,
    })
}

/// Produce `events` synthetic events to the pipeline's topic; the bytes sent.
fn produce(p: &Pipeline, events: u64) -> Result<u64, IngestError> {
    let config_error = |e: &dyn std::fmt::Display| IngestError::Config {
        file: "bench".into(),
        message: e.to_string(),
    };
    let mut producer = EventProducer::new(p).map_err(|e| config_error(&e))?;
    let mut generator = Generator::new(GeneratorOptions::default());
    let mut line = String::new();
    let mut input_bytes = 0;
    for _ in 0..events {
        generator.next_into(&mut line);
        input_bytes += line.len() as u64;
        producer
            .send(line.as_bytes())
            .map_err(|e| config_error(&e))?;
    }
    producer.finish().map_err(|e| config_error(&e))?;
    Ok(input_bytes)
}

/// The partitions of `topic` and the messages they hold (high watermarks).
fn topic_extent(p: &Pipeline, brokers: &str, topic: &str) -> Result<(i32, u64), IngestError> {
    let kafka_error = |error| IngestError::Kafka {
        brokers: brokers.to_string(),
        error,
    };
    let consumer: BaseConsumer = client_config(&p.config.source, brokers)
        .create()
        .map_err(kafka_error)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(kafka_error)?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len() as i32);
    let mut events = 0u64;
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .map_err(kafka_error)?;
        events += (high - low).max(0) as u64;
    }
    Ok((partitions, events))
}

/// Decode every line of `path` on one thread with `parser`: the bytes read
/// and the figures.
fn decode_file(
    p: &Pipeline,
    path: &Path,
    parser: JsonParser,
) -> Result<(u64, PhaseFigures), IngestError> {
    let batch_rows = p.config.ingest.batch_rows;
    let mut decoder = JsonDecoder::with_parser(&p.schema, batch_rows, parser);
    let (mut events, mut rows) = (0u64, 0usize);
    let started = Instant::now();
    let cpu = cpu_seconds();
    let bytes = for_each_line(path, |payload| {
        events += 1;
        let _ = decoder.push(payload);
        if decoder.len() >= batch_rows {
            rows += decoder.flush().num_rows();
        }
        Ok(())
    })?;
    rows += decoder.flush().num_rows();
    tracing::debug!(rows, "decode-only phase done");
    Ok((bytes, figures(events, started.elapsed().as_secs_f64(), cpu)))
}

fn decode_phase(
    p: &Pipeline,
    brokers: &str,
    topic: &str,
    partitions: i32,
    events: u64,
    group: &str,
) -> Result<PhaseFigures, IngestError> {
    let kafka_error = |error| IngestError::Kafka {
        brokers: brokers.to_string(),
        error,
    };
    let mut config = client_config(&p.config.source, brokers);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().map_err(kafka_error)?;
    let mut tpl = TopicPartitionList::new();
    for partition in 0..partitions {
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .map_err(kafka_error)?;
    }
    consumer.assign(&tpl).map_err(kafka_error)?;
    // every message was acknowledged (EventProducer::finish checks delivery
    // reports); the broker's watermarks are not compared with it, because
    // tansu 0.6 reports a high watermark a little below the last offset
    // (every message is still served)
    let batch_rows = p.config.ingest.batch_rows;
    let mut decoder = JsonDecoder::new(&p.schema, batch_rows);
    let (mut seen, mut rows) = (0u64, 0usize);
    let mut started = None;
    let mut cpu = cpu_seconds();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_report = Instant::now();
    while seen < events && Instant::now() < deadline {
        if last_report.elapsed() > Duration::from_secs(5) {
            tracing::info!(seen, events, "decode-only phase still consuming");
            last_report = Instant::now();
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            if started.is_none() {
                started = Some(Instant::now());
                cpu = cpu_seconds();
            }
            seen += 1;
            let _ = decoder.push(m.payload().unwrap_or_default());
            if decoder.len() >= batch_rows {
                rows += decoder.flush().num_rows();
            }
        }
    }
    rows += decoder.flush().num_rows();
    let seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    tracing::debug!(rows, "decode-only phase done");
    Ok(figures(seen, seconds, cpu))
}

/// A `/proc/self/status` memory figure in MiB (0 where unavailable).
pub(crate) fn rss_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Reset the peak-RSS mark (Linux: writing 5 to clear_refs).
pub(crate) fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
