//! `weir validate`, `weir ingest`, `weir produce`, `weir generate`,
//! `weir lake files | vacuum`.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use weir::ingest::produce::EventProducer;
use weir::ingest::{IngestOptions, ingest};
use weir::lake::{Lake, TableKind};
use weir::pipeline::Pipeline;
use weir::tools::generate::GeneratorOptions;
use weir::tools::generate::generate;

/// A pipeline file plus overrides.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Override a key: `section.key=value`; repeatable (wins over `WEIR_*`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl PipelineArgs {
    pub fn load(&self) -> anyhow::Result<Pipeline> {
        Ok(Pipeline::load(&self.pipeline, &self.set)?)
    }
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Consume until every assigned partition reaches the end offset seen at start, then exit.
    #[arg(long)]
    drain: bool,
    /// Print the exit summary as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// JSON lines to send (`-` for stdin).
    input: PathBuf,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// How many events.
    #[arg(long)]
    events: u64,
    /// Events per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Seed (the same seed gives the same events).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of broken events, 0..1.
    #[arg(long, default_value_t = 0.02)]
    bad_share: f64,
    /// Write the events to this file (JSON lines) instead of sending them.
    #[arg(long, value_name = "PATH")]
    to_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// List the active files of the data table (from its Delta log, never
    /// by listing directories).
    Files {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Only this partition value (e.g. 2026-11-24).
        #[arg(long)]
        date: Option<String>,
        /// The dead-letter table instead.
        #[arg(long)]
        dead_letters: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// The commits of the data table, newest first (operation, plugin
    /// digest, weir version, counts).
    History {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// At most this many commits.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The dead-letter table instead.
        #[arg(long)]
        dead_letters: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Compact small files into files of about lake.optimize_target_bytes
    /// (Delta OPTIMIZE: a commit with dataChange = false; no re-aggregation).
    Optimize {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Only this date partition.
        #[arg(long)]
        date: Option<String>,
    },
    /// Remove files no table version references (replaced by compaction,
    /// or left by a crashed or fenced writer), older than the retention.
    Vacuum {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Retention in hours (default: lake.vacuum_retention_hours).
        #[arg(long)]
        retention_hours: Option<u64>,
        /// Only report.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn validate(args: PipelineArgs) -> anyhow::Result<ExitCode> {
    let p = args.load()?;
    let rt = super::runtime()?;
    // the plugin, initialised as a run would, against what the pipeline
    // reads of its output, then the aggregation planned over that output
    // (when the plugin can be loaded from here: an S3 plugin may not be)
    let output = match rt.block_on(weir::batch::plugin_output(&p)) {
        Ok(output) => output,
        Err(e @ weir::batch::BatchError::PluginUnreadable { .. }) => {
            weir::outln!("plugin: not loaded here, aggregate not planned ({e})");
            return Ok(ok(&p));
        }
        Err(e) => {
            weir::errln!("{}: {e}", p.file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let problems = p.output_problems(&output);
    if !problems.is_empty() {
        for problem in &problems {
            weir::errln!("{}: {problem}", p.file.display());
        }
        weir::errln!("{}: the plugin's output: {output}", p.file.display());
        return Ok(ExitCode::FAILURE);
    }
    weir::outln!("plugin: ok ({output})");
    if p.config.aggregate.is_some() {
        match rt.block_on(weir::batch::Query::check(&p, &output)) {
            Ok(query) => {
                let columns: Vec<String> = query
                    .output
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}", f.name(), f.data_type()))
                    .collect();
                weir::outln!("aggregate: ok ({})", columns.join(", "));
            }
            Err(weir::batch::BatchError::Config { message, .. }) => {
                weir::errln!("{}: {message}", p.file.display());
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => {
                weir::errln!("{}: {e}", p.file.display());
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ok(&p))
}

/// `weir validate`'s last line, for a pipeline that passed.
fn ok(p: &Pipeline) -> ExitCode {
    weir::outln!(
        "{}: ok (pipeline `{}`, {} fields, topic {}, lake {})",
        p.file.display(),
        p.config.name,
        p.schema.fields().len(),
        p.config.source.topic,
        p.config.lake.url
    );
    ExitCode::SUCCESS
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// `weir broker P`: the embedded broker alone, with the pipeline's topics,
/// until SIGINT/SIGTERM; its address on stdout.
pub fn run_broker(args: BrokerArgs) -> anyhow::Result<ExitCode> {
    let p = args.pipeline.load()?;
    let source = &p.config.source;
    super::runtime()?.block_on(async {
        let broker =
            weir::ingest::broker::EmbeddedBroker::start(&source.topics(), source.embedded_partitions)
                .await?;
        weir::errln!(
            "embedded Kafka listening on {} (topics {}, {} partitions each); SIGINT/SIGTERM stops it and drops its messages",
            broker.bootstrap_servers(),
            source.topic,
            source.embedded_partitions
        );
        weir::outln!("{}", broker.bootstrap_servers());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        drop(broker);
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_ingest(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.load()?;
    let rt = super::runtime()?;
    // SIGINT/SIGTERM cancel the token the ingest loop watches
    let stop = tokio_util::sync::CancellationToken::new();
    rt.spawn({
        let stop = stop.clone();
        async move {
            super::orchestrate_cmds::shutdown_signal().await;
            stop.cancel();
        }
    });
    let summary = ingest(
        pipeline,
        rt.handle(),
        IngestOptions {
            drain: args.drain,
            stop,
            control: None,
        },
    )?;
    print_ingest_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// The exit summary of ingest (and of `weir run`), as a line or JSON.
pub fn print_ingest_summary(
    summary: &weir::ingest::IngestSummary,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        weir::outln!("{}", serde_json::to_string(summary)?);
    } else {
        weir::outln!(
            "read {} · kept {} · dropped {} · dead-lettered {} · files {} · bytes {} · commits {}",
            summary.read,
            summary.kept,
            summary.dropped,
            summary.dead_lettered,
            summary.files,
            summary.bytes,
            summary.commits
        );
    }
    Ok(())
}

pub fn run_produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.load()?;
    let mut producer = EventProducer::new(&pipeline)?;
    let reader: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.input)
                .with_context(|| format!("cannot read {}", args.input.display()))?,
        ))
    };
    for line in reader.split(b'\n') {
        let line = line.with_context(|| format!("reading {}", args.input.display()))?;
        if !line.iter().all(u8::is_ascii_whitespace) {
            producer.send(&line)?;
        }
    }
    weir::outln!("sent {}", producer.finish()?);
    Ok(ExitCode::SUCCESS)
}

pub fn run_generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.to_file {
        use std::io::Write;
        let options = GeneratorOptions {
            seed: args.seed,
            bad_share: args.bad_share,
            ..GeneratorOptions::default()
        };
        let mut generator = weir::tools::generate::Generator::new(options);
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let mut line = String::new();
        for _ in 0..args.events {
            generator.next_into(&mut line);
            writeln!(out, "{line}").with_context(|| format!("writing {}", path.display()))?;
        }
        out.flush()?;
        weir::outln!("wrote {} events to {}", args.events, path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let pipeline = args.pipeline.load()?;
    let options = GeneratorOptions {
        seed: args.seed,
        bad_share: args.bad_share,
        ..GeneratorOptions::default()
    };
    let sent = generate(&pipeline, args.events, args.rate, options)?;
    weir::outln!("sent {sent}");
    Ok(ExitCode::SUCCESS)
}

pub fn run_lake(command: LakeCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let open = |pipeline: PipelineArgs| -> anyhow::Result<(weir::pipeline::Pipeline, Lake)> {
        let p = pipeline.load()?;
        let lake = Lake::open(&p.config.lake, &p.config.name)?;
        Ok((p, lake))
    };
    let kind = |dead: bool| {
        if dead {
            TableKind::DeadLetters
        } else {
            TableKind::Data
        }
    };
    match command {
        LakeCommand::Files {
            pipeline,
            date,
            dead_letters,
            json,
        } => {
            let (p, mut lake) = open(pipeline)?;
            let table = lake.table_mut(kind(dead_letters));
            rt.block_on(table.refresh())?;
            let files = rt.block_on(table.files(&p.config.lake.partition_by, date.as_deref()))?;
            for f in files {
                if json {
                    weir::outln!("{}", serde_json::to_string(&f)?);
                } else {
                    weir::outln!("{}\t{} rows\t{} bytes", f.path, f.rows, f.bytes);
                }
            }
        }
        LakeCommand::History {
            pipeline,
            limit,
            dead_letters,
            json,
        } => {
            let (_, mut lake) = open(pipeline)?;
            let table = lake.table_mut(kind(dead_letters));
            rt.block_on(table.refresh())?;
            for entry in rt.block_on(table.history(Some(limit)))? {
                if json {
                    weir::outln!("{}", serde_json::to_string(&entry)?);
                } else {
                    let when = entry
                        .timestamp
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    let digest = entry
                        .info
                        .get("weir.plugin_digest")
                        .and_then(|v| v.as_str())
                        .map(|d| d.get(..12).unwrap_or(d).to_string())
                        .unwrap_or_default();
                    let kept = entry
                        .info
                        .get("weir.kept")
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    weir::outln!(
                        "v{}\t{when}\t{}\t{digest}\t{kept}",
                        entry.version.unwrap_or(-1),
                        entry.operation.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        LakeCommand::Optimize { pipeline, date } => {
            let (_, mut lake) = open(pipeline)?;
            let report = rt.block_on(lake.optimize(date.as_deref()))?;
            weir::outln!(
                "{}: {} small files compacted into {} in {} partition(s); table version {}",
                report.table,
                report.files_removed,
                report.files_added,
                report.partitions_optimized,
                report.version.map_or("-".into(), |v| v.to_string())
            );
        }
        LakeCommand::Vacuum {
            pipeline,
            retention_hours,
            dry_run,
        } => {
            let (p, mut lake) = open(pipeline)?;
            let hours = retention_hours.unwrap_or(p.config.lake.vacuum_retention_hours);
            let reports = rt.block_on(lake.vacuum(Duration::from_secs(hours * 3600), dry_run))?;
            for report in reports {
                for path in &report.removed {
                    weir::outln!(
                        "{} {path}",
                        if dry_run { "would remove" } else { "removed" }
                    );
                }
                weir::outln!(
                    "{}: {} files {}",
                    report.table,
                    report.removed.len(),
                    if dry_run { "to remove" } else { "removed" }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// How many synthetic events (produced to the embedded broker).
    #[arg(long, default_value_t = 500_000)]
    events: u64,
    /// Read an existing topic of this Kafka-protocol broker instead.
    #[arg(
        long,
        value_name = "ADDR",
        requires = "topic",
        conflicts_with = "source"
    )]
    brokers: Option<String>,
    /// The topic to read (with `--brokers`), from the beginning.
    #[arg(long, value_name = "T", requires = "brokers")]
    topic: Option<String>,
    /// Read a file of JSON lines instead: the same workers, no Kafka.
    #[arg(long, value_name = "FILE")]
    source: Option<PathBuf>,
    /// Write into this (new) lake instead of a temporary directory: a
    /// directory or an S3 prefix (with the pipeline's `lake.s3` settings).
    #[arg(long, value_name = "URL")]
    lake: Option<String>,
    /// Workers of the end-to-end phase (default: `ingest.workers`, one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run_bench_ingest(args: BenchIngestArgs) -> anyhow::Result<ExitCode> {
    use weir::tools::bench_ingest::BenchSource;
    let pipeline = args.pipeline.load()?;
    let lake = tempfile::tempdir().context("temporary lake directory")?;
    let source = match (args.source, args.brokers, args.topic) {
        (Some(file), _, _) => BenchSource::File(file),
        (None, Some(brokers), Some(topic)) => BenchSource::Broker { brokers, topic },
        _ => BenchSource::Generated(args.events),
    };
    let lake_url = args
        .lake
        .unwrap_or_else(|| lake.path().display().to_string());
    let r = weir::tools::bench_ingest::bench_ingest(&pipeline, &source, args.workers, &lake_url)?;
    if args.json {
        weir::outln!("{}", serde_json::to_string(&r)?);
    } else {
        weir::outln!(
            "input          {}: {} events, {:.1} MB of JSON, weir's baseline RSS {:.0} MiB",
            r.source,
            r.end_to_end.events,
            r.input_bytes as f64 / 1e6,
            r.baseline_rss_mib
        );
        weir::outln!(
            "workers        {} (end to end; max_buffer_bytes {:.0} MiB)",
            r.workers,
            r.max_buffer_mib
        );
        let phases = [
            Some(("decode only", &r.decode_only)),
            r.decode_only_serde_json
                .as_ref()
                .map(|f| ("  serde_json", f)),
            Some(("end to end", &r.end_to_end)),
        ];
        for (name, f) in phases.into_iter().flatten() {
            weir::outln!(
                "{name:<14} {:>10.0} events/s  {:>10.0} events/CPU-s  ({} events in {:.2} s, {:.2} CPU-s, peak RSS {:.0} MiB)",
                f.events_per_sec,
                f.events_per_cpu_sec,
                f.events,
                f.seconds,
                f.cpu_seconds,
                f.peak_rss_mib
            );
        }
        if let (Some(flush), Some(rate)) = (
            r.end_to_end.final_flush_seconds,
            r.end_to_end.streaming_events_per_sec(),
        ) {
            weir::outln!(
                "  streaming    {rate:>10.0} events/s  (end to end less the final flush: {flush:.2} s of uploads and commit after the last message)"
            );
        }
        weir::outln!(
            "ratio          end to end = {:.2} x decode only",
            r.end_to_end.events_per_sec / r.decode_only.events_per_sec.max(1e-9)
        );
    }
    Ok(ExitCode::SUCCESS)
}
