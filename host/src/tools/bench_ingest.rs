//! `weir bench ingest`: the streaming path's speed and memory, measured
//! side by side with its floor in the same run.
//!
//! Events are generated and produced to the embedded broker first (not
//! timed; a tansu child process, so its memory is not weir's). Then, from the first message polled to the last:
//! 1. **decode only**: consume every message and decode it into Arrow (after
//!    one unmeasured warm-up pass);
//! 2. **end to end**: `weir ingest --drain` into a fresh local lake (decode,
//!    web-vitals plugin, Parquet, commits).
//!
//! Peak memory is the process's high-water mark (`VmHWM`), reset before each
//! phase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::generate::{Generator, GeneratorOptions};
use crate::decode::JsonDecoder;
use crate::ingest::broker::EmbeddedBroker;
use crate::ingest::produce::EventProducer;
use crate::ingest::source::client_config;
use crate::ingest::{IngestError, IngestOptions, ingest};
use crate::pipeline::Pipeline;

/// One measured phase.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseFigures {
    /// messages handled.
    pub events: u64,
    /// seconds from the first message to the end.
    pub seconds: f64,
    /// events per second.
    pub events_per_sec: f64,
    /// peak resident memory of the process during the phase, MiB.
    pub peak_rss_mib: f64,
}

/// What `weir bench ingest` reports.
#[derive(Clone, Debug, Serialize)]
pub struct IngestBenchReport {
    /// bytes of JSON produced.
    pub input_bytes: u64,
    /// resident memory of weir before the phases, MiB.
    pub baseline_rss_mib: f64,
    /// decoding alone.
    pub decode_only: PhaseFigures,
    /// Kafka → decode → plugin → Parquet → commit.
    pub end_to_end: PhaseFigures,
}

/// Run the benchmark with `events` synthetic events through `pipeline`
/// (its source and lake are replaced by the embedded broker and `lake_dir`).
pub fn bench_ingest(
    pipeline: &Pipeline,
    events: u64,
    lake_dir: &std::path::Path,
) -> Result<IngestBenchReport, IngestError> {
    let topic = "weir-bench".to_string();
    let partitions = pipeline.config.source.embedded_partitions;
    let kafka = EmbeddedBroker::start_blocking(std::slice::from_ref(&topic), partitions)?;
    let brokers = kafka.bootstrap_servers();
    let mut p = pipeline.clone();
    p.config.source.brokers = brokers.clone();
    p.config.source.topic = topic.clone();
    p.config.source.group = "weir-bench-ingest".into();
    p.config.lake.url = lake_dir.display().to_string();

    let mut producer = EventProducer::new(&p).map_err(|e| IngestError::Config {
        file: "bench".into(),
        message: e.to_string(),
    })?;
    let mut generator = Generator::new(GeneratorOptions::default());
    let mut line = String::new();
    let mut input_bytes = 0;
    for _ in 0..events {
        generator.next_into(&mut line);
        input_bytes += line.len() as u64;
        producer
            .send(line.as_bytes())
            .map_err(|e| IngestError::Config {
                file: "bench".into(),
                message: e.to_string(),
            })?;
    }
    producer.finish().map_err(|e| IngestError::Config {
        file: "bench".into(),
        message: e.to_string(),
    })?;
    let baseline_rss_mib = rss_mib("VmRSS");

    // a first decode pass warms the cluster's fetch path; the second is measured
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
    let summary = ingest(
        p,
        IngestOptions {
            drain: true,
            stop: Arc::default(),
            control: None,
        },
    )?;
    let seconds = summary
        .busy_ms
        .map_or_else(|| started.elapsed().as_secs_f64(), |ms| ms as f64 / 1e3);
    let end_to_end = PhaseFigures {
        events: summary.read,
        seconds,
        events_per_sec: summary.read as f64 / seconds.max(1e-9),
        peak_rss_mib: rss_mib("VmHWM"),
    };
    drop(kafka);
    Ok(IngestBenchReport {
        input_bytes,
        baseline_rss_mib,
        decode_only,
        end_to_end,
    })
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
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_report = Instant::now();
    while seen < events && Instant::now() < deadline {
        if last_report.elapsed() > Duration::from_secs(5) {
            tracing::info!(seen, events, "decode-only phase still consuming");
            last_report = Instant::now();
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
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
    Ok(PhaseFigures {
        events: seen,
        seconds,
        events_per_sec: seen as f64 / seconds.max(1e-9),
        peak_rss_mib: rss_mib("VmHWM"),
    })
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
