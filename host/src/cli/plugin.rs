//! `weir plugin check | bench`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use weir::pipeline::{DeclaredSchema, FieldSpec, Pipeline};
use weir::plugin::check::{BenchOptions, CheckOptions, Sample, bench, check};
use weir::plugin::diff::diff;
use weir::plugin::{Limits, PluginEngine};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load a plugin, run `init` and sample events, report verdicts and idempotence.
    Check(CheckArgs),
    /// Events per second through a plugin, with size and start-up time.
    Bench(BenchArgs),
    /// Run two plugins over the same events; report every event they treat differently.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first plugin.
    left: PathBuf,
    /// The second plugin.
    right: PathBuf,
    /// Events, one JSON object per line.
    #[arg(long)]
    input: PathBuf,
    /// Configuration of the first plugin; repeatable.
    #[arg(long = "config-left", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config_left: Vec<(String, String)>,
    /// Configuration of the second plugin; repeatable.
    #[arg(long = "config-right", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config_right: Vec<(String, String)>,
    /// Input schema file (`[[schema.fields]]`); default: web-vitals.
    #[arg(long)]
    schema: Option<PathBuf>,
    /// Differences shown in full (the rest are counted).
    #[arg(long, default_value_t = 5)]
    examples: usize,
    /// Events per call.
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct PluginArgs {
    /// The plugin component (`.wasm`); default: the pipeline's plugin.
    plugin: Option<PathBuf>,
    /// Take the input schema, plugin configuration and limits from this
    /// pipeline file, and check that the plugin's output has the columns
    /// the pipeline needs (its partition column, the aggregation's).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// A plugin configuration entry; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config: Vec<(String, String)>,
    /// Input schema: a TOML file with `[[schema.fields]]` (a pipeline file
    /// works). Default: the web-vitals schema.
    #[arg(long)]
    schema: Option<PathBuf>,
    /// CPU deadline per call, in milliseconds.
    #[arg(long)]
    call_timeout_ms: Option<u64>,
    /// Memory limit per instance, in MiB.
    #[arg(long)]
    memory_mib: Option<usize>,
    /// Events per `process` call.
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    plugin: PluginArgs,
    /// Sample events, one JSON object per line.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Fail when the plugin rejects more than this share of the decoded
    /// events (0..1).
    #[arg(long, default_value_t = CheckOptions::default().max_rejected_share)]
    max_rejected_share: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    plugin: PluginArgs,
    /// Events, one JSON object per line.
    #[arg(long)]
    input: PathBuf,
    /// How many times to run over the input.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

pub fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Check(args) => run_check(args),
        PluginCommand::Bench(args) => run_bench(args),
        PluginCommand::Diff(args) => run_diff(args),
    }
}

/// What a plugin runs with: from the flags, or from `--pipeline` (flags
/// still win).
struct Setup {
    plugin: PathBuf,
    engine: std::sync::Arc<PluginEngine>,
    schema: DeclaredSchema,
    config: Vec<(String, String)>,
    pipeline: Option<Pipeline>,
}

impl PluginArgs {
    fn setup(&self) -> anyhow::Result<Setup> {
        let pipeline = match &self.pipeline {
            Some(path) => Some(Pipeline::load(path, &[])?),
            None => None,
        };
        let mut limits = pipeline
            .as_ref()
            .map_or_else(Limits::default, |p| p.config.plugin.limits.clone());
        if let Some(ms) = self.call_timeout_ms {
            limits.call_timeout_ms = ms;
        }
        if let Some(mib) = self.memory_mib {
            limits.memory_mib = mib;
        }
        let plugin = match (&self.plugin, &pipeline) {
            (Some(path), _) => path.clone(),
            (None, Some(p)) => {
                let location = p.plugin_location();
                anyhow::ensure!(
                    !location.contains("://"),
                    "the pipeline's plugin is at {location}: give a local copy as the first argument"
                );
                PathBuf::from(location)
            }
            (None, None) => anyhow::bail!("expected a plugin file (or --pipeline P)"),
        };
        let schema = match (&self.schema, &pipeline) {
            (Some(path), _) => read_schema(path)?,
            (None, Some(p)) => p.schema.clone(),
            (None, None) => DeclaredSchema::web_vitals(),
        };
        let mut config = pipeline
            .as_ref()
            .map(|p| p.plugin_config())
            .unwrap_or_default();
        for (key, value) in &self.config {
            config.retain(|(k, _)| k != key);
            config.push((key.clone(), value.clone()));
        }
        Ok(Setup {
            plugin,
            engine: PluginEngine::new(limits)?,
            schema,
            config,
            pipeline,
        })
    }
}

/// The `[[schema.fields]]` of a TOML file.
fn read_schema(path: &Path) -> anyhow::Result<DeclaredSchema> {
    #[derive(serde::Deserialize)]
    struct File {
        schema: Section,
    }
    #[derive(serde::Deserialize)]
    struct Section {
        fields: Vec<FieldSpec>,
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read schema file {}", path.display()))?;
    let file: File = toml::from_str(&text)
        .with_context(|| format!("{}: expected [[schema.fields]]", path.display()))?;
    DeclaredSchema::new(file.schema.fields).with_context(|| format!("{}: schema", path.display()))
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read input file {}", path.display()))
}

fn run_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let setup = args.plugin.setup()?;
    let plugin = setup.engine.load_file(&setup.plugin)?;
    let text = match &args.input {
        Some(path) => read_input(path)?,
        None => String::new(),
    };
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.max_rejected_share),
        "--max-rejected-share: expected a share between 0 and 1, got {}",
        args.max_rejected_share
    );
    let sample = Sample::decode(&text, &setup.schema, args.plugin.batch_size.max(1));
    let options = CheckOptions {
        max_rejected_share: args.max_rejected_share,
    };
    let pipeline = setup.pipeline.as_ref();
    let requirements =
        |output: &DeclaredSchema| pipeline.map_or_else(Vec::new, |p| p.output_problems(output));
    let report = check(
        &setup.engine,
        &plugin,
        &setup.schema,
        &setup.config,
        &sample,
        options,
        &requirements,
    )?;
    if args.json {
        weir::outln!("{}", serde_json::to_string(&report)?);
    } else {
        weir::outln!("plugin     {} (sha256 {})", report.plugin, report.digest);
        weir::outln!("contract   {}", report.accepted_versions.join(", "));
        weir::outln!("output     {}", report.output_schema.join(", "));
        weir::outln!("kept       {}", report.kept);
        weir::outln!("dropped    {}", report.dropped);
        weir::outln!("rejected   {}", report.rejected);
        for (reason, count) in &report.reasons {
            weir::outln!("  {count:>8}  {reason}");
        }
        weir::outln!(
            "idempotent {}",
            if report.idempotent { "yes" } else { "NO" }
        );
        if report.passed {
            weir::outln!("passed");
        } else {
            weir::outln!("FAILED");
            for f in &report.failures {
                let line = f.line.map_or_else(String::new, |l| format!(" (line {l})"));
                let events = if f.events > 0 {
                    format!("{} events", f.events)
                } else {
                    String::new()
                };
                weir::outln!("  {:<16} {events:>14}  e.g.{line}: {}", f.class, f.example);
            }
        }
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let setup = args.plugin.setup()?;
    let path = &setup.plugin;
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read plugin {}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let text = read_input(&args.input)?;
    let options = BenchOptions {
        batch_size: args.plugin.batch_size.max(1),
        repeat: args.repeat,
    };
    let report = bench(
        &setup.engine,
        &name,
        &bytes,
        &setup.schema,
        &setup.config,
        &text,
        options,
    )?;
    if args.json {
        weir::outln!("{}", serde_json::to_string(&report)?);
    } else {
        weir::outln!(
            "plugin        {} ({} bytes)",
            report.plugin,
            report.component_bytes
        );
        weir::outln!("compile       {:.1} ms (uncached)", report.compile_ms);
        weir::outln!(
            "start-up      {:.2} ms (instantiate + init)",
            report.startup_ms
        );
        weir::outln!(
            "throughput    {:.0} events/s over {} events",
            report.events_per_sec,
            report.events
        );
        weir::outln!(
            "decode only   {:.0} events/s ({:.1} MB/s)",
            report.decode_events_per_sec,
            report.decode_mb_per_sec
        );
    }
    if report.failed_calls > 0 {
        weir::errln!(
            "error: {} calls failed, so the throughput means nothing (e.g. {}); run `weir plugin check`",
            report.failed_calls,
            report.failure_example.as_deref().unwrap_or("?")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let engine = PluginEngine::new(Limits::default())?;
    let left = engine.load_file(&args.left)?;
    let right = engine.load_file(&args.right)?;
    let schema = match &args.schema {
        None => DeclaredSchema::web_vitals(),
        Some(path) => read_schema(path)?,
    };
    let text = read_input(&args.input)?;
    let report = diff(
        &engine,
        (&left, &args.config_left),
        (&right, &args.config_right),
        &schema,
        &text,
        args.batch_size.max(1),
        args.examples,
    )?;
    if args.json {
        weir::outln!("{}", serde_json::to_string(&report)?);
    } else {
        if let Some(schemas) = &report.schema_difference {
            weir::outln!("output schemas differ:\n{schemas}");
        }
        for d in &report.examples {
            weir::outln!(
                "line {}: {}\n  {}: {}\n  {}: {}",
                d.line,
                d.input,
                left.name,
                d.left,
                right.name,
                d.right
            );
        }
        let kinds: Vec<String> = report
            .kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        weir::outln!(
            "{} events compared ({} undecodable lines skipped): {}",
            report.events,
            report.undecodable,
            if report.differing == 0 {
                "no differences".to_string()
            } else {
                format!("{} differ ({})", report.differing, kinds.join(", "))
            }
        );
    }
    Ok(
        if report.differing == 0 && report.schema_difference.is_none() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}
